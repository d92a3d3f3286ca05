import type { ApiConfig } from "../config";
import { createEngine } from "../engine";
import { engineConfigFromEnv } from "../engine/config";
import { engineFetch, type UpstreamFetch } from "./upstream";

export interface UpstreamEndpoint {
  url: string;
  fetch: UpstreamFetch;
}

export interface SelectedUpstream extends UpstreamEndpoint {
  kind: "postgrest" | "engine";
  close(): Promise<void>;
}

/** Base URL the engine's requests carry; never resolved, the engine is called in-process. */
const ENGINE_URL = "http://engine.internal";

/**
 * The real PostgREST when POSTGREST_URL is set, otherwise the embedded engine in this process,
 * configured from the same PGRST_* variables and always with the API's own secret, schemas and
 * anonymous role (so a generated development secret is the one both sides use).
 *
 * Sign-ins share the engine with every other request: what keeps the other routes fast while
 * they flood in is the gateway's admission control (SIGN_IN_CONCURRENCY hashes at a time).
 */
export async function selectUpstream(config: ApiConfig, env: Record<string, string | undefined> = process.env): Promise<SelectedUpstream> {
  if (config.postgrestUrl) {
    const url = config.postgrestUrl;
    return { url, fetch: (input, init) => fetch(input, init), kind: "postgrest", close: async () => {} };
  }
  const engineEnv = {
    ...env,
    PGRST_JWT_SECRET: config.jwt.secret,
    PGRST_DB_SCHEMAS: config.schemas.join(","),
    PGRST_DB_ANON_ROLE: config.anonRole,
    ...(config.jwt.audience ? { PGRST_JWT_AUD: config.jwt.audience } : {}),
  };
  const databaseUrl = env.PGRST_DB_URI?.trim() || config.databaseUrl;
  const engine = await createEngine(engineConfigFromEnv(engineEnv), { databaseUrl });
  return { url: ENGINE_URL, fetch: engineFetch(engine), kind: "engine", close: () => engine.close() };
}
