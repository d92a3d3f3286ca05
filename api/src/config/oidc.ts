/**
 * OpenID Connect sign-in settings, parsed from the environment by loadConfig (config/api.ts) (README,
 * "Sign in with OpenID Connect").
 *
 * AUTH_OIDC_PROVIDERS is a JSON array, one object per provider:
 *   {"name": "microsoft", "preset": "entra", "tenant": "organizations", "allowed_tenants": ["<tid>"],
 *    "client_id": "…", "client_secret_env": "MICROSOFT_CLIENT_SECRET", "scopes": ["openid", "email", "profile"]}
 *   {"name": "acme", "issuer": "https://id.acme.example", "client_id": "…"}
 * The client secret is never in the list: it is read from the variable `client_secret_env`
 * names (default AUTH_OIDC_<NAME>_CLIENT_SECRET).
 */

export interface OidcProviderConfig {
  name: string;
  preset: "generic" | "entra";
  /** Where discovery starts (`<issuer>/.well-known/openid-configuration`). */
  issuer: string;
  clientId: string;
  clientSecret?: string;
  scopes: string[];
  entra?: {
    /** A tenant id (single-tenant app) or "organizations" (multi-tenant). */
    tenant: string;
    /** The tenants (tid) a multi-tenant app accepts; ["*"] accepts every one. */
    allowedTenants: string[];
    /** Take the upn as the (verified) email when the token has no verified email. */
    useUpnAsEmail: boolean;
  };
}

export interface OidcConfig {
  providers: OidcProviderConfig[];
  /** Allowed redirect_to targets: exact URLs, or prefixes ending with "*". */
  redirectAllowlist: string[];
  /** Link a new identity to an existing account with the same verified email. */
  linkByEmail: boolean;
  /** The redirect_uri registered with the providers; default: this request's origin + /auth/callback. */
  callbackUrl?: string;
  /** `bun run dev` starts a local OpenID provider (tests/support/oidc-provider.ts). */
  devProvider: boolean;
}

const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const TENANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const ENTRA_AUTHORITY = "https://login.microsoftonline.com";

export function loadOidcConfig(
  read: (name: string) => string | undefined,
  bool: (name: string, fallback: boolean) => boolean,
  problems: string[],
): OidcConfig {
  const providers: OidcProviderConfig[] = [];
  const raw = read("AUTH_OIDC_PROVIDERS");
  if (raw !== undefined) {
    let list: unknown;
    try {
      list = JSON.parse(raw);
    } catch {
      problems.push("AUTH_OIDC_PROVIDERS must be a JSON array of providers");
    }
    if (list !== undefined && !Array.isArray(list)) problems.push("AUTH_OIDC_PROVIDERS must be a JSON array of providers");
    for (const [index, item] of (Array.isArray(list) ? list : []).entries()) {
      const provider = parseProvider(item, index, read, problems);
      if (provider && providers.some((p) => p.name === provider.name)) problems.push(`AUTH_OIDC_PROVIDERS names "${provider.name}" twice`);
      else if (provider) providers.push(provider);
    }
  }
  const redirectAllowlist = (read("AUTH_REDIRECT_ALLOWLIST") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (const entry of redirectAllowlist) {
    try {
      const url = new URL(entry.replace(/\*$/, ""));
      if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error();
    } catch {
      problems.push(`AUTH_REDIRECT_ALLOWLIST: "${entry}" is not an http(s) URL`);
    }
  }
  // Its form (origin + /auth/callback) is checked by its schema (ApiEnv).
  const callbackUrl = read("AUTH_OIDC_CALLBACK_URL");
  return {
    providers,
    redirectAllowlist,
    linkByEmail: bool("AUTH_OIDC_LINK_BY_EMAIL", true),
    callbackUrl,
    devProvider: bool("AUTH_OIDC_DEV_PROVIDER", false),
  };
}

function parseProvider(item: unknown, index: number, read: (name: string) => string | undefined, problems: string[]): OidcProviderConfig | undefined {
  const where = `AUTH_OIDC_PROVIDERS[${index}]`;
  if (item === null || typeof item !== "object" || Array.isArray(item)) {
    problems.push(`${where} must be an object`);
    return undefined;
  }
  const p = item as Record<string, unknown>;
  const str = (key: string) => (typeof p[key] === "string" && (p[key] as string).trim() !== "" ? (p[key] as string).trim() : undefined);
  const name = str("name");
  if (!name || !NAME.test(name)) {
    problems.push(`${where}.name must be lower-case letters, digits, "-" or "_" (at most 63)`);
    return undefined;
  }
  const preset = str("preset") ?? "generic";
  if (preset !== "generic" && preset !== "entra") problems.push(`${where}.preset must be "generic" or "entra"`);
  const clientId = str("client_id");
  if (!clientId) problems.push(`${where}.client_id is required`);
  const secretVariable = str("client_secret_env") ?? `AUTH_OIDC_${name.toUpperCase().replace(/-/g, "_")}_CLIENT_SECRET`;
  const clientSecret = read(secretVariable);
  const scopes = Array.isArray(p.scopes) && p.scopes.every((s) => typeof s === "string") ? (p.scopes as string[]) : ["openid", "email", "profile"];
  if (!scopes.includes("openid")) problems.push(`${where}.scopes must include "openid"`);

  let entra: OidcProviderConfig["entra"];
  let issuer = str("issuer");
  if (preset === "entra") {
    const tenant = str("tenant");
    const multi = tenant === "organizations";
    if (!tenant || (!multi && !TENANT_ID.test(tenant))) {
      problems.push(`${where}.tenant must be the directory (tenant) id of a single-tenant app, or "organizations"`);
    }
    const allowed = Array.isArray(p.allowed_tenants) ? (p.allowed_tenants as unknown[]).filter((t): t is string => typeof t === "string") : [];
    if (multi && allowed.length === 0) {
      problems.push(`${where}.allowed_tenants must list the tenant ids (tid) a multi-tenant app accepts (or ["*"] for any)`);
    }
    entra = {
      tenant: tenant ?? "",
      allowedTenants: multi ? allowed.map((t) => t.toLowerCase()) : [(tenant ?? "").toLowerCase()],
      useUpnAsEmail: p.use_upn_as_email === true,
    };
    // `issuer` overrides the authority only for tests and the local development provider.
    issuer ??= `${ENTRA_AUTHORITY}/${(tenant ?? "").toLowerCase()}/v2.0`;
  }
  if (!issuer) {
    problems.push(`${where}.issuer is required`);
    return undefined;
  }
  try {
    const url = new URL(issuer);
    if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopback(url.hostname))) throw new Error();
  } catch {
    problems.push(`${where}.issuer must be an https URL (http only on a loopback address)`);
  }
  return { name, preset: preset as OidcProviderConfig["preset"], issuer, clientId: clientId ?? "", clientSecret, scopes, entra };
}

export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "127.0.0.1" || hostname === "[::1]";
}
