// Bearer tokens the API must refuse before anything reaches the database, with PostgREST's
// exact status, body and WWW-Authenticate header.
import { describe, expect, test } from "bun:test";
import { decodeJwt } from "jose";
import { testStack } from "../support/stack";
import { call, mintToken, pgrstError, signedInUser } from "./helpers";

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

async function expectRefused(token: string, code: string, message: string, details: string | null = null) {
  const result = await call("/rpc/me", { token });
  expect(result.status).toBe(401);
  expect(result.json).toEqual(pgrstError(code, message, details));
  expect(result.headers.get("www-authenticate")).toBe(`Bearer error="invalid_token", error_description="${message}"`);
}

const secretKnown = Boolean(testStack().jwtSecret);

describe("bad bearer tokens", () => {
  test("tampered payload (signature no longer matches)", async () => {
    const user = await signedInUser();
    const [header, , signature] = user.access_token.split(".");
    const claims = decodeJwt(user.access_token);
    const tampered = `${header}.${b64({ ...claims, sub: crypto.randomUUID() })}.${signature}`;
    await expectRefused(tampered, "PGRST301", "No suitable key or wrong key type", "None of the keys was able to decode the JWT");
  });

  test("alg: none", async () => {
    const user = await signedInUser();
    const unsigned = `${b64({ alg: "none", typ: "JWT" })}.${b64(decodeJwt(user.access_token))}.`;
    await expectRefused(unsigned, "PGRST301", "Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'");
  });

  test("wrong secret", async () => {
    const user = await signedInUser();
    const forged = await mintToken(decodeJwt(user.access_token), { secret: "x".repeat(48) });
    await expectRefused(forged, "PGRST301", "No suitable key or wrong key type", "None of the keys was able to decode the JWT");
  });

  test("empty token and wrong number of parts", async () => {
    const empty = await call("/rpc/me", { headers: { Authorization: "Bearer " } });
    expect(empty.status).toBe(401);
    expect(empty.json).toEqual(pgrstError("PGRST301", "Empty JWT is sent in Authorization header"));
    await expectRefused("abc.def", "PGRST301", "Expected 3 parts in JWT; got 2");
    await expectRefused("quifquirndsjagnrgniur.fonvoienqhhdj.iuqvnvhojah", "PGRST301", "JWT cryptographic operation failed");
  });

  test.skipIf(!secretKnown)("expired (beyond PostgREST's 30 s clock skew) [needs PGRST_JWT_SECRET with API_URL]", async () => {
    const user = await signedInUser();
    const now = Math.floor(Date.now() / 1000);
    const expired = await mintToken({ ...decodeJwt(user.access_token), iat: now - 7200, exp: now - 3600 });
    await expectRefused(expired, "PGRST303", "JWT expired");
  });

  test.skipIf(!secretKnown || !testStack().jwtAudience)("wrong audience [needs PGRST_JWT_SECRET and PGRST_JWT_AUD with API_URL]", async () => {
    const user = await signedInUser();
    const other = await mintToken({ ...decodeJwt(user.access_token), aud: "somebody-else" });
    await expectRefused(other, "PGRST303", "JWT not in audience");
  });

  test.skipIf(!secretKnown)("exp that is not a number [needs PGRST_JWT_SECRET with API_URL]", async () => {
    const user = await signedInUser();
    const odd = await mintToken({ ...decodeJwt(user.access_token), exp: "tomorrow" });
    await expectRefused(odd, "PGRST303", "The JWT 'exp' claim must be a number");
  });

  test.skipIf(!secretKnown)("HS512 with the right secret passes, as PostgREST accepts it [needs PGRST_JWT_SECRET with API_URL]", async () => {
    const user = await signedInUser();
    const hs512 = await mintToken(decodeJwt(user.access_token), { alg: "HS512" });
    expect((await call("/rpc/me", { token: hs512 })).status).toBe(200);
  });

  test("a valid token passes", async () => {
    const user = await signedInUser();
    expect((await call("/rpc/me", { token: user.access_token })).status).toBe(200);
  });
});
