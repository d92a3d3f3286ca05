// Email verification and the password change, over HTTP with the real mail catcher.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { adminSql, call, linkToken, mailsTo, newUser, signIn, signUp, STRONG, waitForMails, type Sql } from "./support";

let sql: Sql;
beforeAll(() => {
  sql = adminSql();
});
afterAll(async () => {
  await sql.end();
});

const claims = (accessToken: string) => JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString());

describe("email verification", () => {
  test("sign_up mails a link; verify_email sets email_verified_at (in me() and the next access token); single use", async () => {
    const user = newUser();
    await signUp(user);
    const before = await signIn(user);
    expect(claims(before.access_token).email_verified).toBe(false);
    expect((await call("/rpc/me", { token: before.access_token })).json.email_verified_at).toBeNull();

    const token = linkToken((await waitForMails(user.email, /Confirm your email/))[0]!, "/verify-email");
    const verified = await call("/rpc/verify_email", { body: { token } });
    expect(verified.status).toBe(200);
    expect(verified.json.email).toBe(user.email);
    expect(Date.parse(verified.json.email_verified_at)).toBeGreaterThan(Date.now() - 60_000);

    expect((await call("/rpc/me", { token: before.access_token })).json.email_verified_at).toBe(verified.json.email_verified_at);
    const refreshed = await call("/rpc/issue_token", { body: { refresh_token: before.refresh_token } });
    expect(claims(refreshed.json.access_token).email_verified).toBe(true);

    const again = await call("/rpc/verify_email", { body: { token } });
    expect(again.status).toBe(400);
    expect(again.json.message).toBe("invalid or expired token");

    // a verified account is sent no further verification mail
    expect((await call("/rpc/resend_verification", { body: { email: user.email } })).status).toBe(200);
    await Bun.sleep(500);
    expect((await mailsTo(user.email)).filter((m) => /Confirm your email/.test(m.subject))).toHaveLength(1);
    expect((await sql`select id from auth.mail_outbox where recipient = ${user.email} and status <> 'sent'`).length).toBe(0);
  });

  test("resend_verification answers the same for any address, mails only unverified accounts, and is throttled", async () => {
    const user = newUser();
    await signUp(user);
    await waitForMails(user.email, /Confirm your email/);
    const known = await call("/rpc/resend_verification", { body: { email: user.email } });
    const unknown = await call("/rpc/resend_verification", { body: { email: newUser().email } });
    expect(known.status).toBe(200);
    expect(known.text).toBe(unknown.text);
    const mails = await waitForMails(user.email, /Confirm your email/, 2);
    // the newer link replaces the older one
    const tokens = mails.map((m) => linkToken(m, "/verify-email"));
    const results = await Promise.all(tokens.map((token) => call("/rpc/verify_email", { body: { token } })));
    expect(results.map((r) => r.status).sort()).toEqual([200, 400]);
    for (let i = 0; i < 4; i++) expect((await call("/rpc/resend_verification", { body: { email: user.email } })).status).toBe(200);
    expect((await call("/rpc/resend_verification", { body: { email: user.email } })).status).toBe(429);
  });

  test("AUTH_REQUIRE_VERIFIED_EMAIL: unverified accounts cannot sign in or refresh while it is on", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    await sql`insert into auth.settings (name, value) values ('require_verified_email', 'true') on conflict (name) do update set value = 'true'`;
    try {
      const refused = await call("/rpc/sign_in", { body: { email: user.email, password: user.password } });
      expect(refused.status).toBe(403);
      expect(refused.json.message).toBe("email address not verified");
      expect((await call("/rpc/issue_token", { body: { refresh_token: tokens.refresh_token } })).status).toBe(403);
      const token = linkToken((await waitForMails(user.email, /Confirm your email/))[0]!, "/verify-email");
      expect((await call("/rpc/verify_email", { body: { token } })).status).toBe(200);
      expect((await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).status).toBe(200);
    } finally {
      await sql`delete from auth.settings where name = 'require_verified_email'`;
    }
  });
});

describe("password change", () => {
  test("needs the current password; keeps this session, revokes the others, is recorded", async () => {
    const user = newUser();
    await signUp(user);
    const here = await signIn(user);
    const elsewhere = await signIn(user);
    const newPassword = STRONG();

    const wrong = await call("/rpc/change_password", { token: here.access_token, body: { current_password: "not-it-at-all-1", new_password: newPassword } });
    expect(wrong.status).toBe(403);
    expect(wrong.json.message).toBe("current password is incorrect");

    const changed = await call("/rpc/change_password", { token: here.access_token, body: { current_password: user.password, new_password: newPassword } });
    expect(changed.status).toBe(200);
    expect(changed.json.revoked_sessions).toEqual([claims(elsewhere.access_token).sid]);
    expect((await call("/rpc/me", { token: here.access_token })).status).toBe(200);
    await Bun.sleep(1000);
    expect((await call("/rpc/me", { token: elsewhere.access_token })).status).toBe(401);
    expect((await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).status).toBe(401);
    expect((await call("/rpc/sign_in", { body: { email: user.email, password: newPassword } })).status).toBe(200);
    const events = await sql`select e.kind from auth.account_events e join auth.users u on u.id = e.user_id where u.email = ${user.email}`;
    expect(events.map((e) => e.kind)).toEqual(["password_changed"]);
    await waitForMails(user.email, /Your password was changed/);
  });

  test("without a token it is 401; anonymous callers cannot reach it", async () => {
    const result = await call("/rpc/change_password", { body: { current_password: "whatever-it-is", new_password: STRONG() } });
    expect(result.status).toBe(401);
  });
});

describe("password policy (gateway, zxcvbn, offline)", () => {
  test("common and guessable passwords are refused with a clear message before any hash; strong ones pass", async () => {
    for (const password of ["password123", "qwertyuiop", "iloveyou1", "aaaaaaaaaaaa"]) {
      const user = { email: newUser().email, password, first_name: "Ada", last_name: "Lovelace" };
      const result = await call("/rpc/sign_up", { body: user });
      expect(result.status).toBe(400);
      expect(result.json).toMatchObject({ code: "AA103", message: "password is too weak" });
      expect(typeof result.json.hint).toBe("string");
      expect((await sql`select count(*)::int as n from auth.users where email = ${user.email}`)[0]!.n).toBe(0);
    }
    // the user's own address is a guessable word
    const email = `zebulon.quartermaine-${crypto.randomUUID().slice(0, 6)}@example.com`;
    const own = await call("/rpc/sign_up", { body: { email, password: "zebulonquartermaine", first_name: "Z", last_name: "Q" } });
    expect(own.status).toBe(400);
    const signedIn = await signIn(await (async () => { const u = newUser(); await signUp(u); return u; })());
    const weakChange = await call("/rpc/change_password", { token: signedIn.access_token, body: { current_password: "x", new_password: "password1" } });
    expect(weakChange.status).toBe(400);
    const weakReset = await call("/rpc/reset_password", { body: { token: "a".repeat(43), new_password: "letmein123" } });
    expect(weakReset.status).toBe(400);
    expect(weakReset.json.message).toBe("password is too weak");
  });
});

describe("bad input", () => {
  test("verify_email: malformed, overlong, unknown, reset-purpose tokens are one 400 that writes nothing", async () => {
    const before = (await sql`select count(*)::int as n from auth.account_events`)[0]!.n;
    for (const token of [null, "", "short", "a".repeat(43), "b".repeat(101), "c".repeat(10_000), 7, ["x"]]) {
      const result = await call("/rpc/verify_email", { body: { token } });
      expect(result.status).toBe(400);
      expect(Object.keys(result.json).sort()).toEqual(["code", "details", "hint", "message"]);
    }
    expect((await sql`select count(*)::int as n from auth.account_events`)[0]!.n).toBe(before);
  });

  test("change_password: an overlong new password is a 400 and the password stays", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    const [hash] = await sql`select password_hash from auth.users where email = ${user.email}`;
    const result = await call("/rpc/change_password", { token: tokens.access_token, body: { current_password: user.password, new_password: `${STRONG()}${"é".repeat(40)}` } });
    expect(result.status).toBe(400);
    expect(result.json.message).toBe("password is too long");
    expect((await sql`select password_hash from auth.users where email = ${user.email}`)[0]).toEqual(hash);
  });
});
