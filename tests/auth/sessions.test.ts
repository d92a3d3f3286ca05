import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { adminSql, call, issueToken, signIn, signUp, tokenOf, tokenWithClaims, uniqueEmail, type SignedIn } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

const INVALID_CREDENTIALS = { code: "PT401", details: null, hint: null, message: "invalid email or password" };
const INVALID_REFRESH = { code: "PT401", details: null, hint: "Sign in again.", message: "invalid refresh token" };
const SIGN_IN_REQUIRED = { code: "PT401", details: null, hint: null, message: "sign in required" };

const validate = async (token: string) => (await call("validate_token", { refresh_token: token })).body;
/** A session opened by api.sign_in, which must succeed. */
const session = async (email: string): Promise<SignedIn> => {
  const answer = await signIn(email);
  expect(answer.status).toBe(200);
  return answer.body;
};
const sessionOf = async (id: string) => (await sql`select * from auth.sessions where id = ${id}`)[0]!;

describe("sign_in", () => {
  const email = uniqueEmail("signin");
  beforeAll(() => signUp(email));

  test("opens a session with a fresh refresh token and records the login", async () => {
    const result = await signIn(`  ${email.toUpperCase()}`);
    expect(result.status).toBe(200);
    const s = result.body as SignedIn;
    expect(s.user.email).toBe(email);
    expect(s.refresh_token).toMatch(/^[A-Za-z0-9_-]{43}$/); // 256 bits, base64url
    // the inactivity timeout (14 days by default) comes before the absolute lifetime (60 days)
    const expiresInDays = (Date.parse(s.refresh_expires_at) - Date.now()) / 86_400_000;
    expect(expiresInDays).toBeGreaterThan(13.9);
    expect(expiresInDays).toBeLessThanOrEqual(14);
    const [user] = await sql`select last_login_at from auth.users where email = ${email}`;
    expect(user!.last_login_at).not.toBeNull();
    expect((await sessionOf(s.session_id)).revoked_at).toBeNull();
  });

  test("a wrong password and an unknown email give the same error", async () => {
    const wrong = await signIn(email, "not the password");
    const unknown = await signIn(uniqueEmail("nobody"), "not the password");
    // Answered (and committed) with response.status 401, so the failure is counted.
    expect({ status: wrong.status, body: wrong.body, www: wrong.headers["www-authenticate"] }).toEqual({ status: 401, body: INVALID_CREDENTIALS, www: "Bearer" });
    expect(unknown).toEqual(wrong);
  });

  test("an unknown email still pays for a bcrypt hash", async () => {
    // crypt() at cost 4 is ~1 ms; statement-level timing is too noisy to compare, so check the
    // plan instead: the function source runs crypt on the not-found path.
    const [fn] = await sql`select prosrc from pg_proc where proname = 'sign_in' and pronamespace = 'api'::regnamespace`;
    const notFound = (fn!.prosrc as string).split("if found_user.id is null then")[1]!.split("end if;")[0]!;
    expect(notFound).toContain("extensions.crypt(password, extensions.gen_salt('bf', auth.bcrypt_cost()))");
  });

  test("nulls and over-long input are the same credentials error, nothing written", async () => {
    const sessions = Number((await sql`select count(*) as n from auth.sessions`)[0]!.n);
    for (const [e, p] of [[null, "password"], [email, null], [email, "x".repeat(73)], ["a".repeat(300), "password"]] as (string | null)[][]) {
      const result = await signIn(e ?? null, p ?? null);
      expect({ status: result.status, body: result.body }).toEqual({ status: 401, body: INVALID_CREDENTIALS });
    }
    expect(Number((await sql`select count(*) as n from auth.sessions`)[0]!.n)).toBe(sessions);
  });
});

describe("refresh tokens", () => {
  const email = uniqueEmail("tokens");
  let first: SignedIn;
  beforeAll(async () => {
    await signUp(email);
    first = await session(email);
  });

  test("are stored only as a sha256 digest", async () => {
    const digest = createHash("sha256").update(first.refresh_token).digest();
    const rows = await sql`select t.* from auth.refresh_tokens t where session_id = ${first.session_id}`;
    expect(rows).toHaveLength(1);
    expect(Buffer.from(rows[0]!.token_hash).equals(digest)).toBe(true);
    const [dump] = await sql`select count(*) as n from auth.refresh_tokens t where strpos(t::text, ${first.refresh_token}) > 0`;
    expect(Number(dump!.n)).toBe(0);
  });

  test("validate_token reports the active session", async () => {
    expect(await validate(first.refresh_token)).toEqual({
      active: true,
      user_id: first.user.id,
      session_id: first.session_id,
      expires_at: expect.any(String),
    });
    expect(await validate("not-a-token")).toEqual({ active: false, user_id: null, session_id: null, expires_at: null });
  });

  test("issue_token rotates within the session; reuse of a retired token revokes the whole session", async () => {
    const rotated = await issueToken(first.refresh_token);
    expect(rotated.status).toBe(200);
    const second = rotated.body as SignedIn;
    expect(second.session_id).toBe(first.session_id);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect((await validate(first.refresh_token)).active).toBe(false);
    expect((await validate(second.refresh_token)).active).toBe(true);

    // past the refresh retry grace (REFRESH_REUSE_GRACE_SECONDS): the clock moved in SQL
    await sql`update auth.refresh_tokens set retired_at = retired_at - interval '1 minute' where token_hash = auth.token_digest(${first.refresh_token})`;
    // Answered with response.status (not raised), so the revocation is committed and persists.
    const reuse = await issueToken(first.refresh_token);
    expect(reuse.status).toBe(401);
    const { details, ...error } = reuse.body as Record<string, string>;
    expect(error).toEqual({ code: "PT401", message: "refresh token reuse detected; the session was revoked", hint: "Sign in again." });
    expect(JSON.parse(details!)).toEqual({ session_id: first.session_id });
    const session = await sessionOf(first.session_id);
    expect(session.revoked_reason).toBe("reuse_detected");
    expect((await validate(second.refresh_token)).active).toBe(false);
    for (const token of [second.refresh_token, first.refresh_token]) {
      const refused = await issueToken(token);
      expect({ status: refused.status, body: refused.body }).toEqual({ status: 401, body: INVALID_REFRESH });
    }
  });

  test("unknown, empty and null tokens are refused without writing", async () => {
    for (const token of ["", "x".repeat(5000), null]) {
      const result = await issueToken(token);
      expect({ status: result.status, body: result.body }).toEqual({ status: 401, body: INVALID_REFRESH });
    }
  });

  test("an expired token is refused", async () => {
    const s = await session(email);
    await sql`update auth.refresh_tokens set expires_at = now() - interval '1 second' where session_id = ${s.session_id}`;
    const refused = await issueToken(s.refresh_token);
    expect({ status: refused.status, body: refused.body }).toEqual({ status: 401, body: INVALID_REFRESH });
    expect((await validate(s.refresh_token)).active).toBe(false);
  });
});

describe("revocation", () => {
  const email = uniqueEmail("revoke");
  beforeAll(() => signUp(email));

  test("revoke_token signs out one session, idempotently, and is silent about unknown tokens", async () => {
    const a = await session(email);
    const b = await session(email);
    const revoke = async (token: string) => {
      const answer = await call("revoke_token", { refresh_token: token });
      expect(answer.status).toBe(200);
      return answer.body;
    };
    expect(await revoke(a.refresh_token)).toEqual({ session_id: a.session_id });
    expect(await revoke(a.refresh_token)).toEqual({ session_id: a.session_id });
    expect(await revoke("unknown")).toEqual({ session_id: null });
    expect((await sessionOf(a.session_id)).revoked_reason).toBe("logout");
    expect((await validate(a.refresh_token)).active).toBe(false);
    expect((await validate(b.refresh_token)).active).toBe(true);
  });

  test("revoke_all_tokens signs the user from the JWT out everywhere", async () => {
    const a = await session(email);
    const b = await session(email);
    const result = await call("revoke_all_tokens", {}, { token: await tokenOf(a) });
    expect(result.status).toBe(200);
    const revoked: string[] = result.body.revoked_sessions;
    expect(revoked).toEqual(expect.arrayContaining([a.session_id, b.session_id]));
    expect((await validate(a.refresh_token)).active).toBe(false);
    expect((await validate(b.refresh_token)).active).toBe(false);
    // The engine does not consult sessions (the gateway does): the token of a revoked session still names its user here.
    const again = await call("revoke_all_tokens", {}, { token: await tokenOf(a) });
    expect({ status: again.status, body: again.body }).toEqual({ status: 200, body: { revoked_sessions: [] } });
  });

  test("revoke_all_tokens without a signed-in user is refused", async () => {
    const result = await call("revoke_all_tokens", {}, { token: await tokenWithClaims({ role: "authenticated" }) });
    expect({ status: result.status, body: result.body }).toEqual({ status: 401, body: SIGN_IN_REQUIRED });
  });
});

describe("me and session_active", () => {
  test("me returns the profile of the sub claim", async () => {
    const email = uniqueEmail("me");
    const user = await signUp(email);
    const result = await call("me", {}, { token: await tokenOf(await session(email)) });
    expect(result.status).toBe(200);
    expect(result.body).toMatchObject({ id: user.id, email, first_name: "Ada", last_name: "Lovelace" });
    for (const claims of [{}, { sub: "not-a-uuid" }, { sub: "00000000-0000-0000-0000-000000000000" }]) {
      const refused = await call("me", {}, { token: await tokenWithClaims({ role: "authenticated", ...claims }) });
      expect({ claims, status: refused.status, body: refused.body }).toEqual({ claims, status: 401, body: SIGN_IN_REQUIRED });
    }
  });

  test("session_active follows revocation of the sid claim", async () => {
    const email = uniqueEmail("sid");
    await signUp(email);
    const s = await session(email);
    const token = await tokenOf(s);
    const active = async () => (await call("session_active", {}, { token })).body;
    expect(await active()).toBe(true);
    expect((await call("revoke_token", { refresh_token: s.refresh_token })).status).toBe(200);
    expect(await active()).toBe(false);
  });
});
