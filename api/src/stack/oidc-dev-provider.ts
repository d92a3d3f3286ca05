// A local OpenID Provider (oidc-provider, a certified implementation) for the tests and for
// `AUTH_OIDC_DEV_PROVIDER=true bun run dev`. Never for production: accounts live in memory and
// its login page (devInteractions) accepts any login name without a password.
//
// oidc-provider is a development dependency: import this module only dynamically outside tests.
// It runs under Bun (it warns "Unsupported runtime" and works: the tests drive it end to end).
import type { Server } from "node:http";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { freePort } from "./free-port";

export interface DevProviderClient {
  client_id: string;
  client_secret: string;
  redirect_uris: string[];
}

export interface DevProviderOptions {
  port?: number;
  clients: DevProviderClient[];
  /**
   * Claims of the accounts, by login name. A login the map does not know gets, when
   * `defaultClaims` is set, `defaultClaims(login)` (the development provider signs anyone in).
   */
  accounts?: Map<string, Record<string, unknown>>;
  defaultClaims?: (login: string) => Record<string, unknown>;
}

export interface DevProvider {
  issuer: string;
  accounts: Map<string, Record<string, unknown>>;
  /** The provider's signing key (private JWK with its kid), so tests can sign tokens of their own. */
  signingKey: JWK & { kid: string };
  /** When set, rewrites the ID token of every successful token response (tests of tampered tokens). */
  tamperIdToken?: (idToken: string) => Promise<string> | string;
  close(): Promise<void>;
}

export async function startDevProvider(options: DevProviderOptions): Promise<DevProvider> {
  const { default: Provider } = await import("oidc-provider");
  const port = options.port ?? (await freePort());
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: `dev-${port}`, alg: "RS256", use: "sig" };
  const accounts = options.accounts ?? new Map<string, Record<string, unknown>>();

  const provider = new Provider(issuer, {
    clients: options.clients.map((c) => ({
      ...c,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [crypto.randomUUID()] },
    // Every claim of the granted scopes goes into the ID token (the gateway reads only the ID token).
    conformIdTokenClaims: false,
    claims: {
      openid: ["sub", "tid", "oid", "upn", "xms_edov"],
      email: ["email", "email_verified"],
      profile: ["name", "given_name", "family_name"],
    },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx: unknown, id: string) {
      const claims = accounts.get(id) ?? options.defaultClaims?.(id);
      if (!claims) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
  });
  const handle: DevProvider = {
    issuer,
    accounts,
    signingKey,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body as { id_token?: unknown } | undefined;
    if (ctx.path === "/token" && ctx.status === 200 && handle.tamperIdToken && typeof body?.id_token === "string") {
      ctx.body = { ...body, id_token: await handle.tamperIdToken(body.id_token) };
    }
  });
  const server: Server = provider.listen(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    if (server.listening) return resolve();
    server.once("listening", () => resolve());
    server.once("error", reject);
  });
  return handle;
}
