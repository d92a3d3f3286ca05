// Password reset over HTTP with the real mail path (outbox → mailer → SMTP → MailDev).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { adminSql, call, linkToken, mailsTo, newUser, signIn, signUp, STRONG, waitForMails, type Sql } from "./support";

let sql: Sql;
// Every request here comes from 127.0.0.1: the per-client limit is lifted but for its own test.
const LIFT_CLIENT_LIMIT = `insert into auth.settings (name, value) values ('reset_per_client_max', '100000')
                           on conflict (name) do update set value = excluded.value`;
beforeAll(async () => {
  sql = adminSql();
  await sql.unsafe(LIFT_CLIENT_LIMIT);
});
afterAll(async () => {
  await sql`delete from auth.settings where name = 'reset_per_client_max'`;
  await sql.end();
});

async function requestReset(email: string) {
  return call("/rpc/request_password_reset", { body: { email } });
}

describe("password reset", () => {
  test("request → mail → link token → the new password works, the old one does not, every session is gone", async () => {
    const user = newUser();
    await signUp(user);
    const first = await signIn(user);
    const second = await signIn(user);

    const asked = await requestReset(user.email.toUpperCase());
    expect(asked.status).toBe(200);
    const [mail] = await waitForMails(user.email, /Reset your password/);
    expect(mail!.headers["message-id"]).toMatch(/^<[0-9a-f]{32}@autoaudit\.test>$/);
    const token = linkToken(mail!, "/reset-password");
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/); // 256 bits

    const newPassword = STRONG();
    const reset = await call("/rpc/reset_password", { body: { token, new_password: newPassword } });
    expect(reset.status).toBe(200);
    expect([...reset.json.revoked_sessions].sort()).toEqual([first, second].map((t) => decodeSid(t.access_token)).sort());

    expect((await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).status).toBe(401);
    expect((await call("/rpc/sign_in", { body: { email: user.email, password: newPassword } })).status).toBe(200);
    // the old sessions: refresh tokens refused, access tokens refused within a second
    expect((await call("/rpc/issue_token", { body: { refresh_token: first.refresh_token } })).status).toBe(401);
    await Bun.sleep(1000);
    expect((await call("/rpc/me", { token: second.access_token })).status).toBe(401);

    // single use
    const again = await call("/rpc/reset_password", { body: { token, new_password: STRONG() } });
    expect(again.status).toBe(400);
    expect(again.json).toEqual({ code: "22023", message: "invalid or expired token", details: null, hint: expect.any(String) });
    const [event] = await sql`select e.kind from auth.account_events e join auth.users u on u.id = e.user_id where u.email = ${user.email} and e.kind = 'password_reset'`;
    expect(event?.kind).toBe("password_reset");
    await waitForMails(user.email, /Your password was changed/);
    // the outbox no longer holds the token
    const rows = await sql`select status, params from auth.mail_outbox where recipient = ${user.email} and template = 'reset_password'`;
    expect(rows.map((r) => [r.status, r.params])).toEqual([["sent", {}]]);
  });

  test("an unknown address gets no mail, and the outbox keeps nothing of it", async () => {
    const unknown = newUser();
    const known = newUser();
    await signUp(known);
    expect((await requestReset(unknown.email)).status).toBe(200);
    expect((await requestReset(known.email)).status).toBe(200);
    // the known address's mail is claimed after the unknown one's (outbox order)
    await waitForMails(known.email, /Reset your password/);
    expect(await mailsTo(unknown.email)).toEqual([]);
    expect((await sql`select id from auth.mail_outbox where recipient = ${unknown.email}`).length).toBe(0);
  });

  test("an expired token is refused and nothing is written", async () => {
    const user = newUser();
    await signUp(user);
    await requestReset(user.email);
    const token = linkToken((await waitForMails(user.email, /Reset your password/))[0]!, "/reset-password");
    // the token lives 30 minutes
    const [row] = await sql`select extract(epoch from expires_at - created_at) as s from auth.one_time_tokens where token_hash = auth.token_digest(${token})`;
    expect(Number(row!.s)).toBe(1800);
    await sql`update auth.one_time_tokens set expires_at = now() - interval '1 second'
               where token_hash = auth.token_digest(${token})`;
    const before = await sql`select password_hash from auth.users where email = ${user.email}`;
    const result = await call("/rpc/reset_password", { body: { token, new_password: STRONG() } });
    expect(result.status).toBe(400);
    expect(result.json.message).toBe("invalid or expired token");
    expect(await sql`select password_hash from auth.users where email = ${user.email}`).toEqual(before);
  });

  test("a newer request retires the older link; malformed, foreign and overlong tokens are the same 400", async () => {
    const user = newUser();
    await signUp(user);
    await requestReset(user.email);
    const older = linkToken((await waitForMails(user.email, /Reset your password/))[0]!, "/reset-password");
    await requestReset(user.email);
    await waitForMails(user.email, /Reset your password/, 2);
    // a verification token is foreign to reset_password
    const verification = linkToken((await waitForMails(user.email, /Confirm your email/))[0]!, "/verify-email");
    for (const token of [older, verification, "x", "a".repeat(43), "a".repeat(5000), null, 42]) {
      const result = await call("/rpc/reset_password", { body: { token, new_password: STRONG() } });
      expect(result.status).toBe(400);
      expect(Object.keys(result.json).sort()).toEqual(["code", "details", "hint", "message"]);
    }
    expect((await sql`select count(*)::int as n from auth.account_events e join auth.users u on u.id = e.user_id where u.email = ${user.email}`)[0]!.n).toBe(0);
  });

  test("the answer is the same for existing and unknown addresses (timing measured, not asserted)", async () => {
    await sql`insert into auth.settings (name, value) values ('reset_per_address_max', '1000')
              on conflict (name) do update set value = excluded.value`;
    try {
      const known = newUser();
      await signUp(known);
      const unknown = newUser();
      const a = await requestReset(known.email);
      const b = await requestReset(unknown.email);
      expect(a.status).toBe(b.status);
      expect(a.text).toBe(b.text);
      expect([...a.headers.keys()].sort()).toEqual([...b.headers.keys()].sort());
      const time = async (email: string) => {
        const began = performance.now();
        await requestReset(email);
        return performance.now() - began;
      };
      const knownTimes: number[] = [];
      const unknownTimes: number[] = [];
      for (let i = 0; i < 20; i++) {
        knownTimes.push(await time(known.email));
        unknownTimes.push(await time(unknown.email));
      }
      const median = (xs: number[]) => xs.sort((x, y) => x - y)[xs.length >> 1]!;
      console.log(`request_password_reset median: existing ${median(knownTimes).toFixed(2)} ms, unknown ${median(unknownTimes).toFixed(2)} ms (20 each)`);
    } finally {
      await sql`delete from auth.settings where name = 'reset_per_address_max'`;
    }
  });

  test("throttled per address: the 6th request in the window is 429 for existing and unknown alike", async () => {
    const known = newUser();
    await signUp(known);
    const unknown = newUser();
    for (const email of [known.email, unknown.email]) {
      for (let i = 0; i < 5; i++) expect((await requestReset(email)).status).toBe(200);
      const refused = await requestReset(email);
      expect(refused.status).toBe(429);
      expect(refused.headers.get("retry-after")).toBe("3600");
      expect(refused.json.code).toBe("PT429");
    }
    await waitForMails(known.email, /Reset your password/, 5);
    await Bun.sleep(300);
    expect((await mailsTo(known.email)).filter((m) => /Reset/.test(m.subject)).length).toBe(5);
  });

  test("throttled per client address", async () => {
    await sql`insert into auth.settings (name, value) values ('reset_per_client_max', '2') on conflict (name) do update set value = excluded.value`;
    await sql`delete from auth.request_throttle where kind = 'reset:client'`;
    try {
      expect((await requestReset(newUser().email)).status).toBe(200);
      expect((await requestReset(newUser().email)).status).toBe(200);
      expect((await requestReset(newUser().email)).status).toBe(429);
    } finally {
      await sql.unsafe(LIFT_CLIENT_LIMIT);
      await sql`delete from auth.request_throttle where kind = 'reset:client'`;
    }
  });

  test("bad input: a missing or overlong email is a 400 and writes nothing", async () => {
    for (const email of [null, "a".repeat(250) + "@x.io"]) {
      const result = await call("/rpc/request_password_reset", { body: { email } });
      expect(result.status).toBe(400);
      expect(result.json.code).toBe("22023");
    }
  });
});

function decodeSid(accessToken: string): string {
  return JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString()).sid;
}
