import type { ApiConfig } from "../config";
import { localBatchScheduling, lowerPriority } from "../db/backend-priority";
import { isLocalSocket } from "../db/connection";
import { createEngine } from "../engine";
import { engineConfigFromEnv } from "../engine/config";
import { engineFetch, type UpstreamFetch } from "./upstream";

export interface UpstreamEndpoint {
  url: string;
  fetch: UpstreamFetch;
}

export interface SelectedUpstream extends UpstreamEndpoint {
  kind: "postgrest" | "engine";
  /**
   * Where the bcrypt calls (sign_in, sign_up) go when they have their own lane: an engine whose
   * PostgreSQL backends run at lower priority. Undefined: they share the main upstream.
   */
  hashing?: UpstreamEndpoint;
  close(): Promise<void>;
}

/** Base URL the engine's requests carry; never resolved, the engine is called in-process. */
const ENGINE_URL = "http://engine.internal";

/**
 * The real PostgREST when POSTGREST_URL is set, otherwise the embedded engine in this process,
 * configured from the same PGRST_* variables and always with the API's own secret, schemas and
 * anonymous role (so a generated development secret is the one both sides use).
 *
 * With the embedded engine and a PostgreSQL on this machine (a Unix socket URL, as the embedded
 * stack hands out), sign_in and sign_up get a second engine with one connection per admission
 * slot whose backends are reniced (SIGN_IN_BACKEND_NICE): a bcrypt hash keeps a core busy for
 * a quarter of a second, and at equal priority two of them make every other request wait for
 * a core. At lower priority they still get every idle cycle, so sign-in throughput is unchanged
 * when nothing else runs. The engines' backends also run under SCHED_BATCH (DB_BACKEND_BATCH).
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
  const engineConfig = engineConfigFromEnv(engineEnv);
  // Scheduling of the backends only where they run on this machine (a Unix socket URL).
  const engineDatabase = engineConfig.dbUri ?? databaseUrl;
  const local = isLocalSocket(engineDatabase);
  const batch = localBatchScheduling(engineDatabase, config.backendBatchScheduling);
  const engine = await createEngine(engineConfig, { databaseUrl, onBackend: batch });
  const nice = config.admission.signInBackendNice;
  if (nice === 0 || !local) return { url: ENGINE_URL, fetch: engineFetch(engine), kind: "engine", close: () => engine.close() };

  const hashing = await createEngine(
    { ...engineConfig, dbPoolSize: config.admission.signInConcurrency },
    {
      databaseUrl,
      applicationName: "autoaudit-engine-hashing",
      onBackend: (pid) => {
        lowerPriority(pid, nice);
        batch?.(pid);
      },
    },
  );
  return {
    url: ENGINE_URL,
    fetch: engineFetch(engine),
    kind: "engine",
    hashing: { url: ENGINE_URL, fetch: engineFetch(hashing) },
    close: async () => {
      await Promise.all([engine.close(), hashing.close()]);
    },
  };
}
