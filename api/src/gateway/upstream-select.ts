import { writeFileSync } from "node:fs";
import { setPriority } from "node:os";
import type { ApiConfig } from "../config";
import { pgTarget } from "../db/connection";
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
 * when nothing else runs.
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
  const engine = await createEngine(engineConfig, { databaseUrl });
  const nice = config.admission.signInBackendNice;
  const local = pgTarget(engineConfig.dbUri ?? databaseUrl).socketPath !== undefined;
  if (nice === 0 || !local) return { url: ENGINE_URL, fetch: engineFetch(engine), kind: "engine", close: () => engine.close() };

  const hashing = await createEngine(
    { ...engineConfig, dbPoolSize: config.admission.signInConcurrency },
    { databaseUrl, applicationName: "autoaudit-engine-hashing", onBackend: (pid) => lowerPriority(pid, nice) },
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

/**
 * Lowers a PostgreSQL backend's CPU priority. PostgreSQL starts every backend in a session of
 * its own, and with the kernel's autogroup scheduling (the default on most distributions) each
 * session is weighed as one group: a process's own nice value then only ranks it within its
 * session, so the session's nice value (`/proc/<pid>/autogroup`) is the one that counts. Both
 * are set; raising a nice value needs no privilege for a process the caller owns (or as root).
 */
export function lowerPriority(pid: number, nice: number): void {
  setPriority(pid, nice);
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch {
    // No autogroup scheduling on this kernel (or not Linux): the process's nice value is enough.
  }
}
