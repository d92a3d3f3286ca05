// MFA through the API: enrol (QR code), verify, sign in again with the second step, tokens with
// aal and amr that refreshes keep, require_mfa of a tenant, and aal2 functions that an aal1
// token cannot reach by any path. Codes are computed from the real clock here (the API's
// database reads it too); stepsPass stands in for waiting 90 s where a test needs a second code.
import { afterAll, describe, expect, test } from "bun:test";
import { call, mintToken, pgrstError } from "../api/helpers";
import { raw } from "../security/support";
import { testStack } from "../support/stack";
import { adminSql, claimsOf, httpEnrolled, httpStepUp, now, rpc, stepsPass, totp } from "./support";

const admin = adminSql();
afterAll(async () => {
  await admin.end();
});

const NEEDS_AAL2 = {
  code: "PT403", message: "this action requires multi-factor authentication (aal2)", details: "your session is at aal1",
  hint: "Verify a second factor first: mfa_challenge, then mfa_verify (or mfa_use_recovery_code).",
};

describe("enrol, verify, sign in with the second step", () => {
  test("the whole walk-through, with the claims of every token", async () => {
    const user = await httpEnrolled(admin);
    expect(user.first).toMatchObject({ aal: "aal1", mfa_required: false, factors: [] });
    expect(claimsOf(user.first.access_token)).toMatchObject({ aal: "aal1", amr: [{ method: "password", timestamp: expect.any(Number) }] });
    expect(user.factor.totp.qr_code).toStartWith("<svg");
    expect(user.factor.totp.qr_code).toContain("</svg>");
    expect(user.factor.totp.uri).toStartWith("otpauth://totp/AutoAudit:");

    expect(user.aal2).toMatchObject({ aal: "aal2", mfa_required: false, token_type: "bearer" });
    expect(user.aal2.recovery_codes).toHaveLength(10);
    expect(claimsOf(user.aal2.access_token)).toMatchObject({ aal: "aal2", amr: [{ method: "password" }, { method: "totp" }] });

    const { aal1, aal2 } = await httpStepUp(admin, user);
    expect(aal1).toMatchObject({ aal: "aal1", mfa_required: true, factors: [{ id: user.factor.id, factor_type: "totp", friendly_name: "Phone" }] });
    expect(claimsOf(aal1.access_token).aal).toBe("aal1");
    expect(aal2.aal).toBe("aal2");
    const claims = claimsOf(aal2.access_token);
    expect(claims).toMatchObject({ aal: "aal2", sid: claimsOf(aal1.access_token).sid });
    expect(claims.amr.map((m: any) => m.method)).toEqual(["password", "totp"]);

    // A refreshed token keeps the session's aal and amr.
    const refreshed = await call("/rpc/issue_token", { body: { refresh_token: aal2.refresh_token } });
    expect(refreshed.status).toBe(200);
    expect(claimsOf(refreshed.json.access_token)).toMatchObject({ aal: "aal2", amr: claims.amr });
    // …also at aal1 (refreshed tokens used to carry no amr at all).
    const plain = await call("/rpc/sign_in", { body: { email: user.email, password: user.password } });
    const refreshedPlain = await call("/rpc/issue_token", { body: { refresh_token: plain.json.refresh_token } });
    expect(claimsOf(refreshedPlain.json.access_token)).toMatchObject({ aal: "aal1", amr: [{ method: "password" }] });

    const listed = await call("/rpc/mfa_factors", { token: aal2.access_token });
    expect(listed.status).toBe(200);
    expect(listed.headers.get("x-cache")).toBeNull();
    expect(listed.json).toMatchObject({ aal: "aal2", recovery_codes_remaining: 10, factors: [{ id: user.factor.id, status: "verified" }] });
  });

  test("a wrong code is 422 and the session stays at aal1; a recovery code works once", async () => {
    const user = await httpEnrolled(admin);
    const aal1 = (await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).json;
    const challenge = (await rpc("mfa_challenge", aal1.access_token, { factor_id: user.factor.id })).json;
    const code = totp(user.secret, now());
    const wrong = await rpc("mfa_verify", aal1.access_token, { challenge_id: challenge.id, code: code === "000000" ? "111111" : "000000" });
    expect(wrong.status).toBe(422);
    expect(wrong.json).toEqual(pgrstError("PT422", "invalid verification code", null,
      "Use the current code of your authenticator app (each code works once) or an unused recovery code."));
    expect((await admin`select aal from auth.sessions where id = ${claimsOf(aal1.access_token).sid}`)[0]!.aal).toBe("aal1");

    const recovery = user.aal2.recovery_codes[3];
    const used = await rpc("mfa_use_recovery_code", aal1.access_token, { code: recovery });
    expect(used.status).toBe(200);
    expect(used.json).toMatchObject({ aal: "aal2", recovery_codes_remaining: 9 });
    expect(claimsOf(used.json.access_token).amr.map((m: any) => m.method)).toEqual(["password", "recovery_code"]);
    const again = (await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).json;
    expect((await rpc("mfa_use_recovery_code", again.access_token, { code: recovery })).status).toBe(422);
  });

  test("the caller's mfa_key is replaced by the API's", async () => {
    const user = await httpEnrolled(admin);
    const aal2 = user.aal2.access_token;
    const factor = await rpc("mfa_enroll_totp", aal2, { friendly_name: "Tablet", mfa_key: "attacker-chosen-key-attacker-chosen-key" });
    expect(factor.status).toBe(200);
    const [row] = await admin`select secret_encrypted from auth.mfa_factors where id = ${factor.json.id}`;
    const [plain] = await admin`select encode(extensions.pgp_sym_decrypt_bytea(${row!.secret_encrypted}, ${testStack().mfaKey!}), 'hex') as hex`;
    expect(plain!.hex).toHaveLength(40);
  });
});

describe("aal2 functions refuse aal1 tokens on every path", () => {
  test("mfa_regenerate_recovery_codes, enrolment, unenrolment and change_password", async () => {
    const user = await httpEnrolled(admin);
    const aal1 = (await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).json.access_token;
    const digests = async () => (await admin`select code_hash, used_at from auth.mfa_recovery_codes where user_id = ${user.aal2.user.id} order by id`).map((r) => Buffer.from(r.code_hash).toString("hex"));
    const before = await digests();

    expect((await rpc("mfa_regenerate_recovery_codes", aal1)).json).toEqual(NEEDS_AAL2);
    expect((await rpc("mfa_enroll_totp", aal1, { friendly_name: "Other" })).json).toEqual(NEEDS_AAL2);
    expect((await rpc("mfa_unenroll", aal1, { factor_id: user.factor.id })).json).toEqual(NEEDS_AAL2);
    const change = await rpc("change_password", aal1, { current_password: user.password, new_password: "a much longer new passphrase 42" });
    expect(change.status).toBe(403);
    expect(change.json).toEqual(NEEDS_AAL2);

    const auth = { Authorization: `Bearer ${aal1}` };
    const variants = ["mfa_regenerate_recovery_codes", "mfa%5Fregenerate%5Frecovery%5Fcodes", "%6Dfa_regenerate_recovery_codes",
      "mfa_regenerate_recovery_codes%23", "mfa_regenerate_recovery_codes%2F", "x%2F..%2Fmfa_regenerate_recovery_codes", "mfa_regenerate_recovery_codes%20"];
    const wrong: string[] = [];
    for (const variant of variants) {
      for (const [method, target] of [["POST", `/rpc/${variant}`], ["GET", `/rpc/${variant}`], ["POST", `/${variant}`], ["GET", `/${variant}`]] as const) {
        const answer = await raw(method, target, { body: method === "POST" ? {} : undefined, headers: auth });
        if (answer.status < 400 || answer.text.includes("recovery_codes\":[")) wrong.push(`${method} ${target} → ${answer.status} ${answer.text.slice(0, 100)}`);
      }
    }
    // Through another exposed profile header, and as a form.
    const profile = await raw("POST", "/rpc/mfa_regenerate_recovery_codes", { body: {}, headers: { ...auth, "Content-Profile": "auth" } });
    if (profile.status < 400) wrong.push(`Content-Profile: auth → ${profile.status}`);
    const form = await raw("POST", "/rpc/mfa_regenerate_recovery_codes", { body: "x=1", headers: { ...auth, "Content-Type": "application/x-www-form-urlencoded" } });
    if (form.status < 400) wrong.push(`form → ${form.status}`);
    expect(wrong).toEqual([]);
    // GET of a volatile function is 405 before anything runs.
    expect((await raw("GET", "/rpc/mfa_regenerate_recovery_codes", { headers: auth })).status).toBe(405);
    expect(await digests()).toEqual(before);

    // A forged claim needs the JWT secret: a token signed with another one is refused outright.
    const forged = await mintToken({ ...claimsOf(aal1), aal: "aal2" }, { secret: "another-secret-another-secret-another-secret" });
    expect((await rpc("mfa_regenerate_recovery_codes", forged)).status).toBe(401);
  });

  test("unenrolment needs a fresh aal2: an aal2 token whose verification is old is refused", async () => {
    const user = await httpEnrolled(admin);
    const claims = claimsOf(user.aal2.access_token);
    const old = await mintToken({ ...claims, amr: claims.amr.map((m: any) => ({ ...m, timestamp: m.timestamp - 3600 })), exp: now() + 600 });
    const stale = await rpc("mfa_unenroll", old, { factor_id: user.factor.id });
    expect(stale.status).toBe(403);
    expect(stale.json.message).toBe("this action requires a recent second-factor verification");
    const done = await rpc("mfa_unenroll", user.aal2.access_token, { factor_id: user.factor.id });
    expect(done.status).toBe(200);
    // The account has no factor left: sign-in needs no second step.
    expect((await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).json).toMatchObject({ mfa_required: false, factors: [] });
  });
});

describe("a tenant that requires MFA", () => {
  test("aal1 members are refused its reads (cached or not) and writes with a 403 naming the step; aal2 passes", async () => {
    const owner = await httpEnrolled(admin);
    const ownerAal2 = owner.aal2.access_token;
    const tenant = (await rpc("create_tenant", ownerAal2, { name: `MFA tenant ${crypto.randomUUID()}` })).json;
    expect((await rpc("upsert_rules", ownerAal2, { tenant_id: tenant.id, framework: "cis-m365", rules: [{ key: "1.1.1", title: "MFA for admins", severity: "high" }] })).status).toBe(200);

    // A member without a factor (invited, accepted).
    const member = await httpEnrolled(admin).then(async (m) => {
      await rpc("mfa_unenroll", m.aal2.access_token, { factor_id: m.factor.id });
      return m;
    });
    const memberToken = (await call("/rpc/sign_in", { body: { email: member.email, password: member.password } })).json.access_token;
    expect((await rpc("add_member", ownerAal2, { tenant_id: tenant.id, email: member.email, role: "auditor" })).status).toBe(200);
    expect((await rpc("accept_invitation", memberToken, { tenant_id: tenant.id })).status).toBe(200);
    const read = (token: string) => call(`/rpc/list_rules?tenant_id=${tenant.id}`, { token });
    expect((await read(memberToken)).status).toBe(200); // cached now, for the aal1 caller

    // The owner's aal1 token may not switch it on; their aal2 token may.
    const ownerAal1 = (await call("/rpc/sign_in", { body: { email: owner.email, password: owner.password } })).json.access_token;
    expect((await rpc("set_tenant_require_mfa", ownerAal1, { tenant_id: tenant.id, require_mfa: true })).json).toEqual(NEEDS_AAL2);
    expect((await rpc("set_tenant_require_mfa", ownerAal2, { tenant_id: tenant.id, require_mfa: true })).json).toEqual({ tenant_id: tenant.id, require_mfa: true });
    const changes = (await rpc("tenant_audit", ownerAal2, { tenant_id: tenant.id, action: "tenant_require_mfa_changed" })).json;
    expect(changes.events.map((e: any) => [e.action, e.actor])).toEqual([["tenant_require_mfa_changed", owner.aal2.user.id]]);

    const blocked = {
      code: "PT403", message: "this tenant requires multi-factor authentication (aal2)", details: "your session is at aal1",
      hint: "Enrol a factor with mfa_enroll_totp and verify it with mfa_verify_enrollment first.",
    };
    expect((await read(memberToken)).json).toEqual(blocked);
    expect((await rpc("submit_scan", memberToken, { tenant_id: tenant.id, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass" }] })).json).toEqual(blocked);
    // RLS: the tenant is gone from the aal1 member's reads that do not name it.
    expect((await call("/rpc/my_tenants", { token: memberToken })).json.map((t: any) => t.id)).not.toContain(tenant.id);
    expect((await admin`select count(*)::int as n from compliance.scans where tenant_id = ${tenant.id}`)[0]!.n).toBe(0);

    // The member enrols and verifies: aal2 reads and writes.
    const factor = (await rpc("mfa_enroll_totp", memberToken, { friendly_name: "Phone" })).json;
    const verified = (await rpc("mfa_verify_enrollment", memberToken, { factor_id: factor.id, code: totp(factor.totp.secret, now()) })).json;
    expect(verified.aal).toBe("aal2");
    const listed = await read(verified.access_token);
    expect(listed.status).toBe(200);
    expect(listed.json.map((r: any) => r.key)).toEqual(["1.1.1"]);
    expect((await rpc("submit_scan", verified.access_token, { tenant_id: tenant.id, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass" }] })).status).toBe(200);
    // Its aal1 token stays refused, also from the cache of the aal2 answer.
    expect((await read(memberToken)).status).toBe(403);
    await stepsPass(admin, factor.id);
  });

  test("tenant administration needs aal2 of an admin who has a factor, also for remove_member", async () => {
    const owner = await httpEnrolled(admin);
    const tenant = (await rpc("create_tenant", owner.aal2.access_token, { name: `Admin tenant ${crypto.randomUUID()}` })).json;
    const other = await httpEnrolled(admin);
    expect((await rpc("add_member", owner.aal2.access_token, { tenant_id: tenant.id, email: other.email, role: "viewer" })).status).toBe(200);
    expect((await rpc("accept_invitation", other.aal2.access_token, { tenant_id: tenant.id })).status).toBe(200);
    const ownerAal1 = (await call("/rpc/sign_in", { body: { email: owner.email, password: owner.password } })).json.access_token;
    expect((await rpc("set_member_role", ownerAal1, { tenant_id: tenant.id, user_id: other.aal2.user.id, role: "auditor" })).json).toEqual(NEEDS_AAL2);
    expect((await rpc("upsert_rules", ownerAal1, { tenant_id: tenant.id, framework: "cis-m365", rules: [{ key: "1.1.2", title: "x", severity: "low" }] })).json).toEqual(NEEDS_AAL2);
    expect((await rpc("remove_member", ownerAal1, { tenant_id: tenant.id, user_id: other.aal2.user.id })).json).toEqual(NEEDS_AAL2);
    expect((await admin`select role from compliance.tenant_members where tenant_id = ${tenant.id} and user_id = ${other.aal2.user.id}`)[0]!.role).toBe("viewer");
    expect((await rpc("remove_member", owner.aal2.access_token, { tenant_id: tenant.id, user_id: other.aal2.user.id })).status).toBe(200);
  });
});

describe("bad input over HTTP", () => {
  test("malformed factor and challenge ids and codes are PostgREST-shaped 400s that write nothing", async () => {
    const user = await httpEnrolled(admin);
    const token = user.aal2.access_token;
    const count = async () => (await admin`select (select count(*) from auth.mfa_challenges where user_id = ${user.aal2.user.id})::int as c, (select coalesce(sum(failures), 0) from auth.mfa_throttle where user_id = ${user.aal2.user.id})::int as f`)[0];
    const before = await count();
    const challenge = await rpc("mfa_challenge", token, { factor_id: "nope" });
    expect(challenge.status).toBe(400);
    expect(challenge.json.code).toBe("22P02");
    expect(Object.keys(challenge.json).sort()).toEqual(["code", "details", "hint", "message"]);
    const verify = await rpc("mfa_verify", token, { challenge_id: crypto.randomUUID(), code: "12 456" });
    expect(verify.json).toEqual(pgrstError("22023", "code must be 6 digits", null, 'Send the current code of your authenticator app, e.g. "123456".'));
    expect((await rpc("mfa_verify", token, { challenge_id: crypto.randomUUID(), code: "123456" })).status).toBe(404);
    expect(await count()).toEqual(before);
  });
});
