import type { ApiConfig } from "../config";
import { createEngine, type SchemaSnapshots } from "../engine";
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
 * with `config.engine`: the same PGRST_* variables, always with the API's own secret, schemas and
 * anonymous role (so a generated development secret is the one both sides use), see loadConfig.
 *
 * The engine is reached in-process through its handler (upstream.ts, engineFetch), takes the
 * gateway's verification of the caller's token, and shares its schema cache with the gateway.
 *
 * Sign-ins share the engine with every other request: what keeps the other routes fast while
 * they flood in is the gateway's admission control (SIGN_IN_CONCURRENCY hashes at a time).
 */
export async function selectUpstream(config: ApiConfig): Promise<SelectedUpstream> {
  if (config.postgrestUrl) {
    const url = config.postgrestUrl;
    return { url, fetch: httpFetch, kind: "postgrest", close: async () => {} };
  }
  if (!config.engine) throw new Error("selectUpstream: the configuration has neither POSTGREST_URL nor an engine (use loadConfig)");
  const engine = await createEngine(config.engine, { databaseUrl: config.databaseUrl });
  return { url: ENGINE_URL, fetch: engineFetch(engine), schema: engine.schema, kind: "engine", close: () => engine.close() };
}
