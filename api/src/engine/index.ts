/**
 * The embedded PostgREST-compatible engine: `fetch(Request) → Response`, byte-compatible with
 * PostgREST for what the product uses, so the API calls it exactly as it would call PostgREST.
 *
 *   const engine = await createEngine(engineConfigFromEnv(env));   // config/engine.ts
 *   const res = await engine.fetch(new Request("http://engine/rpc/sign_in", { method: "POST", body }));
 *
 * In the API's own process the gateway calls `handle(request, verified)` instead: the same
 * handler, told in-process which token the gateway has verified (see docs/decisions/0004).
 */
import type { Sql } from "postgres";
import { connectPostgres } from "../db/connection";
import type { EngineConfig } from "../config/engine";
import { validateEngineConfig } from "../config/engine";
import { noSchemaCache, type EngineRuntime } from "./context";
import { ApiError } from "./errors";
import { legacyRoleClaimKeyWarning } from "./jspath";
import { JwtAuthenticator, type VerifiedCaller } from "./jwt";
import { fromDatabaseError, internalError, isConnectionError, renderError } from "./pg-errors";
import { route } from "./router";
import { loadSchemaCache, type SchemaCache, type SchemaSnapshots } from "./schema-cache";
import { RequestConnections } from "./transaction";

export type { EngineConfig } from "../config/engine";
export { engineConfigFromEnv } from "../config/engine";
export type { VerifiedCaller } from "./jwt";
export type { SchemaSnapshots } from "./schema-cache";

export interface Engine {
  /** PostgREST's HTTP interface: the request's bearer token is verified here. */
  fetch(request: Request): Promise<Response>;
  /**
   * The same handler for an in-process caller that has verified the request's bearer token
   * itself: for that token the engine takes `verified.claims` instead of checking the signature
   * again (any other token is verified as in fetch). Only code in this process can pass it.
   */
  handle(request: Request, verified?: VerifiedCaller): Promise<Response>;
  /** The schema cache in use, for an in-process gateway's catalogue (one introspection, one reload). */
  readonly schema: SchemaSnapshots;
  reloadSchemaCache(): Promise<void>;
  close(): Promise<void>;
}

export interface EngineOptions {
  /** Used when the configuration has no dbUri. */
  databaseUrl?: string;
  log?: (line: string) => void;
  /**
   * A pool made by `createEnginePool` to share (e.g. with a benchmark's direct queries). The
   * engine then leaves it open on close().
   */
  sql?: Sql;
  /** `application_name` of the engine's connections (default "autoaudit-engine"). */
  applicationName?: string;
}

/** Bodies are built by PostgreSQL; json values pass through as text, in and out, never re-encoded. */
const JSON_AS_TEXT = {
  jsonText: { to: 114, from: [114, 3802], serialize: (x: unknown) => x as string, parse: (x: string) => x },
};

/**
 * The pool the engine needs: json/jsonb pass through as text (bodies stay byte-exact and JSON
 * arguments are not re-encoded), prepared statements, PGRST_DB_POOL connections for requests
 * plus one for schema cache introspection.
 */
export function createEnginePool(url: string, config: EngineConfig, applicationName = "autoaudit-engine"): Sql {
  return connectPostgres(url, {
    max: config.dbPoolSize + 1,
    onnotice: () => {},
    prepare: true,
    connect_timeout: Math.max(1, config.dbPoolAcquisitionTimeoutSeconds),
    connection: { application_name: applicationName },
    types: JSON_AS_TEXT as never,
  });
}

export async function createEngine(config: EngineConfig, opts: EngineOptions = {}): Promise<Engine> {
  validateEngineConfig(config);
  const url = config.dbUri ?? opts.databaseUrl;
  if (!url && !opts.sql) throw new Error("the engine needs a database URL (PGRST_DB_URI or DATABASE_URL)");
  const log = opts.log ?? ((line: string) => console.error(line));
  const deprecated = legacyRoleClaimKeyWarning(config.jwtRoleClaimKey);
  if (deprecated !== undefined) log(`engine: ${deprecated}`);
  const ownsPool = !opts.sql;
  let sql: Sql = opts.sql ?? createEnginePool(url!, config, opts.applicationName);
  const auth = new JwtAuthenticator(config);
  // PGRST_DB_POOL connections carry request transactions, one each; the pool's extra one stays
  // free for the schema cache. A lost connection replaces the whole pool: postgres.js can wedge a
  // reserved connection whose socket died, and a fresh pool recovers as soon as the database does.
  let connections: RequestConnections;
  const makeConnections = (pool: Sql): RequestConnections => {
    const created: RequestConnections = new RequestConnections(pool, config.dbPoolSize, () => {
      if (!ownsPool || closed || connections !== created) return;
      log("engine: lost the database connection; starting a new pool");
      const old = sql;
      created.close();
      sql = createEnginePool(url!, config, opts.applicationName);
      connections = makeConnections(sql);
      listening = false;
      const oldUnlisten = unlisten;
      unlisten = undefined;
      void oldUnlisten?.().catch(() => {});
      old.end({ timeout: 0 }).catch(() => {});
      reload().then(listen).catch(() => {});
    });
    return created;
  };
  connections = makeConnections(sql);

  let cache: SchemaCache | undefined;
  let loading: Promise<void> | undefined;
  let closed = false;
  let listening = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let unlisten: (() => Promise<void>) | undefined;

  // postgres.js waits indefinitely for a server that accepts and drops connections, so an
  // introspection that takes longer than this counts as failed (its late result still lands).
  const reloadTimeoutMs = Math.max(5, config.dbPoolAcquisitionTimeoutSeconds) * 1000;
  const reload = (): Promise<void> => {
    loading ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const load = loadSchemaCache(sql, config.dbSchemas, config.dbAnonRole).then((loaded) => {
          cache = loaded;
        });
        load.catch(() => {}); // a late failure after the timeout is not anyone's to handle
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("timed out loading the schema cache")), reloadTimeoutMs);
        });
        await Promise.race([load, timeout]);
      } finally {
        clearTimeout(timer);
        loading = undefined;
      }
    })();
    return loading;
  };

  const listen = async () => {
    if (listening || closed) return;
    let first = true;
    const sub = await sql.listen(
      "pgrst",
      (payload) => {
        if (payload === "" || payload === "reload schema") {
          reload().catch((e) => log(`engine: schema cache reload failed: ${(e as Error).message}`));
        }
      },
      () => {
        // Called on every (re)connection of the listener: after a reconnect, changes may have been missed.
        if (!first) reload().catch(() => {});
        first = false;
      },
    );
    listening = true;
    unlisten = () => sub.unlisten();
  };

  const startup = async (attempt: number): Promise<void> => {
    if (closed) return;
    try {
      await reload();
      await listen();
    } catch (e) {
      if (closed) return;
      const delay = Math.min(32, 2 ** attempt) * 1000;
      log(`engine: database not ready (${(e as Error).message}); retrying in ${delay / 1000}s`);
      retryTimer = setTimeout(() => void startup(attempt + 1), delay);
    }
  };
  await startup(0);

  const rt: EngineRuntime = {
    config,
    get sql() {
      return sql;
    },
    get connections() {
      return connections;
    },
    schemaCache() {
      if (!cache) throw noSchemaCache();
      return cache;
    },
    log,
  };

  const handle = async (request: Request, verified?: VerifiedCaller): Promise<Response> => {
    try {
      if (!cache) {
        // The database may be back since the last attempt; try once before refusing.
        await reload().catch(() => {});
        if (cache && !listening) listen().catch(() => {});
      }
      const authenticator = verified ? { authenticate: (authorization: string | null) => auth.authenticate(authorization, verified) } : auth;
      return await route(rt, authenticator, request);
    } catch (e) {
      let err: ApiError;
      if (e instanceof ApiError) err = e;
      else if (isConnectionError(e)) err = fromDatabaseError(e, false);
      else {
        log(`engine: unexpected error: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
        err = internalError(e);
      }
      return renderError(err, config.clientErrorVerbosity);
    }
  };

  return {
    fetch: (request: Request) => handle(request),
    handle,
    schema: { current: () => cache, reload },
    reloadSchemaCache: reload,
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      await unlisten?.().catch(() => {});
      connections.close();
      // Without a loaded cache no request can be running; postgres.js would otherwise wait out
      // the timeout on connections that never opened.
      if (ownsPool) await sql.end({ timeout: cache ? 5 : 0 });
    },
  };
}
