import * as client from "openid-client";
import postgres from "postgres";
import { gatewayError, gatewayErrors, relayedError, type ApiError } from "../errors";
import type { Limit } from "../rate-limit";
import type { RedisLink } from "../redis";
import { isLoopback, type OidcConfig, type OidcProviderConfig } from "../../config/oidc";
import { MemoryFlowStore, RedisFlowStore, type FlowStore } from "./flow-store";
import { IdentityRefused, identityOf, type IdClaims } from "./identity";

/** How long a started sign-in may take at the provider. */
const STATE_TTL_SECONDS = 600;
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

const NO_STORE = { "Cache-Control": "no-store" };

export const oidcErrors = {
  unknownProvider: (name: string | null) =>
    gatewayError("AA310", { details: name ? `no provider named "${name.slice(0, 64)}"` : "provider is required", headers: NO_STORE }),
  redirectNotAllowed: () => gatewayError("AA311", { headers: NO_STORE }),
  badChallenge: () => gatewayError("AA312", { headers: NO_STORE }),
  unknownState: () => gatewayError("AA313", { headers: NO_STORE }),
  providerError: (error: string, description: string | null) =>
    gatewayError("AA314", { details: `${error.slice(0, 64)}${description ? `: ${description.slice(0, 200)}` : ""}`, headers: NO_STORE }),
  notVerified: (details: string) => gatewayError("AA315", { details: details.slice(0, 300), headers: NO_STORE }),
  identityRefused: (refused: IdentityRefused) =>
    gatewayError(refused.status === 403 ? "AA317" : "AA316", { params: { reason: refused.message }, details: refused.details, headers: NO_STORE }),
  providerUnavailable: (details: string) => gatewayError("AA010", { details: details.slice(0, 300), headers: NO_STORE }),
  storeUnavailable: () => gatewayError("AA011", { details: "Redis is unreachable", headers: NO_STORE }),
};

interface Deps {
  oidc: OidcConfig;
  /** RATE_LIMIT_IP_*: each /auth/authorize keeps state for 10 minutes, so it is limited per client address. */
  perAddress: Limit;
  sql: postgres.Sql;
  redis?: RedisLink;
  log: (event: Record<string, unknown>) => void;
}

/**
 * GET /auth/authorize and GET /auth/callback: the authorization code flow with PKCE, state and
 * nonce (openid-client), ending in a one-time code for api.exchange_auth_code.
 */
export class OidcRoutes {
  private readonly store: FlowStore;
  private readonly discovered = new Map<string, Promise<client.Configuration>>();

  constructor(private readonly deps: Deps) {
    this.store = deps.redis ? new RedisFlowStore(deps.redis) : new MemoryFlowStore();
  }

  async authorize(request: Request, clientIp?: string): Promise<Response> {
    if (clientIp) await this.deps.perAddress.consume(`oidc:${clientIp}`);
    const params = new URL(request.url).searchParams;
    const provider = this.provider(params.get("provider"));
    const redirectTo = allowedRedirect(params.get("redirect_to"), this.deps.oidc.redirectAllowlist);
    if (!redirectTo) throw oidcErrors.redirectNotAllowed();
    const appCodeChallenge = params.get("code_challenge") ?? "";
    if (!S256_CHALLENGE.test(appCodeChallenge) || params.get("code_challenge_method") !== "S256") throw oidcErrors.badChallenge();

    const config = await this.configuration(provider);
    const state = client.randomState();
    const nonce = client.randomNonce();
    const codeVerifier = client.randomPKCECodeVerifier();
    const callbackUrl = this.deps.oidc.callbackUrl ?? `${new URL(request.url).origin}/auth/callback`;
    await this.store.put(state, { provider: provider.name, codeVerifier, nonce, redirectTo, appCodeChallenge, callbackUrl }, STATE_TTL_SECONDS).catch(() => {
      throw oidcErrors.storeUnavailable();
    });
    const target = client.buildAuthorizationUrl(config, {
      redirect_uri: callbackUrl,
      scope: provider.scopes.join(" "),
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    return redirect(target.href);
  }

  async callback(request: Request): Promise<Response> {
    const params = new URL(request.url).searchParams;
    const state = params.get("state");
    const pending = state
      ? await this.store.take(state).catch(() => {
          throw oidcErrors.storeUnavailable();
        })
      : undefined;
    if (!state || !pending) throw oidcErrors.unknownState();
    const provider = this.provider(pending.provider);
    const error = params.get("error");
    if (error) throw oidcErrors.providerError(error, params.get("error_description"));

    const config = await this.configuration(provider);
    const currentUrl = new URL(pending.callbackUrl);
    currentUrl.search = params.toString();
    let claims: IdClaims;
    try {
      const tokens = await client.authorizationCodeGrant(config, currentUrl, {
        pkceCodeVerifier: pending.codeVerifier,
        expectedState: state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
      });
      claims = tokens.claims() as IdClaims;
    } catch (failure) {
      throw this.grantFailure(provider, failure);
    }

    let identity;
    try {
      identity = identityOf(claims, provider, config.serverMetadata().issuer);
    } catch (refused) {
      if (refused instanceof IdentityRefused) {
        throw oidcErrors.identityRefused(refused);
      }
      throw refused;
    }

    const code = await this.signIn(provider, identity, pending.appCodeChallenge);
    const target = new URL(pending.redirectTo);
    target.searchParams.set("code", code);
    return redirect(target.href);
  }

  private provider(name: string | null): OidcProviderConfig {
    const found = name ? this.deps.oidc.providers.find((p) => p.name === name) : undefined;
    if (!found) throw oidcErrors.unknownProvider(name);
    return found;
  }

  /** Discovery once per provider (again after a failure). */
  private configuration(provider: OidcProviderConfig): Promise<client.Configuration> {
    let found = this.discovered.get(provider.name);
    if (!found) {
      const issuer = new URL(provider.issuer);
      const insecure = issuer.protocol === "http:" && isLoopback(issuer.hostname);
      // enableNonRepudiationChecks: the ID token's signature is checked against the provider's
      // JWKS too (openid-client skips it by default for tokens from the token endpoint, as OIDC allows).
      const execute = insecure ? [client.allowInsecureRequests, client.enableNonRepudiationChecks] : [client.enableNonRepudiationChecks];
      found = client
        .discovery(issuer, provider.clientId, provider.clientSecret, undefined, { execute, timeout: 10 })
        .catch((failure: unknown) => {
          this.discovered.delete(provider.name);
          const message = failure instanceof Error ? failure.message : String(failure);
          this.deps.log({ event: "oidc_discovery_failed", provider: provider.name, error: message });
          throw oidcErrors.providerUnavailable(`discovery of ${provider.issuer} failed: ${message}`);
        });
      this.discovered.set(provider.name, found);
    }
    return found;
  }

  private grantFailure(provider: OidcProviderConfig, failure: unknown): ApiError {
    const message = failure instanceof Error ? failure.message : String(failure);
    const cause = failure instanceof Error ? (failure.cause as { code?: string } | undefined) : undefined;
    this.deps.log({ event: "oidc_callback_refused", provider: provider.name, error: message });
    if (failure instanceof TypeError && /fetch|connect/i.test(message)) return oidcErrors.providerUnavailable(message);
    if (cause?.code === "ECONNREFUSED") return oidcErrors.providerUnavailable(message);
    return oidcErrors.notVerified(message);
  }

  /** gateway.sign_in_with_identity, as auth_gateway: the only role that may run it. */
  private async signIn(provider: OidcProviderConfig, identity: ReturnType<typeof identityOf>, challenge: string): Promise<string> {
    try {
      const [row] = await this.deps.sql.begin(async (tx) => {
        await tx`set local role auth_gateway`;
        return tx`select gateway.sign_in_with_identity(
          ${provider.name}, ${identity.subject}, ${identity.tenantId}, ${identity.email}, ${identity.emailVerified},
          ${identity.firstName}, ${identity.lastName}, ${challenge}, ${this.deps.oidc.linkByEmail}) as r`;
      });
      const answer = (typeof row?.r === "string" ? JSON.parse(row.r) : row?.r) as { auth_code?: string } | undefined;
      if (!answer?.auth_code) throw new Error("no auth_code in the answer");
      return answer.auth_code;
    } catch (failure) {
      if (failure instanceof postgres.PostgresError) {
        const custom = /^PT([1-5][0-9]{2})$/.exec(failure.code);
        // 23505: a parallel first sign-in of the same identity or email won the race.
        const status = custom ? Number(custom[1]) : failure.code === "22023" ? 400 : failure.code === "23505" ? 409 : 500;
        if (status < 500) throw relayedError(status, { code: failure.code, message: failure.message, hint: failure.hint ?? null }, NO_STORE);
      }
      throw failure;
    }
  }
}

/** redirect_to when an AUTH_REDIRECT_ALLOWLIST entry allows it: same URL (query aside), or a "prefix*" of it. */
export function allowedRedirect(raw: string | null, allowlist: string[]): string | undefined {
  if (!raw) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username || url.password || url.hash) return undefined;
  for (const entry of allowlist) {
    const prefix = entry.endsWith("*");
    let allowed: URL;
    try {
      allowed = new URL(prefix ? entry.slice(0, -1) : entry);
    } catch {
      continue;
    }
    if (allowed.origin !== url.origin) continue;
    if (prefix ? url.href.startsWith(allowed.href) : allowed.pathname === url.pathname) return url.href;
  }
  return undefined;
}

function redirect(location: string): Response {
  return new Response(null, { status: 302, headers: { Location: location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer" } });
}
