// `AUTH_OIDC_DEV_PROVIDER=true bun run dev`: a local OpenID provider (oidc-provider, the one the
// tests use) registered as the provider "dev", so the whole sign-in flow can be tried without a
// Microsoft tenant. Its login page accepts any login name (no password): development only.
import { createHash, randomBytes } from "node:crypto";
import { startDevProvider } from "../stack/oidc-dev-provider";

export async function startDevOidc(apiPort: number, env: Record<string, string | undefined>, say: (line: string) => void) {
  const secret = randomBytes(24).toString("base64url");
  const hosts = ["127.0.0.1", "localhost"];
  const provider = await startDevProvider({
    clients: [{ client_id: "autoaudit-dev", client_secret: secret, redirect_uris: hosts.map((h) => `http://${h}:${apiPort}/auth/callback`) }],
    // Anyone may sign in: "ada" becomes ada@example.com, verified.
    defaultClaims: (login) => ({
      email: login.includes("@") ? login.toLowerCase() : `${login.toLowerCase()}@example.com`,
      email_verified: true,
      given_name: login.split("@")[0],
      family_name: "Developer",
    }),
  });
  say(`oidc: local OpenID provider at ${provider.issuer} (provider "dev"; any login name, no password)`);

  let providers: unknown[] = [];
  try {
    providers = env.AUTH_OIDC_PROVIDERS ? (JSON.parse(env.AUTH_OIDC_PROVIDERS) as unknown[]) : [];
  } catch {
    // loadConfig reports the bad value
  }
  const withDev: Record<string, string | undefined> = {
    ...env,
    AUTH_OIDC_PROVIDERS: JSON.stringify([...(Array.isArray(providers) ? providers : []), { name: "dev", issuer: provider.issuer, client_id: "autoaudit-dev" }]),
    AUTH_OIDC_DEV_CLIENT_SECRET: secret,
    // The code lands on the Swagger UI, where exchange_auth_code can be tried at once.
    AUTH_REDIRECT_ALLOWLIST: env.AUTH_REDIRECT_ALLOWLIST ?? hosts.map((h) => `http://${h}:${apiPort}/docs`).join(","),
  };

  return {
    env: withDev,
    stop: () => provider.close(),
    hint(apiUrl: string) {
      const verifier = randomBytes(32).toString("base64url");
      const challenge = createHash("sha256").update(verifier).digest("base64url");
      const query = new URLSearchParams({ provider: "dev", redirect_to: `${apiUrl}/docs`, code_challenge: challenge, code_challenge_method: "S256" });
      return `  Sign in with OpenID Connect (local provider): open in a browser
          ${apiUrl}/auth/authorize?${query}
        log in with any name, then take the code from the address bar of the Swagger UI and:
        curl -s ${apiUrl}/rpc/exchange_auth_code -H 'Content-Type: application/json' \\
          -d '{"auth_code":"<code>","code_verifier":"${verifier}"}'
`;
    },
  };
}
