// The sign-in lifecycle through the API over HTTP: tokens minted by the gateway, rotation,
// reuse detection and revocations that take effect before the access token expires.
import { describe, expect, test } from "bun:test";
import { decodeJwt } from "jose";
import { testStack } from "../support/stack";
import { call, newUser, pastRefreshGrace, signedInUser, signIn, signUp } from "./helpers";

const REVOKED = {
  code: "AA301",
  details: null,
  hint: "Sign in again.",
  message: "JWT session revoked",
};

describe("the whole flow", () => {
  test("sign up → sign in → me → refresh rotates → reuse revokes → token refused → sign in again", async () => {
    const user = newUser();
    const created = await signUp(user);
    expect(created.json).toMatchObject({ email: user.email, first_name: "Test", last_name: "User" });

    const signedIn = await call("/rpc/sign_in", { body: user });
    expect(signedIn.status).toBe(200);
    expect(signedIn.headers.get("cache-control")).toBe("no-store");
    const first = signedIn.json;
    expect(Object.keys(first)).toEqual(["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_at", "user", "aal", "mfa_required", "factors"]);
    expect(first.token_type).toBe("bearer");
    expect(first.user).toMatchObject({ id: created.json.id, email: user.email });
    const claims = decodeJwt(first.access_token);
    expect(claims).toMatchObject({ sub: created.json.id, role: "authenticated", email: user.email });
    expect(typeof claims.sid).toBe("string");
    expect(claims.exp! - claims.iat!).toBe(first.expires_in);
    if (testStack().jwtAudience) expect(claims.aud).toBe(testStack().jwtAudience);

    const me = await call("/rpc/me", { token: first.access_token });
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ id: created.json.id, email: user.email });

    const rotated = await call("/rpc/issue_token", { body: { refresh_token: first.refresh_token } });
    expect(rotated.status).toBe(200);
    const second = rotated.json;
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(decodeJwt(second.access_token).sid).toBe(claims.sid);
    expect((await call("/rpc/me", { token: second.access_token })).status).toBe(200);

    // The retired refresh token again, after the retry grace: somebody else holds the family → the session is revoked.
    await pastRefreshGrace(first.refresh_token);
    const reuse = await call("/rpc/issue_token", { body: { refresh_token: first.refresh_token } });
    expect(reuse.status).toBe(401);
    expect(reuse.json).toMatchObject({
      code: "PT401",
      message: "refresh token reuse detected; the session was revoked",
      hint: "Sign in again.",
    });
    // details is JSON text (json_build_object's spacing), naming the revoked session
    expect(JSON.parse(reuse.json.details)).toEqual({ session_id: claims.sid });

    for (const token of [first.access_token, second.access_token]) {
      const refused = await call("/rpc/me", { token });
      expect(refused.status).toBe(401);
      expect(refused.json).toEqual(REVOKED);
      expect(refused.headers.get("www-authenticate")).toBe('Bearer error="invalid_token", error_description="JWT session revoked"');
    }
    expect((await call("/rpc/issue_token", { body: { refresh_token: second.refresh_token } })).status).toBe(401);

    const again = await signIn(user);
    expect(decodeJwt(again.access_token).sid).not.toBe(claims.sid);
    expect((await call("/rpc/me", { token: again.access_token })).json).toMatchObject({ id: created.json.id });
  });
});

describe("revocation", () => {
  test("revoke_token answers the session and refuses its access tokens at once", async () => {
    const user = await signedInUser();
    const other = await signIn(user); // a second session of the same user stays usable
    const revoked = await call("/rpc/revoke_token", { body: { refresh_token: user.refresh_token } });
    expect(revoked.status).toBe(200);
    expect(revoked.json).toEqual({ session_id: decodeJwt(user.access_token).sid });
    expect((await call("/rpc/me", { token: user.access_token })).json).toEqual(REVOKED);
    expect((await call("/rpc/me", { token: other.access_token })).status).toBe(200);
  });

  test("revoke_all_tokens refuses every session of the user", async () => {
    const user = await signedInUser();
    const other = await signIn(user);
    const result = await call("/rpc/revoke_all_tokens", { method: "POST", token: other.access_token });
    expect(result.status).toBe(200);
    expect([...result.json.revoked_sessions].sort()).toEqual([decodeJwt(user.access_token).sid, decodeJwt(other.access_token).sid].sort());
    for (const token of [user.access_token, other.access_token]) {
      expect((await call("/rpc/me", { token })).json).toEqual(REVOKED);
    }
  });

  test("a well-signed token for a session that never existed is refused", async () => {
    const user = await signedInUser();
    const claims = decodeJwt(user.access_token);
    const { mintToken } = await import("./helpers");
    const forged = await mintToken({ ...claims, sid: crypto.randomUUID() });
    expect((await call("/rpc/me", { token: forged })).json).toEqual(REVOKED);
  });
});

describe("auth errors keep PostgREST's shape", () => {
  test("wrong password: 401 from the database, relayed unchanged", async () => {
    const user = newUser();
    await signUp(user);
    const result = await call("/rpc/sign_in", { body: { ...user, password: "not-the-password" } });
    expect(result.status).toBe(401);
    expect(result.json).toEqual({ code: "PT401", details: null, hint: null, message: "invalid email or password" });
  });

  test("me without a token: the anonymous role may not run it", async () => {
    const result = await call("/rpc/me");
    expect(result.status).toBe(401);
    expect(result.json.code).toBe("42501");
  });

  test("malformed JSON body: 400 PGRST102", async () => {
    const result = await call("/rpc/sign_in", { body: "{not json" });
    expect(result.status).toBe(400);
    expect(result.json).toEqual({ code: "PGRST102", details: null, hint: null, message: "Empty or invalid json" });
  });

  test("unknown function: PostgREST's 404", async () => {
    const result = await call("/rpc/no_such_function", { body: {} });
    expect(result.status).toBe(404);
    expect(result.json.code).toBe("PGRST202");
  });

  test("sign_up of a taken email: 409 PT409 relayed", async () => {
    const user = newUser();
    await signUp(user);
    const result = await call("/rpc/sign_up", { body: { ...user, first_name: "X", last_name: "Y" } });
    expect(result.status).toBe(409);
    expect(result.json).toEqual({ code: "PT409", details: null, hint: "Sign in instead.", message: "an account with this email already exists" });
  });
});
