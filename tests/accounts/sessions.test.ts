// The user's sessions, their lifetimes and the refresh retry grace, over HTTP. The clock is
// moved by updating timestamps in SQL, never by sleeping.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Redis from "ioredis";
import { testStack } from "../support/stack";
import { adminSql, call, newUser, signIn, signUp, type Sql, type TestUser } from "./support";

let sql: Sql;
beforeAll(() => {
  sql = adminSql();
});
afterAll(async () => {
  await sql.end();
});

const sidOf = (accessToken: string): string => JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString()).sid;

async function signInWith(user: TestUser, userAgent: string) {
  const result = await call("/rpc/sign_in", { body: { email: user.email, password: user.password }, headers: { "User-Agent": userAgent } });
  expect(result.status).toBe(200);
  return result.json as { access_token: string; refresh_token: string };
}

const refresh = (refresh_token: string) => call("/rpc/issue_token", { body: { refresh_token } });

describe("my_sessions, revoke_session, revoke_other_sessions", () => {
  test("lists each active session with its client, user agent and which one is the caller's", async () => {
    const user = newUser();
    await signUp(user);
    const laptop = await signInWith(user, "Laptop/1.0");
    const phone = await signInWith(user, "Phone/2.0");
    const listed = await call("/rpc/my_sessions", { token: laptop.access_token });
    expect(listed.status).toBe(200);
    expect(listed.json).toHaveLength(2);
    const byAgent = Object.fromEntries(listed.json.map((s: { user_agent: string }) => [s.user_agent, s]));
    expect(byAgent["Laptop/1.0"]).toMatchObject({ id: sidOf(laptop.access_token), current: true, client: "127.0.0.1" });
    expect(byAgent["Phone/2.0"]).toMatchObject({ id: sidOf(phone.access_token), current: false });
    for (const s of listed.json) expect(Object.keys(s).sort()).toEqual(["client", "created_at", "current", "expires_at", "id", "last_refreshed_at", "user_agent"]);
  });

  test("revoke_session ends one's own session (its access tokens refused within 1 s); another user's id is a 404 that changes nothing", async () => {
    const user = newUser();
    await signUp(user);
    const a = await signIn(user);
    const b = await signIn(user);
    const stranger = newUser();
    await signUp(stranger);
    const theirs = await signIn(stranger);

    const foreign = await call("/rpc/revoke_session", { token: a.access_token, body: { session_id: sidOf(theirs.access_token) } });
    expect(foreign.status).toBe(404);
    expect(Object.keys(foreign.json).sort()).toEqual(["code", "details", "hint", "message"]);
    expect((await call("/rpc/me", { token: theirs.access_token })).status).toBe(200);
    for (const session_id of ["not-a-uuid", null, "x".repeat(5000)]) {
      const bad = await call("/rpc/revoke_session", { token: a.access_token, body: { session_id } });
      expect(bad.status).toBeGreaterThanOrEqual(400);
      expect(bad.status).toBeLessThan(500);
    }

    const revoked = await call("/rpc/revoke_session", { token: a.access_token, body: { session_id: sidOf(b.access_token) } });
    expect(revoked.status).toBe(200);
    const began = Date.now();
    while ((await call("/rpc/me", { token: b.access_token })).status !== 401) {
      expect(Date.now() - began).toBeLessThan(1000);
      await Bun.sleep(20);
    }
    expect((await refresh(b.refresh_token)).status).toBe(401);
    expect((await call("/rpc/me", { token: a.access_token })).status).toBe(200);
  });

  test("revoke_other_sessions keeps the caller's", async () => {
    const user = newUser();
    await signUp(user);
    const keep = await signIn(user);
    const others = [await signIn(user), await signIn(user)];
    const result = await call("/rpc/revoke_other_sessions", { token: keep.access_token, body: {} });
    expect(result.status).toBe(200);
    expect([...result.json.revoked_sessions].sort()).toEqual(others.map((o) => sidOf(o.access_token)).sort());
    const listed = await call("/rpc/my_sessions", { token: keep.access_token });
    expect(listed.json.map((s: { id: string }) => s.id)).toEqual([sidOf(keep.access_token)]);
  });
});

describe("lifetimes", () => {
  test("a session not refreshed for SESSION_INACTIVITY_DAYS (14) ends; refreshing keeps it going", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const sid = sidOf(tokens.access_token);
    await sql`update auth.sessions set created_at = created_at - interval '13 days', last_refreshed_at = last_refreshed_at - interval '13 days' where id = ${sid}`;
    const next = await refresh(tokens.refresh_token);
    expect(next.status).toBe(200);
    await sql`update auth.sessions set last_refreshed_at = last_refreshed_at - interval '14 days 1 second' where id = ${sid}`;
    const expired = await refresh(next.json.refresh_token);
    expect(expired.status).toBe(401);
    expect(expired.json.message).toBe("session expired");
  });

  test("SESSION_MAX_DAYS (60) is absolute: rotation does not slide it", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const sid = sidOf(tokens.access_token);
    await sql`update auth.sessions set created_at = created_at - interval '59 days 23 hours' where id = ${sid}`;
    const next = await refresh(tokens.refresh_token);
    expect(next.status).toBe(200);
    // the refresh token cannot outlive the session's absolute end
    expect(Date.parse(next.json.refresh_expires_at) - Date.now()).toBeLessThan(3_600_000 + 5000);
    await sql`update auth.sessions set created_at = created_at - interval '1 hour' where id = ${sid}`;
    const expired = await refresh(next.json.refresh_token);
    expect(expired.status).toBe(401);
    const listed = await call("/rpc/my_sessions", { token: next.json.access_token });
    expect(listed.json).toEqual([]);
  });

  test("an access token of a session past its lifetime is refused, though nothing revoked it", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const sid = sidOf(tokens.access_token);
    expect((await call("/rpc/me", { token: tokens.access_token })).status).toBe(200);
    await sql`update auth.sessions set last_refreshed_at = last_refreshed_at - interval '15 days' where id = ${sid}`;
    // What the gateway remembers of the session (the local answer lasts 500 ms; Redis's is dropped
    // here instead of waiting for SESSION_REDIS_TTL_SECONDS): the next check asks the database.
    const redis = new Redis(testStack().redisUrl);
    await redis.del(`sess:${sid}`);
    redis.disconnect();
    await Bun.sleep(600);
    const refused = await call("/rpc/me", { token: tokens.access_token });
    expect(refused.status).toBe(401);
    expect(refused.json.code).toBe("AA301");
  });

  test("the settings apply without a restart", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    await sql`update auth.sessions set last_refreshed_at = last_refreshed_at - interval '3 days' where id = ${sidOf(tokens.access_token)}`;
    await sql`insert into auth.settings (name, value) values ('session_inactivity_days', '2') on conflict (name) do update set value = '2'`;
    try {
      expect((await refresh(tokens.refresh_token)).status).toBe(401);
    } finally {
      await sql`delete from auth.settings where name = 'session_inactivity_days'`;
    }
    expect((await refresh(tokens.refresh_token)).status).toBe(200);
  });
});

describe("refresh retry grace (REFRESH_REUSE_GRACE_SECONDS, 10)", () => {
  test("two tabs refreshing at once both get the same successor; the session stays", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const [one, two] = await Promise.all([refresh(tokens.refresh_token), refresh(tokens.refresh_token)]);
    expect([one.status, two.status]).toEqual([200, 200]);
    expect(one.json.refresh_token).toBe(two.json.refresh_token);
    expect((await refresh(one.json.refresh_token)).status).toBe(200);
    // the first token again, still within the grace: followed down to the live successor
    const late = await refresh(tokens.refresh_token);
    expect(late.status).toBe(200);
    expect((await call("/rpc/me", { token: late.json.access_token })).status).toBe(200);
  });

  test("after the grace, reuse revokes the whole family", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const next = await refresh(tokens.refresh_token);
    expect(next.status).toBe(200);
    await sql`update auth.refresh_tokens set retired_at = retired_at - interval '11 seconds' where token_hash = auth.token_digest(${tokens.refresh_token})`;
    const reuse = await refresh(tokens.refresh_token);
    expect(reuse.status).toBe(401);
    expect(reuse.json.message).toBe("refresh token reuse detected; the session was revoked");
    expect((await refresh(next.json.refresh_token)).status).toBe(401);
    expect((await call("/rpc/me", { token: next.json.access_token })).status).toBe(401);
  });

  test("successors are stored as digests only", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const next = await refresh(tokens.refresh_token);
    const found = await sql`select count(*)::int as n from auth.refresh_tokens where token_hash = auth.token_digest(${next.json.refresh_token})`;
    expect(found[0]!.n).toBe(1);
    const plain = await sql`select count(*)::int as n from auth.refresh_tokens t where position(${next.json.refresh_token} in t::text) > 0`;
    expect(plain[0]!.n).toBe(0);
  });
});

describe("my_sessions is never cached", () => {
  test("a revocation shows at once in the next GET", async () => {
    const user = newUser();
    await signUp(user);
    const a = await signIn(user);
    const b = await signIn(user);
    const before = await call("/rpc/my_sessions", { token: a.access_token });
    expect(before.json).toHaveLength(2);
    expect(before.headers.get("x-cache")).toBeNull();
    expect((await call("/rpc/revoke_session", { token: a.access_token, body: { session_id: sidOf(b.access_token) } })).status).toBe(200);
    expect((await call("/rpc/my_sessions", { token: a.access_token })).json).toHaveLength(1);
  });
});
