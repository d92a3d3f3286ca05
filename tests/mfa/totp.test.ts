// TOTP factors in the database, with the clock chosen by each test (autoaudit.mfa_clock) and
// real RFC 6238 codes computed from the enrolled secret: enrolment, verification, the second
// step, replay, the ±1 step window, throttling, recovery codes, bad input and the audit trail.
import { afterAll, describe, expect, test } from "bun:test";
import { URI } from "otpauth";
import { adminSql, authenticatorSql, callerOf, PASSWORD, SQL_KEY, sqlAccount, sqlCall, sqlEnrolled, sqlOk, totp, wrongCode } from "./support";

const admin = adminSql();
const app = authenticatorSql();
afterAll(async () => {
  await app.end();
  await admin.end();
});

/** A step boundary, far from the real clock, so nothing here depends on the time of the run. */
const T = 1_900_000_020;
const INVALID = {
  code: "PT422", details: null, message: "invalid verification code",
  hint: "Use the current code of your authenticator app (each code works once) or an unused recovery code.",
};
const factorRow = async (id: string) => (await admin`select * from auth.mfa_factors where id = ${id}`)[0]!;
const eventsOf = async (userId: string) =>
  (await admin`select action, details from audit.events where user_id = ${userId} and action like 'mfa%' order by id`).map((e) => e.action as string);

describe("enrolment", () => {
  test("returns a base32 secret and an otpauth URI once; stores the secret encrypted and unverified", async () => {
    const { email, caller } = await sqlAccount(app);
    const factor = await sqlOk(app, caller, "mfa_enroll_totp", { friendly_name: " Work phone ", mfa_key: SQL_KEY }, T);
    expect(factor).toMatchObject({ factor_type: "totp", friendly_name: "Work phone", status: "unverified", verified_at: null });
    expect(factor.totp.secret).toMatch(/^[A-Z2-7]{32}$/);
    const parsed = URI.parse(factor.totp.uri);
    expect(parsed).toMatchObject({ issuer: "AutoAudit", label: email, algorithm: "SHA1", digits: 6, period: 30 });
    expect(parsed.secret.base32).toBe(factor.totp.secret);

    const row = await factorRow(factor.id);
    expect(row.status).toBe("unverified");
    // Neither the base32 text nor the raw bytes are in the stored value.
    const stored = Buffer.from(row.secret_encrypted);
    expect(stored.toString("latin1")).not.toContain(factor.totp.secret);
    expect(stored.includes(Buffer.from(parsed.secret.bytes))).toBe(false);
    // Decrypts with the key it was enrolled with only.
    const [plain] = await admin`select encode(extensions.pgp_sym_decrypt_bytea(${stored}, ${SQL_KEY}), 'hex') as hex`;
    expect(plain!.hex).toBe(Buffer.from(parsed.secret.bytes).toString("hex"));

    // Never again: the list has no secret.
    const listed = await sqlOk(app, caller, "mfa_factors", {});
    expect(listed.factors).toHaveLength(1);
    expect(JSON.stringify(listed)).not.toContain(factor.totp.secret);
    expect(listed).toMatchObject({ recovery_codes_remaining: 0, aal: "aal1" });
  });

  test("without the key nothing is enrolled: 503", async () => {
    const { caller } = await sqlAccount(app);
    const answer = await sqlCall(app, caller, "mfa_enroll_totp", { friendly_name: "Phone" });
    expect(answer.status).toBe(503);
    expect(answer.body.message).toBe("multi-factor authentication is not configured");
    expect((await admin`select count(*)::int as n from auth.mfa_factors where user_id = ${caller.sub}`)[0]!.n).toBe(0);
  });

  test("verify_enrollment: the right code verifies, raises the session to aal2 and returns ten recovery codes once", async () => {
    const { caller } = await sqlAccount(app);
    const factor = await sqlOk(app, caller, "mfa_enroll_totp", { friendly_name: "Phone", mfa_key: SQL_KEY }, T);
    const answer = await sqlOk(app, caller, "mfa_verify_enrollment", { factor_id: factor.id, code: totp(factor.totp.secret, T), mfa_key: SQL_KEY }, T);
    expect(answer.aal).toBe("aal2");
    expect(answer.mfa_required).toBe(false);
    expect(answer.amr.map((m: any) => m.method)).toEqual(["password", "totp"]);
    expect(answer.amr[1].timestamp).toBe(T);
    expect(answer.factor).toMatchObject({ id: factor.id, status: "verified" });
    expect(answer.recovery_codes).toHaveLength(10);
    expect(new Set(answer.recovery_codes).size).toBe(10);
    for (const code of answer.recovery_codes) expect(code).toMatch(/^[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}-[a-km-np-z2-9]{4}$/);
    // Stored as digests only.
    const stored = await admin`select code_hash from auth.mfa_recovery_codes where user_id = ${caller.sub}`;
    expect(stored).toHaveLength(10);
    for (const row of stored) expect(answer.recovery_codes.some((c: string) => Buffer.from(row.code_hash).toString("latin1").includes(c))).toBe(false);
    // The session's refresh token was rotated: the old one is retired.
    const [old] = await admin`select retired_at from auth.refresh_tokens where session_id = ${caller.sid} order by id limit 1`;
    expect(old!.retired_at).not.toBeNull();
    expect(await eventsOf(caller.sub)).toEqual(["mfa_factor_enrolled", "mfa_factor_verified", "mfa_recovery_codes_issued", "mfa_verified"]);
  });
});

describe("the second step", () => {
  test("sign-in opens at aal1 and says a second step is needed; challenge + verify reach aal2; refresh keeps aal and amr", async () => {
    const user = await sqlEnrolled(app, T);
    const signedIn = await sqlOk(app, null, "sign_in", { email: user.email, password: PASSWORD });
    expect(signedIn).toMatchObject({ aal: "aal1", mfa_required: true, factors: [{ id: user.factor.id, factor_type: "totp", friendly_name: "Phone" }] });
    expect(signedIn.amr).toEqual([{ method: "password", timestamp: expect.any(Number) }]);
    const caller = callerOf(signedIn);

    const challenge = await sqlOk(app, caller, "mfa_challenge", { factor_id: user.factor.id }, T + 30);
    expect(new Date(challenge.expires_at).getTime() / 1000).toBe(T + 30 + 300);
    const verified = await sqlOk(app, caller, "mfa_verify", { challenge_id: challenge.id, code: totp(user.secret, T + 30), mfa_key: SQL_KEY }, T + 30);
    expect(verified).toMatchObject({ aal: "aal2", mfa_required: false, session_id: caller.sid });
    expect(verified.amr.map((m: any) => m.method)).toEqual(["password", "totp"]);

    const refreshed = await sqlOk(app, null, "issue_token", { refresh_token: verified.refresh_token });
    expect(refreshed.aal).toBe("aal2");
    expect(refreshed.amr).toEqual(verified.amr);
    // The aal1 refresh token of the sign-in is retired: presenting it is reuse.
    const reused = await sqlCall(app, null, "issue_token", { refresh_token: signedIn.refresh_token });
    expect(reused.status).toBe(401);
  });

  test("a wrong code, a replayed code and a code two steps away are refused with 422 and counted; the next step's code works", async () => {
    const user = await sqlEnrolled(app, T);
    const caller = user.caller;
    const challenge = async (at: number) => (await sqlOk(app, caller, "mfa_challenge", { factor_id: user.factor.id }, at)).id;
    const verify = async (at: number, code: string) =>
      sqlCall(app, caller, "mfa_verify", { challenge_id: await challenge(at), code, mfa_key: SQL_KEY }, at);

    const wrong = await verify(T, wrongCode(user.secret, T));
    expect(wrong).toEqual({ status: 422, body: INVALID, headers: { "Proxy-Status": "PostgREST; error=PT422" } });
    // The code enrolment used (step T/30) is spent: a replay is refused, also within its window.
    expect((await verify(T + 10, totp(user.secret, T))).status).toBe(422);
    // Two steps ahead and two behind are outside the ±1 window.
    expect((await verify(T, totp(user.secret, T + 60))).status).toBe(422);
    expect((await verify(T + 90, totp(user.secret, T + 30))).status).toBe(422);
    // A code of the next step (within the window) works, once.
    const next = totp(user.secret, T + 30);
    expect((await verify(T, next)).status).toBe(200);
    expect((await verify(T, next)).status).toBe(422);
    // An older code of the window is refused once a later one was used.
    expect((await verify(T + 30, totp(user.secret, T))).status).toBe(422);

    const row = await factorRow(user.factor.id);
    expect(row.last_used_step).toBe(String((T + 30) / 30));
    expect(row.failures).toBe(2); // the success reset the factor's count: the replay and the older code since
    const [account] = await admin`select failures from auth.mfa_throttle where user_id = ${caller.sub}`;
    expect(account!.failures).toBe(6);
    const failed = await admin`select details from audit.events where user_id = ${caller.sub} and action = 'mfa_failed' order by id`;
    expect(failed.map((e) => e.details.failures)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(failed[0]!.details).toMatchObject({ method: "totp", factor_id: user.factor.id });
  });

  test("failures block the factor (429 + Retry-After, doubling) and, many, the account", async () => {
    const user = await sqlEnrolled(app, T);
    const caller = user.caller;
    const attempt = async (code: string, settings: Record<string, string> = {}) => {
      const id = (await sqlOk(app, caller, "mfa_challenge", { factor_id: user.factor.id }, T)).id;
      return sqlCall(app, caller, "mfa_verify", { challenge_id: id, code, mfa_key: SQL_KEY }, T, settings);
    };
    const bad = wrongCode(user.secret, T);
    for (let i = 0; i < 5; i++) expect((await attempt(bad)).status).toBe(422);
    const blocked = await attempt(totp(user.secret, T + 30));
    expect(blocked).toEqual({
      status: 429, headers: { "Retry-After": "1" },
      body: { code: "PT429", message: "too many failed verification codes", details: null, hint: "Retry after 1 seconds." },
    });
    // The refused attempt cost nothing and checked no code.
    expect((await factorRow(user.factor.id)).failures).toBe(5);
    await admin`update auth.mfa_factors set blocked_until = now() - interval '1 second' where id = ${user.factor.id}`;
    expect((await attempt(bad)).status).toBe(422);
    const row = await factorRow(user.factor.id);
    expect(row.blocked_until.getTime() - Date.now()).toBeGreaterThan(1000);

    // The account ceiling: every factor and recovery code of the account waits for the window.
    await admin`update auth.mfa_factors set blocked_until = null where id = ${user.factor.id}`;
    expect((await attempt(bad, { "autoaudit.mfa_account_ceiling": "7" })).status).toBe(422);
    const ceiling = await attempt(totp(user.secret, T + 30));
    expect(ceiling.status).toBe(429);
    expect(Number(ceiling.headers["Retry-After"])).toBeGreaterThan(800);
    const recovery = await sqlCall(app, caller, "mfa_use_recovery_code", { code: user.verified.recovery_codes[0], mfa_key: SQL_KEY }, T);
    expect(recovery.status).toBe(429);
  });

  test("a recovery code is a second step once; the others keep working; the use is recorded", async () => {
    const user = await sqlEnrolled(app, T);
    const signedIn = await sqlOk(app, null, "sign_in", { email: user.email, password: PASSWORD });
    const caller = callerOf(signedIn);
    const [code, other] = user.verified.recovery_codes;
    const used = await sqlOk(app, caller, "mfa_use_recovery_code", { code: code.toUpperCase().replaceAll("-", " "), mfa_key: SQL_KEY }, T);
    expect(used).toMatchObject({ aal: "aal2", recovery_codes_remaining: 9 });
    expect(used.amr.map((m: any) => m.method)).toEqual(["password", "recovery_code"]);

    const again = await sqlOk(app, null, "sign_in", { email: user.email, password: PASSWORD });
    const reuse = await sqlCall(app, callerOf(again), "mfa_use_recovery_code", { code, mfa_key: SQL_KEY }, T);
    expect(reuse).toMatchObject({ status: 422, body: INVALID });
    expect((await sqlCall(app, callerOf(again), "mfa_use_recovery_code", { code: other, mfa_key: SQL_KEY }, T)).status).toBe(200);
    const events = await admin`select action, details from audit.events where user_id = ${caller.sub} and action in ('mfa_recovery_code_used', 'mfa_failed') order by id`;
    expect(events.map((e) => [e.action, e.details.remaining ?? e.details.method])).toEqual([
      ["mfa_recovery_code_used", 9], ["mfa_failed", "recovery_code"], ["mfa_recovery_code_used", 8],
    ]);
  });

  test("regenerating recovery codes needs aal2 and replaces the unused ones", async () => {
    const user = await sqlEnrolled(app, T);
    const aal1 = callerOf(await sqlOk(app, null, "sign_in", { email: user.email, password: PASSWORD }));
    const refused = await sqlCall(app, aal1, "mfa_regenerate_recovery_codes", { mfa_key: SQL_KEY }, T);
    expect(refused).toMatchObject({ status: 403, body: { message: "this action requires multi-factor authentication (aal2)", details: "your session is at aal1" } });
    const fresh = await sqlOk(app, user.caller, "mfa_regenerate_recovery_codes", { mfa_key: SQL_KEY }, T);
    expect(fresh.recovery_codes).toHaveLength(10);
    const old = await sqlCall(app, aal1, "mfa_use_recovery_code", { code: user.verified.recovery_codes[0], mfa_key: SQL_KEY }, T);
    expect(old.status).toBe(422);
    expect((await sqlCall(app, aal1, "mfa_use_recovery_code", { code: fresh.recovery_codes[0], mfa_key: SQL_KEY }, T)).status).toBe(200);
  });
});

describe("unenrolment", () => {
  test("a verified factor needs an aal2 of the last 10 minutes; an unverified one of an account without MFA does not", async () => {
    const user = await sqlEnrolled(app, T);
    const aal1 = callerOf(await sqlOk(app, null, "sign_in", { email: user.email, password: PASSWORD }));
    const atAal1 = await sqlCall(app, aal1, "mfa_unenroll", { factor_id: user.factor.id }, T);
    expect(atAal1.status).toBe(403);
    const stale = await sqlCall(app, user.caller, "mfa_unenroll", { factor_id: user.factor.id }, T + 601);
    expect(stale).toMatchObject({ status: 403, body: { message: "this action requires a recent second-factor verification" } });
    expect(await sqlOk(app, user.caller, "mfa_unenroll", { factor_id: user.factor.id }, T + 599)).toEqual({ id: user.factor.id, friendly_name: "Phone" });
    // The last verified factor gone, the recovery codes go with it.
    expect((await admin`select count(*)::int as n from auth.mfa_recovery_codes where user_id = ${user.caller.sub}`)[0]!.n).toBe(0);
    expect((await eventsOf(user.caller.sub)).at(-1)).toBe("mfa_factor_unenrolled");

    const { caller } = await sqlAccount(app);
    const pending = await sqlOk(app, caller, "mfa_enroll_totp", { friendly_name: "Spare", mfa_key: SQL_KEY }, T);
    expect((await sqlCall(app, caller, "mfa_unenroll", { factor_id: pending.id }, T)).status).toBe(200);
  });
});

describe("bad input writes nothing", () => {
  test("codes of the wrong length or alphabet, another user's factor or challenge, expired and used challenges", async () => {
    const user = await sqlEnrolled(app, T);
    const other = await sqlEnrolled(app, T);
    const snapshot = async () => [
      ...(await admin`select id, failures, last_used_step, status from auth.mfa_factors where user_id in ${admin([user.caller.sub, other.caller.sub])} order by id`),
      ...(await admin`select user_id, failures from auth.mfa_throttle where user_id in ${admin([user.caller.sub, other.caller.sub])} order by user_id`),
      ...(await admin`select count(*)::int as n from audit.events where user_id in ${admin([user.caller.sub, other.caller.sub])}`),
    ];
    const challenge = (await sqlOk(app, user.caller, "mfa_challenge", { factor_id: user.factor.id }, T)).id;
    const before = await snapshot();
    const verify = (code: unknown, at = T, id = challenge, caller = user.caller) => sqlCall(app, caller, "mfa_verify", { challenge_id: id, code, mfa_key: SQL_KEY }, at);

    for (const code of ["12345", "1234567", "12a456", "１２３４５６", " 123456", null]) {
      expect(await verify(code)).toMatchObject({ status: 400, body: { code: "22023", message: "code must be 6 digits" } });
    }
    const notFound = { status: 404, body: { code: "PT404", message: "no challenge of this session has this id" } };
    expect(await verify(totp(user.secret, T + 30), T, challenge, other.caller)).toMatchObject(notFound);
    expect(await verify(totp(user.secret, T + 30), T, "00000000-0000-0000-0000-000000000000")).toMatchObject(notFound);
    expect(await verify(totp(user.secret, T + 330), T + 330)).toMatchObject({ status: 400, body: { message: "the challenge has expired or was already used" } });
    expect(await sqlCall(app, other.caller, "mfa_challenge", { factor_id: user.factor.id }, T)).toMatchObject({ status: 404, body: { message: "no factor of yours has this id" } });
    expect(await sqlCall(app, other.caller, "mfa_unenroll", { factor_id: user.factor.id }, T)).toMatchObject({ status: 404 });
    expect(await sqlCall(app, user.caller, "mfa_challenge", { factor_id: "not-a-uuid" }, T)).toMatchObject({ status: 400, body: { code: "22P02" } });
    for (const code of ["abcd-efgh-jkm", "abcd-efgh-jklo", "", "x".repeat(50)]) {
      expect(await sqlCall(app, user.caller, "mfa_use_recovery_code", { code, mfa_key: SQL_KEY }, T)).toMatchObject({ status: 400, body: { message: "code is not a recovery code" } });
    }
    for (const friendly_name of ["", "   ", "x".repeat(101), "tab\there"]) {
      expect((await sqlCall(app, user.caller, "mfa_enroll_totp", { friendly_name, mfa_key: SQL_KEY }, T)).status).toBe(400);
    }
    expect(await snapshot()).toEqual(before);

    // A used challenge cannot be answered again.
    expect((await verify(totp(user.secret, T + 30))).status).toBe(200);
    expect(await verify(totp(user.secret, T + 30))).toMatchObject({ status: 400, body: { message: "the challenge has expired or was already used" } });
  });
});
