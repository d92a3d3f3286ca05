// The rules the gateway applies on top of openid-client: Entra's issuer per tenant and tenant
// allowlist, which claims make an identity, the redirect allowlist and the provider settings.
// (Microsoft itself cannot be reached from the tests: oidc.test.ts runs the Entra preset end to
// end against the local provider emitting tid/oid.)
import { describe, expect, test } from "bun:test";
import { decodeJwt } from "jose";
import { loadConfig } from "../../api/src/config";
import { loadOidcConfig, type OidcProviderConfig } from "../../api/src/config";
import { checkEntraClaims, IdentityRefused, identityOf } from "../../api/src/gateway/oidc/identity";
import { MemoryFlowStore } from "../../api/src/gateway/oidc/flow-store";
import { allowedRedirect } from "../../api/src/gateway/oidc/routes";
import { signedInUser } from "../api/helpers";

const TID = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER = "9188040d-6c67-4c5b-b112-36a304b66dad";
const TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0";
const entra = (allowedTenants: string[], useUpnAsEmail = false): OidcProviderConfig => ({
  name: "microsoft", preset: "entra", issuer: "https://login.microsoftonline.com/organizations/v2.0", clientId: "c", scopes: ["openid"],
  entra: { tenant: "organizations", allowedTenants, useUpnAsEmail },
});
const claims = (extra: Record<string, unknown>) => ({ iss: `https://login.microsoftonline.com/${TID}/v2.0`, sub: "pairwise", tid: TID, oid: "0b6f7c4e-0000-4000-8000-000000000001", ...extra });

function refusal(run: () => unknown): IdentityRefused {
  try {
    run();
  } catch (error) {
    if (error instanceof IdentityRefused) return error;
    throw error;
  }
  throw new Error("not refused");
}

describe("Entra ID", () => {
  test("the issuer must be the template filled with the token's own tenant", () => {
    expect(checkEntraClaims(claims({}), TEMPLATE, entra([TID]).entra!)).toEqual({ tid: TID, oid: "0b6f7c4e-0000-4000-8000-000000000001" });
    // A token of tenant OTHER claiming to be of TID (or the reverse) is refused.
    expect(refusal(() => checkEntraClaims(claims({ iss: `https://login.microsoftonline.com/${OTHER}/v2.0` }), TEMPLATE, entra(["*"]).entra!)).status).toBe(401);
    expect(refusal(() => checkEntraClaims(claims({ iss: "https://login.microsoftonline.com/{tenantid}/v2.0" }), TEMPLATE, entra(["*"]).entra!)).status).toBe(401);
    // A single-tenant authority's issuer has no template: it must match as it is.
    const single = `https://login.microsoftonline.com/${TID}/v2.0`;
    expect(checkEntraClaims(claims({}), single, { tenant: TID, allowedTenants: [TID], useUpnAsEmail: false }).tid).toBe(TID);
    expect(refusal(() => checkEntraClaims(claims({ tid: OTHER, iss: `https://login.microsoftonline.com/${OTHER}/v2.0` }), single, { tenant: TID, allowedTenants: [TID], useUpnAsEmail: false })).status).toBe(401);
  });

  test("only allowed tenants; tid and oid are required", () => {
    expect(refusal(() => checkEntraClaims(claims({}), TEMPLATE, entra([OTHER]).entra!)).status).toBe(403);
    expect(checkEntraClaims(claims({}), TEMPLATE, entra(["*"]).entra!).tid).toBe(TID);
    expect(refusal(() => checkEntraClaims(claims({ oid: undefined }), TEMPLATE, entra(["*"]).entra!)).status).toBe(401);
    expect(refusal(() => checkEntraClaims(claims({ tid: undefined }), TEMPLATE, entra(["*"]).entra!)).status).toBe(401);
  });

  test("the identity is (tid, oid); email only when xms_edov says verified, or the upn when configured", () => {
    const base = claims({ email: "ada@contoso.com", upn: "ada@contoso.onmicrosoft.com", given_name: "Ada", family_name: "Lovelace" });
    expect(identityOf(base, entra([TID]), TEMPLATE)).toEqual({
      subject: "0b6f7c4e-0000-4000-8000-000000000001", tenantId: TID, email: null, emailVerified: false, firstName: "Ada", lastName: "Lovelace",
    });
    expect(identityOf({ ...base, xms_edov: true }, entra([TID]), TEMPLATE)).toMatchObject({ email: "ada@contoso.com", emailVerified: true });
    expect(identityOf({ ...base, email_verified: true }, entra([TID]), TEMPLATE)).toMatchObject({ email: null, emailVerified: false });
    expect(identityOf(base, entra([TID], true), TEMPLATE)).toMatchObject({ email: "ada@contoso.onmicrosoft.com", emailVerified: true });
  });
});

test("generic providers: sub is the identity, email only with email_verified: true", () => {
  const generic: OidcProviderConfig = { name: "acme", preset: "generic", issuer: "https://id.acme.example", clientId: "c", scopes: ["openid"] };
  const id = { iss: "https://id.acme.example", sub: "s-1", email: "a@acme.example", name: "Grace Brewster Hopper" };
  expect(identityOf(id, generic, id.iss)).toEqual({ subject: "s-1", tenantId: null, email: "a@acme.example", emailVerified: false, firstName: "Grace", lastName: "Brewster Hopper" });
  expect(identityOf({ ...id, email_verified: true }, generic, id.iss).emailVerified).toBe(true);
  expect(identityOf({ ...id, email_verified: "true" }, generic, id.iss).emailVerified).toBe(false);
});

test("redirect_to must match AUTH_REDIRECT_ALLOWLIST: same origin, and the same path or a listed prefix", () => {
  const list = ["https://app.example.com/cb", "https://app.example.com/deep/*", "http://localhost:3000/*"];
  expect(allowedRedirect("https://app.example.com/cb?x=1", list)).toBe("https://app.example.com/cb?x=1");
  expect(allowedRedirect("https://app.example.com/deep/a/b", list)).toBe("https://app.example.com/deep/a/b");
  expect(allowedRedirect("http://localhost:3000/anything", list)).toBe("http://localhost:3000/anything");
  for (const bad of [
    null, "", "/cb", "//evil.example/cb", "https://evil.example/cb", "https://app.example.com.evil.example/cb", "https://app.example.com:8443/cb",
    "http://app.example.com/cb", "https://x@app.example.com/cb", "https://app.example.com/cb#frag", "https://app.example.com/deep/../evil",
    "https://app.example.com/deeper", "javascript:alert(1)", "http://localhost:30000/x",
  ]) {
    expect({ bad, allowed: allowedRedirect(bad, list) }).toEqual({ bad, allowed: undefined });
  }
});

test("AUTH_OIDC_PROVIDERS: presets, secrets from the environment, every problem reported", () => {
  const env: Record<string, string> = {
    AUTH_OIDC_PROVIDERS: JSON.stringify([
      { name: "microsoft", preset: "entra", tenant: "organizations", allowed_tenants: [TID.toUpperCase()], client_id: "app" },
      { name: "contoso", preset: "entra", tenant: TID, client_id: "app2", client_secret_env: "CONTOSO_SECRET" },
      { name: "acme", issuer: "https://id.acme.example", client_id: "x", scopes: ["openid", "email"] },
    ]),
    AUTH_OIDC_MICROSOFT_CLIENT_SECRET: "s1",
    CONTOSO_SECRET: "s2",
  };
  const problems: string[] = [];
  const oidc = loadOidcConfig((n) => env[n], (_n, fallback) => fallback, problems);
  expect(problems).toEqual([]);
  expect(oidc.linkByEmail).toBe(true);
  expect(oidc.providers.map((p) => [p.name, p.issuer, p.clientSecret])).toEqual([
    ["microsoft", "https://login.microsoftonline.com/organizations/v2.0", "s1"],
    ["contoso", `https://login.microsoftonline.com/${TID}/v2.0`, "s2"],
    ["acme", "https://id.acme.example", undefined],
  ]);
  expect(oidc.providers[0]!.entra!.allowedTenants).toEqual([TID]);
  expect(oidc.providers[1]!.entra!.allowedTenants).toEqual([TID]);

  const bad = () =>
    loadConfig({
      DATABASE_URL: "postgres://u:p@localhost/db",
      PGRST_JWT_SECRET: "x".repeat(40),
      AUTH_OIDC_PROVIDERS: JSON.stringify([
        { name: "Bad Name", client_id: "x" },
        { name: "ms", preset: "entra", tenant: "organizations", client_id: "x" },
        { name: "plain", issuer: "http://id.example.com", client_id: "x" },
        { name: "noclient", issuer: "https://id.example.com" },
      ]),
      AUTH_REDIRECT_ALLOWLIST: "not a url",
    });
  expect(bad).toThrow(/name must be[\s\S]*allowed_tenants[\s\S]*https URL[\s\S]*client_id is required[\s\S]*AUTH_REDIRECT_ALLOWLIST/);
});

test("sign_in's access token says how the session was opened (amr)", async () => {
  const user = await signedInUser();
  expect(decodeJwt(user.access_token).amr).toEqual([{ method: "password", timestamp: expect.any(Number) }]);
});

test("the in-memory state store hands each state out once, and not after its TTL", async () => {
  const store = new MemoryFlowStore(2);
  const pending = { provider: "p", codeVerifier: "v", nonce: "n", redirectTo: "https://a.example/", appCodeChallenge: "c", callbackUrl: "http://x/auth/callback" };
  await store.put("a", pending, 60);
  expect(await store.take("a")).toEqual(pending);
  expect(await store.take("a")).toBeUndefined();
  await store.put("short", pending, 0.05);
  await Bun.sleep(80);
  expect(await store.take("short")).toBeUndefined();
  // Bounded: the oldest entries make room.
  for (const key of ["1", "2", "3"]) await store.put(key, pending, 60);
  expect(await store.take("1")).toBeUndefined();
  expect(await store.take("3")).toEqual(pending);
});
