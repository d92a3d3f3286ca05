// Failed sign-in accounting and throttling inside api.sign_in (migration
// 20261202000100_sign_in_protections): per (account, address) and per account, over SQL as the
// engine (as the API calls it, with the X-Forwarded-For a proxy sends) and over HTTP through the API.
import { afterAll, describe, expect, test } from "bun:test";
import { adminSql, authenticatorSql, signIn, signUp, uniqueEmail, type Answer } from "./support";
import { testStack } from "../support/stack";

const admin = adminSql();
const app = authenticatorSql(1);
afterAll(async () => {
  await app.end();
  await admin.end();
});

const PASSWORD = "correct horse battery";
const INVALID = { code: "PT401", details: null, hint: null, message: "invalid email or password" };
// The function's own answer (response.status and response.headers), so the failure is committed.
const FAILED: Answer = {
  status: 401,
  headers: { "content-range": "0-0/*", "content-type": "application/json; charset=utf-8", "proxy-status": "PostgREST; error=PT401", vary: "Accept, Prefer, Range", "www-authenticate": "Bearer" },
  body: INVALID,
};

function throttled(seconds: number): Answer {
  return {
    status: 429,
    // Answered through response.status/headers (so the refusal is recorded): a function answer, like FAILED.
    headers: { "content-range": "0-0/*", "content-type": "application/json; charset=utf-8", "proxy-status": "PostgREST; error=PT429", "retry-after": String(seconds), vary: "Accept, Prefer, Range" },
    body: { code: "PT429", message: "too many failed sign-ins", details: null, hint: `Retry after ${seconds} seconds.` },
  };
}

const rowsOf = (email: string) =>
  admin`select client, failures, blocked_until, updated_at, window_started_at from auth.sign_in_throttle where email = ${email} order by client`;

/** Ends the pair's current block, as if its delay had passed. */
const unblock = (email: string, client: string) =>
  admin`update auth.sign_in_throttle set blocked_until = now() - interval '1 second' where email = ${email} and client = ${client}`;

async function fail(email: string, client: string, times: number): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (let i = 0; i < times; i++) answers.push(await signIn(email, "wrong password", { client }));
  return answers;
}

describe("per account and address", () => {
  test("5 failures are answered 401 and recorded; then the pair is refused with 429 + Retry-After, the right password too", async () => {
    const email = uniqueEmail("pair");
    await signUp(email, PASSWORD);
    const client = "203.0.113.7";
    const answers = await fail(email, client, 5);
    expect(answers).toEqual(Array(5).fill(FAILED));
    // Recorded although the answer is a 401: the function returned instead of raising.
    const [row] = await rowsOf(email);
    expect(row).toMatchObject({ client, failures: 5 });
    expect(row!.blocked_until.getTime() - row!.updated_at.getTime()).toBe(1000);

    expect(await signIn(email, PASSWORD, { client })).toEqual(throttled(1));
    expect(await signIn(email, "wrong password", { client })).toEqual(throttled(1));
    // The refused attempts cost no failure (and no bcrypt: refused before the check).
    expect((await rowsOf(email))[0]!.failures).toBe(5);

    // Another address still signs in with the right password.
    const other = await signIn(email, PASSWORD, { client: "198.51.100.20" });
    expect(other.status).toBe(200);
    expect(other.body.user.email).toBe(email);

    // Once the delay has passed, the right password works from the blocked address again.
    await Bun.sleep(1100);
    const after = await signIn(email, PASSWORD, { client });
    expect(after.status).toBe(200);
    expect(after.body.session_id).toEqual(expect.any(String));
  });

  test("each further failure doubles the block: 1 s, 2 s, 4 s, 8 s, capped at the maximum delay", async () => {
    const email = uniqueEmail("doubling");
    await signUp(email, PASSWORD);
    const client = "203.0.113.8";
    await fail(email, client, 5);
    const blocks: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [row] = await rowsOf(email);
      blocks.push(row!.blocked_until.getTime() - row!.updated_at.getTime());
      await unblock(email, client);
      expect(await signIn(email, "wrong password", { client })).toEqual(FAILED);
    }
    const [row] = await rowsOf(email);
    blocks.push(row!.blocked_until.getTime() - row!.updated_at.getTime());
    expect(blocks).toEqual([1000, 2000, 4000, 8000, 16000]);
    expect(row!.failures).toBe(9);
    const wait = await signIn(email, PASSWORD, { client });
    expect(wait.status).toBe(429);
    expect(Number(wait.headers["retry-after"])).toBeGreaterThanOrEqual(15);
    expect(Number(wait.headers["retry-after"])).toBeLessThanOrEqual(16);

    // The cap (autoaudit.sign_in_max_delay_seconds), here lowered for one transaction.
    await unblock(email, client);
    const capped = { client, settings: { "autoaudit.sign_in_max_delay_seconds": "3" } };
    expect(await signIn(email, "wrong password", capped)).toEqual(FAILED);
    const [last] = await rowsOf(email);
    expect(last!.blocked_until.getTime() - last!.updated_at.getTime()).toBe(3000);
  });

  test("a successful sign-in resets the pair", async () => {
    const email = uniqueEmail("reset");
    await signUp(email, PASSWORD);
    const client = "203.0.113.9";
    await fail(email, client, 4);
    expect((await rowsOf(email))[0]!.failures).toBe(4);
    expect((await signIn(email, PASSWORD, { client })).status).toBe(200);
    expect(await rowsOf(email)).toHaveLength(0);
    // A full budget of free failures again.
    expect(await fail(email, client, 5)).toEqual(Array(5).fill(FAILED));
    expect((await signIn(email, PASSWORD, { client })).status).toBe(429);
  });

  test("the free failures and the window are database settings", async () => {
    const email = uniqueEmail("settings");
    await signUp(email, PASSWORD);
    const client = "203.0.113.10";
    const two = { client, settings: { "autoaudit.sign_in_free_failures": "2" } };
    expect(await signIn(email, "wrong", two)).toEqual(FAILED);
    expect(await signIn(email, "wrong", two)).toEqual(FAILED);
    expect(await signIn(email, PASSWORD, two)).toEqual(throttled(1));
    // A window that has passed starts the count again.
    await admin`update auth.sign_in_throttle set window_started_at = now() - interval '901 seconds', blocked_until = null where email = ${email}`;
    expect(await signIn(email, "wrong", two)).toEqual(FAILED);
    expect((await rowsOf(email))[0]!.failures).toBe(1);
  });

  test("an unknown account gets identical answers and is throttled identically", async () => {
    const known = uniqueEmail("known");
    await signUp(known, PASSWORD);
    const unknown = uniqueEmail("unknown");
    const client = "203.0.113.11";
    const sequence = async (email: string) => [...(await fail(email, client, 6)), await signIn(email, PASSWORD, { client })];
    const forKnown = await sequence(known);
    const forUnknown = await sequence(unknown);
    expect(forUnknown).toEqual(forKnown);
    expect(forKnown).toEqual([...Array(5).fill(FAILED), throttled(1), throttled(1)]);
    const strip = (rows: Awaited<ReturnType<typeof rowsOf>>) => rows.map((r) => ({ client: r.client, failures: r.failures }));
    expect(strip(await rowsOf(unknown))).toEqual(strip(await rowsOf(known)));
    expect(await admin`select 1 from auth.users where email = ${unknown}`).toHaveLength(0);
  });

  test("an address normalize_email refuses is answered and throttled like an unknown account", async () => {
    const email = uniqueEmail("lookalike");
    await signUp(email, PASSWORD);
    const lookalike = `${email}\u00a0`;
    const client = "203.0.113.12";
    const answers = [...(await fail(lookalike, client, 5)), await signIn(lookalike, PASSWORD, { client })];
    expect(answers).toEqual([...Array(5).fill(FAILED), throttled(1)]);
    // Counted under its own key, not against the real account.
    expect(await rowsOf(email)).toHaveLength(0);
    for (const [e, p] of [[null, PASSWORD], [email, null], [email, "x".repeat(73)], ["a".repeat(300), PASSWORD]] as const) {
      expect(await signIn(e, p, { client: "203.0.113.13" })).toEqual(FAILED);
    }
  });

  test("without X-Forwarded-For the client is ''; the header's last entry otherwise, at most 64 characters", async () => {
    const email = uniqueEmail("client");
    await signIn(email, "wrong");
    await signIn(email, "wrong", { client: "10.0.0.1, 192.0.2.1 , 192.0.2.99 " });
    await signIn(email, "wrong", { client: `1.1.1.1,${"x".repeat(100)}` });
    expect((await rowsOf(email)).map((r) => r.client).sort()).toEqual(["", "192.0.2.99", "x".repeat(64)].sort());
  });

  test("12 parallel guesses from one address on one account: only the 5 free ones reach bcrypt", async () => {
    const email = uniqueEmail("parallel");
    await signUp(email, PASSWORD);
    const client = "203.0.113.14";
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => signIn(email, `wrong-${i}`, { client })));
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
    expect((await rowsOf(email))[0]!.failures).toBe(5);
  });
});

describe("per account", () => {
  test("100 failures from 20 addresses in the window refuse every address, the owner's right password too", async () => {
    const email = uniqueEmail("ceiling");
    await signUp(email, PASSWORD);
    const clients = Array.from({ length: 20 }, (_, i) => `198.51.100.${100 + i}`);
    const answers = (await Promise.all(clients.map((client) => fail(email, client, 5)))).flat();
    expect(answers).toEqual(Array(100).fill(FAILED));
    const owner = await signIn(email, PASSWORD, { client: "192.0.2.200" });
    expect(owner.status).toBe(429);
    expect(owner.body).toMatchObject({ code: "PT429", message: "too many failed sign-ins" });
    // Until the window (900 s from the latest address's first failure) ends.
    const retryAfter = Number(owner.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThan(880);
    expect(retryAfter).toBeLessThanOrEqual(900);
    expect(owner.body.hint).toBe(`Retry after ${retryAfter} seconds.`);
    // Nothing was recorded for the refused attempt.
    expect((await rowsOf(email)).find((r) => r.client === "192.0.2.200")).toBeUndefined();
  });

  test("the ceiling is a database setting; a success on one address leaves the others' failures counting", async () => {
    const email = uniqueEmail("ceiling-setting");
    await signUp(email, PASSWORD);
    const low = (client: string) => ({ client, settings: { "autoaudit.sign_in_account_ceiling": "8" } });
    for (const client of ["192.0.2.1", "192.0.2.2"]) {
      for (let i = 0; i < 4; i++) expect(await signIn(email, "wrong", low(client))).toEqual(FAILED);
    }
    expect((await signIn(email, PASSWORD, low("192.0.2.3"))).status).toBe(429);
    // The default ceiling (100) in every other transaction.
    expect((await signIn(email, PASSWORD, { client: "192.0.2.1" })).status).toBe(200);
    expect((await rowsOf(email)).map((r) => r.client)).toEqual(["192.0.2.2"]);
    expect(await signIn(email, "wrong", low("192.0.2.2"))).toEqual(FAILED);
    expect(await signIn(email, "wrong", low("192.0.2.4"))).toEqual(FAILED);
    expect(await signIn(email, "wrong", low("192.0.2.4"))).toEqual(FAILED);
    expect(await signIn(email, "wrong", low("192.0.2.4"))).toEqual(FAILED);
    expect((await signIn(email, PASSWORD, low("192.0.2.5"))).status).toBe(429);
  });
});

describe("the table", () => {
  test("rows idle for a day are pruned a few at a time by sign-ins", async () => {
    const tag = crypto.randomUUID();
    for (let i = 0; i < 5; i++) {
      await admin`insert into auth.sign_in_throttle (email, client, failures, window_started_at, updated_at)
                  values (${`old-${i}-${tag}@example.com`}, 'x', 3, now() - interval '2 days', now() - interval '2 days')`;
    }
    const old = async () => Number((await admin`select count(*) as n from auth.sign_in_throttle where updated_at < now() - interval '1 day'`)[0]!.n);
    expect(await old()).toBe(5);
    await signIn(uniqueEmail("pruner"), "wrong");
    expect(await old()).toBe(2);
    await signIn(uniqueEmail("pruner"), "wrong");
    expect(await old()).toBe(0);
  });

  test("belongs to auth_admin; anon, authenticated and the authenticator cannot touch it", async () => {
    const [table] = await admin`select pg_get_userbyid(relowner) as owner, relacl::text as acl from pg_class where oid = 'auth.sign_in_throttle'::regclass`;
    expect(table!.owner).toBe("auth_admin");
    for (const role of ["anon", "authenticated", "authenticator"]) {
      const [p] = await admin`select has_table_privilege(${role}, 'auth.sign_in_throttle', 'select, insert, update, delete') as any`;
      expect(p!.any).toBe(false);
    }
    expect(app`select * from auth.sign_in_throttle`).rejects.toMatchObject({ code: "42501" });
  });
});

describe("over HTTP through the API", () => {
  const base = () => testStack().apiUrl;
  const post = async (body: unknown) => {
    const res = await fetch(`${base()}/rpc/sign_in`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.status, headers: res.headers, text: await res.text() };
  };
  const signUpHttp = async (email: string) => {
    const res = await fetch(`${base()}/rpc/sign_up`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password: PASSWORD, first_name: "Ada", last_name: "Lovelace" }),
    });
    expect(res.status).toBe(200);
  };

  test("a failure is still a plain 401 PT401; after 5 the right password gets 429 with Retry-After", async () => {
    // All requests come from one loopback address (the test API trusts no X-Forwarded-For).
    const email = uniqueEmail("http");
    await signUpHttp(email);
    for (let i = 0; i < 5; i++) {
      const r = await post({ email, password: `wrong-${i}` });
      expect(r.status).toBe(401);
      expect(r.text).toBe('{"code":"PT401","details":null,"hint":null,"message":"invalid email or password"}');
      expect(r.headers.get("www-authenticate")).toBe("Bearer");
      expect(r.headers.get("content-type")).toBe("application/json; charset=utf-8");
    }
    const limited = await post({ email, password: PASSWORD });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("1");
    expect(JSON.parse(limited.text)).toEqual({ code: "PT429", details: null, hint: "Retry after 1 seconds.", message: "too many failed sign-ins" });
    await Bun.sleep(1100);
    const ok = await post({ email, password: PASSWORD });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text)).toMatchObject({ token_type: "bearer", user: { email } });
  });

  test("an unknown account gets the same answers, byte for byte", async () => {
    const known = uniqueEmail("http-known");
    await signUpHttp(known);
    const unknown = uniqueEmail("http-unknown");
    const run = async (email: string) => {
      const out = [];
      for (let i = 0; i < 6; i++) {
        const r = await post({ email, password: "wrong-password" });
        out.push({ status: r.status, text: r.text, retryAfter: r.headers.get("retry-after"), www: r.headers.get("www-authenticate") });
      }
      return out;
    };
    const a = await run(known);
    const b = await run(unknown);
    expect(b).toEqual(a);
    expect(a.map((r) => r.status)).toEqual([401, 401, 401, 401, 401, 429]);
  });
});
