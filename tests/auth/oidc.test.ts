// OpenID Connect sign-in end to end, against a real OpenID Provider (oidc-provider) on a free
// port: authorize → the provider's login and consent → callback → exchange_auth_code → me.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { decodeJwt, generateKeyPair, importJWK, SignJWT } from "jose";
import postgres from "postgres";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { freePort } from "../../api/src/stack/free-port";
import { startDevProvider, type DevProvider } from "../../api/src/stack/oidc-dev-provider";
import { call, newUser, signUp } from "../api/helpers";
import { testStack } from "../support/stack";

const canStartInstances = Boolean(testStack().apiEnv);
const SKIP_REASON = "[starts its own API instance and OpenID provider: not with API_URL]";
const APP = "https://app.example.com/signed-in";
const TENANT = randomUUID();
const OTHER_TENANT = randomUUID();

let op: DevProvider;
let api: RunningApi;
let base: string;
/** A second instance with AUTH_OIDC_LINK_BY_EMAIL=false. */
let noLinkApi: RunningApi;
let noLinkBase: string;
const admin = postgres(testStack().databaseUrl, { max: 2, onnotice: () => {} });

beforeAll(async () => {
  if (!canStartInstances) return;
  const port = await freePort();
  const callback = `http://127.0.0.1:${port}/auth/callback`;
  const noLinkPort = await freePort();
  const noLinkCallback = `http://127.0.0.1:${noLinkPort}/auth/callback`;
  op = await startDevProvider({
    clients: [
      { client_id: "autoaudit-api", client_secret: "generic-secret", redirect_uris: [callback, noLinkCallback] },
      { client_id: "autoaudit-entra", client_secret: "entra-secret", redirect_uris: [callback] },
    ],
  });
  const env = {
    ...testStack().apiEnv!,
    PORT: String(port),
    AUTH_OIDC_CALLBACK_URL: callback,
    AUTH_REDIRECT_ALLOWLIST: `${APP},https://app.example.com/deep/*`,
    AUTH_OIDC_PROVIDERS: JSON.stringify([
      { name: "local", issuer: op.issuer, client_id: "autoaudit-api" },
      // The Entra preset on the local provider: tid/oid identity and the tenant allowlist.
      { name: "entra", preset: "entra", tenant: "organizations", allowed_tenants: [TENANT], issuer: op.issuer, client_id: "autoaudit-entra" },
    ]),
    AUTH_OIDC_LOCAL_CLIENT_SECRET: "generic-secret",
    AUTH_OIDC_ENTRA_CLIENT_SECRET: "entra-secret",
  };
  api = await startApi(loadConfig(env), () => {});
  base = api.url;
  const noLinkEnv = { ...env, PORT: String(noLinkPort), AUTH_OIDC_CALLBACK_URL: noLinkCallback, AUTH_OIDC_LINK_BY_EMAIL: "false" };
  noLinkApi = await startApi(loadConfig(noLinkEnv), () => {});
  noLinkBase = noLinkApi.url;
}, 30_000);

afterAll(async () => {
  await api?.stop();
  await noLinkApi?.stop();
  await op?.close();
  await admin.end();
});

// ── the flow, driven over HTTP with a cookie jar and redirects followed by hand ──────────────

function pkce() {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

interface Flow {
  /** The provider's redirect to our /auth/callback (code, state, iss). */
  callbackUrl: URL;
  verifier: string;
}

/** authorize → provider login (as `login`) and consent → the URL the provider sends back to /auth/callback. */
async function toCallback(provider: string, login: string, redirectTo = APP, apiBase = base, abort = false): Promise<Flow> {
  const { verifier, challenge } = pkce();
  const query = new URLSearchParams({ provider, redirect_to: redirectTo, code_challenge: challenge, code_challenge_method: "S256" });
  const start = await fetch(`${apiBase}/auth/authorize?${query}`, { redirect: "manual" });
  expect(start.status).toBe(302);
  const jar = new Map<string, string>();
  let url = new URL(start.headers.get("location")!);
  expect(url.origin).toBe(op.issuer);
  let interactions = 0;
  for (let hop = 0; hop < 20; hop++) {
    let response: Response;
    if (url.pathname.startsWith("/interaction/") && abort) {
      response = await fetch(`${url.href}/abort`, { redirect: "manual", headers: { cookie: cookies(jar) } });
    } else if (url.pathname.startsWith("/interaction/")) {
      // devInteractions: first the login, then the consent.
      const form: Record<string, string> = interactions++ === 0 ? { prompt: "login", login, password: "any" } : { prompt: "consent" };
      response = await fetch(url, {
        method: "POST",
        redirect: "manual",
        headers: { "content-type": "application/x-www-form-urlencoded", cookie: cookies(jar) },
        body: new URLSearchParams(form),
      });
    } else {
      response = await fetch(url, { redirect: "manual", headers: { cookie: cookies(jar) } });
    }
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair!.indexOf("=");
      const name = pair!.slice(0, at).trim();
      const value = pair!.slice(at + 1).trim();
      if (value === "" || /expires=Thu, 01 Jan 1970/i.test(line)) jar.delete(name);
      else jar.set(name, value);
    }
    const location = response.headers.get("location");
    if (!location) throw new Error(`the provider stopped at ${url.pathname} with ${response.status}: ${(await response.text()).slice(0, 300)}`);
    url = new URL(location, url);
    if (url.href.startsWith(`${apiBase}/auth/callback`)) return { callbackUrl: url, verifier };
  }
  throw new Error("too many redirects");
}

const cookies = (jar: Map<string, string>) => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");

async function getCallback(url: URL | string) {
  const response = await fetch(url, { redirect: "manual" });
  const text = await response.text();
  return { status: response.status, location: response.headers.get("location"), json: text ? safeJson(text) : undefined };
}

const safeJson = (text: string) => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** The whole flow up to the app's one-time code. */
async function signInWith(provider: string, login: string, apiBase = base) {
  const flow = await toCallback(provider, login, APP, apiBase);
  const answer = await getCallback(flow.callbackUrl);
  if (answer.status !== 302) return { ...answer, code: undefined, verifier: flow.verifier };
  const target = new URL(answer.location!);
  expect(target.origin + target.pathname).toBe(APP);
  return { ...answer, code: target.searchParams.get("code")!, verifier: flow.verifier };
}

const exchange = (auth_code: string, code_verifier: string) => call("/rpc/exchange_auth_code", { base, body: { auth_code, code_verifier } });

async function fullSignIn(provider: string, login: string) {
  const signed = await signInWith(provider, login);
  expect(signed.status).toBe(302);
  const tokens = await exchange(signed.code!, signed.verifier);
  expect(tokens.status).toBe(200);
  return tokens.json as { access_token: string; refresh_token: string; user: { id: string; email: string } };
}

function account(claims: Record<string, unknown>): string {
  const login = `login-${randomUUID()}`;
  op.accounts.set(login, claims);
  return login;
}

async function counts() {
  const [row] = await admin`select (select count(*) from auth.users)::int as users, (select count(*) from auth.sessions)::int as sessions,
                                   (select count(*) from auth.identities)::int as identities`;
  return row!;
}

const email = (tag: string) => `${tag}-${randomUUID()}@example.com`;

function expectError(result: { status: number; json?: any }, status: number, code?: string) {
  expect(result.status).toBe(status);
  expect(Object.keys(result.json ?? {}).sort()).toEqual(["code", "details", "hint", "message"]);
  if (code) expect(result.json.code).toBe(code);
}

// ── the tests ───────────────────────────────────────────────────────────────────────────────

describe.skipIf(!canStartInstances)(`OpenID Connect sign-in ${canStartInstances ? "" : SKIP_REASON}`, () => {
  test("a new identity creates the account; the exchange answers a session as sign_in does, amr naming the provider", async () => {
    const address = email("new");
    const login = account({ email: address, email_verified: true, given_name: "Grace", family_name: "Hopper" });
    const tokens = await fullSignIn("local", login);
    expect(tokens.user.email).toBe(address);
    const claims = decodeJwt(tokens.access_token);
    expect(claims.role).toBe("authenticated");
    expect(claims.amr).toEqual([{ method: "oidc", provider: "local", timestamp: expect.any(Number) }]);
    const me = await call("/rpc/me", { base, token: tokens.access_token });
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ email: address, first_name: "Grace", last_name: "Hopper" });
    const identities = await call("/rpc/my_identities", { base, token: tokens.access_token });
    expect(identities.json).toEqual([expect.objectContaining({ provider: "local", tenant_id: null, email: address, email_verified: true })]);
    // The refresh token is a normal one.
    expect((await call("/rpc/issue_token", { base, body: { refresh_token: tokens.refresh_token } })).status).toBe(200);
    // The account has no password: sign_in refuses as for a wrong one.
    expect((await call("/rpc/sign_in", { base, body: { email: address, password: "anything-at-all" } })).status).toBe(401);

    // Signing in again with the same identity opens a new session on the same account.
    const again = await fullSignIn("local", login);
    expect(again.user.id).toBe(tokens.user.id);
    expect(decodeJwt(again.access_token).sid).not.toBe(claims.sid);
  });

  test("a second identity with the same verified email is linked to the account an identity verified", async () => {
    const address = email("link");
    const first = await fullSignIn("local", account({ email: address, email_verified: true }));
    const second = await fullSignIn("local", account({ email: address, email_verified: true }));
    expect(second.user.id).toBe(first.user.id);
    const identities = await call("/rpc/my_identities", { base, token: second.access_token });
    expect(identities.json).toHaveLength(2);
  });

  test("a password account is linked only once its own address is verified", async () => {
    const user = { ...newUser(), email: email("password") };
    const created = (await signUp(user, base)).json;
    const login = account({ email: user.email, email_verified: true });
    const [column] = await admin`select 1 from information_schema.columns where table_schema = 'auth' and table_name = 'users' and column_name = 'email_verified_at'`;
    const before = await counts();
    const refused = await signInWith("local", login);
    expectError(refused, 409, "PT409");
    expect(await counts()).toEqual(before);
    if (!column) return; // the account features add auth.users.email_verified_at
    await admin.unsafe("update auth.users set email_verified_at = now() where id = $1", [created.id]);
    const linked = await fullSignIn("local", login);
    expect(linked.user.id).toBe(created.id);
  });

  test("AUTH_OIDC_LINK_BY_EMAIL=false: a new identity never joins an existing account", async () => {
    const address = email("nolink");
    const firstLogin = account({ email: address, email_verified: true });
    const first = await fullSignIn("local", firstLogin);
    const before = await counts();
    expectError(await signInWith("local", account({ email: address, email_verified: true }), noLinkBase), 409, "PT409");
    expect(await counts()).toEqual(before);
    // A known identity still signs in there.
    const known = await signInWith("local", firstLogin, noLinkBase);
    expect(known.status).toBe(302);
    const tokens = await call("/rpc/exchange_auth_code", { base: noLinkBase, body: { auth_code: known.code, code_verifier: known.verifier } });
    expect(tokens.json.user.id).toBe(first.user.id);
  });

  test("an unverified email neither links nor creates an account", async () => {
    const user = { ...newUser(), email: email("unverified") };
    await signUp(user, base);
    const before = await counts();
    for (const claims of [{ email: user.email, email_verified: false }, { email: email("fresh"), email_verified: false }, {}]) {
      const refused = await signInWith("local", account(claims));
      expectError(refused, 403, "PT403");
    }
    expect(await counts()).toEqual(before);
  });

  test("Entra preset: (tid, oid) is the identity, the tenant must be allowed, email only when xms_edov says verified", async () => {
    const oid = randomUUID();
    const address = email("entra");
    const tokens = await fullSignIn("entra", account({ tid: TENANT, oid, email: address, xms_edov: true, name: "Ada King Lovelace" }));
    expect(decodeJwt(tokens.access_token).amr).toEqual([{ method: "oidc", provider: "entra", timestamp: expect.any(Number) }]);
    const [identity] = await admin`select subject, tenant_id, email_verified from auth.identities where user_id = ${tokens.user.id}`;
    expect(identity).toEqual({ subject: oid, tenant_id: TENANT, email_verified: true });
    const me = (await call("/rpc/me", { base, token: tokens.access_token })).json;
    expect(me).toMatchObject({ first_name: "Ada", last_name: "King Lovelace" });
    // Same oid and tenant, another sub (Entra's sub is pairwise): the same account.
    const again = await fullSignIn("entra", account({ tid: TENANT, oid, email: address, xms_edov: true }));
    expect(again.user.id).toBe(tokens.user.id);

    const before = await counts();
    expectError(await signInWith("entra", account({ tid: OTHER_TENANT, oid: randomUUID(), email: email("foreign"), xms_edov: true })), 403, "AA317");
    // Without xms_edov, Entra's email claim is not a verified address.
    expectError(await signInWith("entra", account({ tid: TENANT, oid: randomUUID(), email: email("edov"), email_verified: true })), 403, "PT403");
    expectError(await signInWith("entra", account({ tid: TENANT, email: email("no-oid"), xms_edov: true })), 401, "AA316");
    expect(await counts()).toEqual(before);
  });

  test("the code is single use, expires, and needs the verifier of the challenge sent to /auth/authorize", async () => {
    const signed = await signInWith("local", account({ email: email("code"), email_verified: true }));
    const before = await counts();
    expectError(await exchange(signed.code!, pkce().verifier), 401, "PT401");
    expectError(await exchange(signed.code!, "short"), 400, "22023");
    expectError(await exchange("not-a-code", signed.verifier), 401, "PT401");
    expect(await counts()).toEqual(before);
    // A wrong verifier does not spend the code; the right one does, once.
    expect((await exchange(signed.code!, signed.verifier)).status).toBe(200);
    const sessions = (await counts()).sessions;
    expectError(await exchange(signed.code!, signed.verifier), 401, "PT401");

    const late = await signInWith("local", account({ email: email("late"), email_verified: true }));
    await admin`update auth.identity_auth_codes set expires_at = now() - interval '1 second' where code_hash = sha256(convert_to(${late.code!}, 'UTF8'))`;
    expectError(await exchange(late.code!, late.verifier), 401, "PT401");
    expect((await counts()).sessions).toBe(sessions);
  });

  test("missing, foreign or replayed state is refused; so is an answer whose nonce is not ours", async () => {
    const before = await counts();
    const flow = await toCallback("local", account({ email: email("state"), email_verified: true }));
    const foreign = new URL(flow.callbackUrl);
    foreign.searchParams.set("state", randomBytes(32).toString("base64url"));
    expectError(await getCallback(foreign), 400, "AA313");
    const missing = new URL(flow.callbackUrl);
    missing.searchParams.delete("state");
    expectError(await getCallback(missing), 400, "AA313");
    expectError(await getCallback(`${base}/auth/callback`), 400, "AA313");
    // The real answer still works once, then its state is spent.
    expect((await getCallback(flow.callbackUrl)).status).toBe(302);
    expectError(await getCallback(flow.callbackUrl), 400, "AA313");
    const afterGood = await counts();
    expect(afterGood.users).toBe(before.users + 1);

    // The provider's own key signs an ID token for another nonce: openid-client refuses it.
    const key = await importJWK(op.signingKey, "RS256");
    op.tamperIdToken = (idToken) => new SignJWT({ ...decodeJwt(idToken), nonce: "someone-elses" }).setProtectedHeader({ alg: "RS256", kid: op.signingKey.kid }).sign(key);
    try {
      expectError(await signInWith("local", account({ email: email("nonce"), email_verified: true })), 401, "AA315");
    } finally {
      op.tamperIdToken = undefined;
    }
    expect(await counts()).toEqual(afterGood);
  });

  test("the provider's error answer (the user aborted) is a 400 and spends the state", async () => {
    const before = await counts();
    const flow = await toCallback("local", account({ email: email("abort"), email_verified: true }), APP, base, true);
    expect(flow.callbackUrl.searchParams.get("error")).toBe("access_denied");
    const refused = await getCallback(flow.callbackUrl);
    expectError(refused, 400, "AA314");
    expect(refused.json.details).toContain("access_denied");
    expectError(await getCallback(flow.callbackUrl), 400, "AA313");
    expect(await counts()).toEqual(before);
  });

  test("/auth/authorize is limited per client address (RATE_LIMIT_IP_*)", async () => {
    const env = { ...testStack().apiEnv!, RATE_LIMIT_IP_MAX: "2", RATE_LIMIT_IP_WINDOW_SECONDS: "60", TRUST_PROXY: "true" };
    const limited = await startApi(loadConfig(env), () => {});
    try {
      const address = `203.0.113.${Math.floor(Math.random() * 250) + 1}, 198.51.100.${Math.floor(Math.random() * 250) + 1}`;
      const headers = { "X-Forwarded-For": address };
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await call("/auth/authorize?provider=nope", { base: limited.url, headers })).status);
      expect(statuses).toEqual([400, 400, 429]);
    } finally {
      await limited.stop();
    }
  });

  test("tampered ID tokens are refused: another key, another audience, expired, another issuer", async () => {
    const key = await importJWK(op.signingKey, "RS256");
    const { privateKey: stranger } = await generateKeyPair("RS256");
    const resign = (change: (claims: Record<string, unknown>) => Record<string, unknown>, signer: CryptoKey | Uint8Array = key as CryptoKey) =>
      (idToken: string) => new SignJWT(change(decodeJwt(idToken) as Record<string, unknown>)).setProtectedHeader({ alg: "RS256", kid: op.signingKey.kid }).sign(signer);
    const now = Math.floor(Date.now() / 1000);
    const tampers = [
      resign((c) => c, stranger),
      resign((c) => ({ ...c, aud: "someone-else" })),
      resign((c) => ({ ...c, iat: now - 7200, exp: now - 3600 })),
      resign((c) => ({ ...c, iss: "http://127.0.0.1:1" })),
      (idToken: string) => idToken.slice(0, -4) + (idToken.endsWith("AAAA") ? "BBBB" : "AAAA"),
    ];
    const before = await counts();
    try {
      for (const [index, tamper] of tampers.entries()) {
        op.tamperIdToken = tamper;
        const answer = await signInWith("local", account({ email: email("tampered"), email_verified: true }));
        expect({ index, status: answer.status }).toEqual({ index, status: 401 });
        expectError(answer, 401, "AA315");
      }
    } finally {
      op.tamperIdToken = undefined;
    }
    expect(await counts()).toEqual(before);
  });

  test("/auth/authorize refuses unknown providers, redirects off the allowlist and missing PKCE", async () => {
    const { challenge } = pkce();
    const authorize = (params: Record<string, string>) =>
      call(`/auth/authorize?${new URLSearchParams({ provider: "local", redirect_to: APP, code_challenge: challenge, code_challenge_method: "S256", ...params })}`, { base });
    expectError(await authorize({ provider: "nope" }), 400, "AA310");
    for (const target of [
      "https://evil.example/signed-in",
      "https://app.example.com.evil.example/signed-in",
      "https://user@app.example.com/signed-in",
      "https://app.example.com/other",
      "//evil.example/signed-in",
      "javascript:alert(1)",
      "https://app.example.com/deep-evil",
    ]) {
      expectError(await authorize({ redirect_to: target }), 400, "AA311");
    }
    expect((await fetch(`${base}/auth/authorize?${new URLSearchParams({ provider: "local", redirect_to: "https://app.example.com/deep/x?y=1", code_challenge: challenge, code_challenge_method: "S256" })}`, { redirect: "manual" })).status).toBe(302);
    expectError(await authorize({ code_challenge_method: "plain" }), 400, "AA312");
    expectError(await authorize({ code_challenge: "short" }), 400, "AA312");
  });

  test("unlink_identity refuses to remove the last way to sign in", async () => {
    const address = email("unlink");
    const first = await fullSignIn("local", account({ email: address, email_verified: true }));
    const [only] = (await call("/rpc/my_identities", { base, token: first.access_token })).json;
    expectError(await call("/rpc/unlink_identity", { base, token: first.access_token, body: { id: only.id } }), 409, "PT409");
    expectError(await call("/rpc/unlink_identity", { base, token: first.access_token, body: { id: randomUUID() } }), 404, "PT404");
    await fullSignIn("local", account({ email: address, email_verified: true }));
    const unlinked = await call("/rpc/unlink_identity", { base, token: first.access_token, body: { id: only.id } });
    expect(unlinked.status).toBe(200);
    expect((await call("/rpc/my_identities", { base, token: first.access_token })).json).toHaveLength(1);
    expect((await call("/rpc/unlink_identity", { base, body: { id: only.id } })).status).toBe(401);
  });

  test("the session-opening function is the gateway's only: not over /rpc, not for anon or authenticated", async () => {
    const args = { provider: "local", subject: "x", tenant_id: null, email: "x@example.com", email_verified: true, first_name: "A", last_name: "B", code_challenge: pkce().challenge, link_by_email: true };
    expect((await call("/rpc/sign_in_with_identity", { base, body: args })).status).toBe(404);
    expect((await call("/rpc/sign_in_with_identity", { base, body: args, headers: { "Content-Profile": "gateway" } })).status).toBe(406);
    for (const role of ["anon", "authenticated", "authenticator"]) {
      const [row] = await admin`select has_function_privilege(${role}, 'gateway.sign_in_with_identity(text, text, text, text, boolean, text, text, text, boolean)', 'execute') as can,
                                       has_schema_privilege(${role}, 'gateway', 'usage') as schema`;
      expect(row).toEqual({ can: false, schema: false });
    }
    const [gateway] = await admin`select has_function_privilege('auth_gateway', 'gateway.sign_in_with_identity(text, text, text, text, boolean, text, text, text, boolean)', 'execute') as can`;
    expect(gateway!.can).toBe(true);
    // POST only, like the other auth functions.
    expect((await call(`/rpc/exchange_auth_code?auth_code=x&code_verifier=${"a".repeat(43)}`, { base })).status).toBe(405);
  });
});
