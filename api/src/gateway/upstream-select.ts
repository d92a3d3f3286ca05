import type { ApiConfig } from "../config";
import { createEngine, type SchemaSnapshots } from "../engine";
import { engineConfigFromEnv } from "../engine/config";
import { engineFetch, httpFetch, type UpstreamFetch } from "./upstream";

export interface UpstreamEndpoint {
  url: string;
  fetch: UpstreamFetch;
  /**
   * The upstream's own schema cache, when it is in this process: the gateway's catalogue reads
   * it instead of introspecting the database a second time. Undefined for a real PostgREST.
   */
  schema?: SchemaSnapshots;
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
 * The engine is reached in-process through its handler (upstream.ts, engineFetch), takes the
 * gateway's verification of the caller's token, and shares its schema cache with the gateway.
 *
 * Sign-ins share the engine with every other request: what keeps the other routes fast while
 * they flood in is the gateway's admission control (SIGN_IN_CONCURRENCY hashes at a time).
 */
export async function selectUpstream(config: ApiConfig, env: Record<string, string | undefined> = process.env): Promise<SelectedUpstream> {
  if (config.postgrestUrl) {
    const url = config.postgrestUrl;
    return { url, fetch: httpFetch, kind: "postgrest", close: async () => {} };
  }
  const engineEnv = {
    ...env,
    PGRST_JWT_SECRET: config.jwt.secret,
    // The API's secret is text; the engine's key must be the one the gateway verifies with.
    PGRST_JWT_SECRET_IS_BASE64: undefined,
    PGRST_DB_SCHEMAS: config.schemas.join(","),
    PGRST_DB_ANON_ROLE: config.anonRole,
    ...(config.jwt.audience ? { PGRST_JWT_AUD: config.jwt.audience } : {}),
  };
  const databaseUrl = env.PGRST_DB_URI?.trim() || config.databaseUrl;
  const engine = await createEngine(engineConfigFromEnv(engineEnv), { databaseUrl });
  return { url: ENGINE_URL, fetch: engineFetch(engine), schema: engine.schema, kind: "engine", close: () => engine.close() };
}
