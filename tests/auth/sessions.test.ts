import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { adminSql, callAs, issueToken, signIn, signUp, uniqueEmail, type SignedIn } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

const INVALID_CREDENTIALS = { code: "PT401", message: "invalid email or password" };
const INVALID_REFRESH = { code: "PT401", message: "invalid refresh token", hint: "Sign in again." };

const validate = async (token: string) =>
  (await callAs(sql, "anon", null, (tx) => tx`select api.validate_token(${token}) as v`)).value![0]!.v;
const sessionOf = async (id: string) => (await sql`select * from auth.sessions where id = ${id}`)[0]!;

describe("sign_in", () => {
  const email = uniqueEmail("signin");
  beforeAll(() => signUp(sql, email));

  test("opens a session with a fresh refresh token and records the login", async () => {
    const result = await signIn(sql, `  ${email.toUpperCase()}`);
    expect(result.error).toBeUndefined();
    const s = result.value!;
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
    const wrong = await signIn(sql, email, "not the password");
    const unknown = await signIn(sql, uniqueEmail("nobody"), "not the password");
    // Answered (and committed) with response.status 401, so the failure is counted.
    expect(wrong.responseStatus).toBe("401");
    expect(wrong.error).toMatchObject(INVALID_CREDENTIALS);
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
      const result = await signIn(sql, e ?? null, p ?? null);
      expect(result.responseStatus).toBe("401");
      expect(result.error).toMatchObject(INVALID_CREDENTIALS);
    }
    expect(Number((await sql`select count(*) as n from auth.sessions`)[0]!.n)).toBe(sessions);
  });
});

describe("refresh tokens", () => {
  const email = uniqueEmail("tokens");
  let first: SignedIn;
  beforeAll(async () => {
    await signUp(sql, email);
    first = (await signIn(sql, email)).value!;
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
    const second = await issueToken(sql, first.refresh_token);
    expect(second.error).toBeUndefined();
    expect(second.responseStatus).toBeNull();
    expect(second.value!.session_id).toBe(first.session_id);
    expect(second.value!.refresh_token).not.toBe(first.refresh_token);
    expect((await validate(first.refresh_token)).active).toBe(false);
    expect((await validate(second.value!.refresh_token)).active).toBe(true);

    // past the refresh retry grace (REFRESH_REUSE_GRACE_SECONDS): the clock moved in SQL
    await sql`update auth.refresh_tokens set retired_at = retired_at - interval '1 minute' where token_hash = auth.token_digest(${first.refresh_token})`;
    const reuse = await issueToken(sql, first.refresh_token);
    expect(reuse.error).toBeUndefined(); // committed on purpose: the revocation must persist
    expect(reuse.responseStatus).toBe("401");
    const { details, ...error } = reuse.value as unknown as Record<string, string>;
    expect(error).toEqual({ code: "PT401", message: "refresh token reuse detected; the session was revoked", hint: "Sign in again." });
    expect(JSON.parse(details!)).toEqual({ session_id: first.session_id });
    const session = await sessionOf(first.session_id);
    expect(session.revoked_reason).toBe("reuse_detected");
    expect((await validate(second.value!.refresh_token)).active).toBe(false);
    expect((await issueToken(sql, second.value!.refresh_token)).error).toEqual(INVALID_REFRESH);
    expect((await issueToken(sql, first.refresh_token)).error).toEqual(INVALID_REFRESH);
  });

  test("unknown, empty and null tokens are refused without writing", async () => {
    for (const token of ["", "x".repeat(5000), null]) {
      const result = await callAs(sql, "anon", null, (tx) => tx`select api.issue_token(${token})`);
      expect(result.error).toEqual(INVALID_REFRESH);
    }
  });

  test("an expired token is refused", async () => {
    const s = (await signIn(sql, email)).value!;
    await sql`update auth.refresh_tokens set expires_at = now() - interval '1 second' where session_id = ${s.session_id}`;
    expect((await issueToken(sql, s.refresh_token)).error).toEqual(INVALID_REFRESH);
    expect((await validate(s.refresh_token)).active).toBe(false);
  });
});

describe("revocation", () => {
  const email = uniqueEmail("revoke");
  beforeAll(() => signUp(sql, email));

  test("revoke_token signs out one session, idempotently, and is silent about unknown tokens", async () => {
    const a = (await signIn(sql, email)).value!;
    const b = (await signIn(sql, email)).value!;
    const revoke = (token: string) => callAs(sql, "anon", null, (tx) => tx`select api.revoke_token(${token}) as r`);
    expect((await revoke(a.refresh_token)).value![0]!.r).toEqual({ session_id: a.session_id });
    expect((await revoke(a.refresh_token)).value![0]!.r).toEqual({ session_id: a.session_id });
    expect((await revoke("unknown")).value![0]!.r).toEqual({ session_id: null });
    expect((await sessionOf(a.session_id)).revoked_reason).toBe("logout");
    expect((await validate(a.refresh_token)).active).toBe(false);
    expect((await validate(b.refresh_token)).active).toBe(true);
  });

  test("revoke_all_tokens signs the user from the JWT out everywhere", async () => {
    const a = (await signIn(sql, email)).value!;
    const b = (await signIn(sql, email)).value!;
    const result = await callAs(sql, "authenticated", { sub: a.user.id, role: "authenticated" }, (tx) => tx`select api.revoke_all_tokens() as r`);
    const revoked: string[] = result.value![0]!.r.revoked_sessions;
    expect(revoked).toEqual(expect.arrayContaining([a.session_id, b.session_id]));
    expect((await validate(a.refresh_token)).active).toBe(false);
    expect((await validate(b.refresh_token)).active).toBe(false);
    const again = await callAs(sql, "authenticated", { sub: a.user.id }, (tx) => tx`select api.revoke_all_tokens() as r`);
    expect(again.value![0]!.r).toEqual({ revoked_sessions: [] });
  });

  test("revoke_all_tokens without a signed-in user is refused", async () => {
    const result = await callAs(sql, "authenticated", {}, (tx) => tx`select api.revoke_all_tokens()`);
    expect(result.error).toMatchObject({ code: "PT401", message: "sign in required" });
  });
});

describe("me and session_active", () => {
  test("me returns the profile of the sub claim", async () => {
    const email = uniqueEmail("me");
    const user = await signUp(sql, email);
    const result = await callAs(sql, "authenticated", { sub: user.id }, (tx) => tx`select api.me() as m`);
    expect(result.value![0]!.m).toMatchObject({ id: user.id, email, first_name: "Ada", last_name: "Lovelace" });
    for (const claims of [{}, { sub: "not-a-uuid" }, { sub: "00000000-0000-0000-0000-000000000000" }]) {
      const refused = await callAs(sql, "authenticated", claims, (tx) => tx`select api.me()`);
      expect(refused.error).toMatchObject({ code: "PT401", message: "sign in required" });
    }
  });

  test("session_active follows revocation of the sid claim", async () => {
    const email = uniqueEmail("sid");
    await signUp(sql, email);
    const s = (await signIn(sql, email)).value!;
    const active = async (sid: string) =>
      (await callAs(sql, "authenticated", { sub: s.user.id, sid }, (tx) => tx`select api.session_active() as a`)).value![0]!.a;
    expect(await active(s.session_id)).toBe(true);
    await callAs(sql, "anon", null, (tx) => tx`select api.revoke_token(${s.refresh_token})`);
    expect(await active(s.session_id)).toBe(false);
  });
});
