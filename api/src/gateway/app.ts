import { Elysia } from "elysia";
import { connectPostgres } from "../db/connection";
import type { ApiConfig } from "../config";
import { Admission } from "./admission";
import { AuditSealer } from "./audit-sealer";
import { MemoryResponseCache, RedisResponseCache, type ResponseCache } from "./cache";
import { FunctionCatalog, OwnSchemaSnapshots } from "./catalog";
import { Cors } from "./cors";
import { DatabaseBreaker } from "./db-breaker";
import { withDeadline } from "./deadline";
import { docsAsset, docsPage, DOCS_ASSET_PREFIX } from "./docs";
import { ApiError, gatewayErrors, relayedError } from "./errors";
import { healthReport } from "./health";
import { JwtService } from "./jwt";
import { OidcRoutes } from "./oidc/routes";
import { buildOpenApi } from "./openapi";
import { createRateLimits } from "./rate-limit";
import { connectRedis, type RedisLink } from "./redis";
import { requestContext, type RequestInfo } from "./request-context";
import { RpcHandler } from "./rpc";
import { securityHeaders } from "./security-headers";
import { DATABASE_REVOCATION_CHANNEL, SessionGuard } from "./sessions";
import { Upstream, UpstreamFailure } from "./upstream";
import type { UpstreamEndpoint } from "./upstream-select";

export interface GatewayOptions {
  config: ApiConfig;
  /** Where /rpc goes: the engine's handler in this process, or global fetch to PostgREST's URL. */
  upstream: UpstreamEndpoint & { kind: "postgrest" | "engine" };
  /** Sink for the JSON log lines (default: stdout). */
  log?: (line: string) => void;
  version?: string;
}

export type { RequestInfo } from "./request-context";

export interface Gateway {
  /** The whole API as a web-standard handler. */
  handle(request: Request, info?: RequestInfo): Promise<Response>;
  /**
   * Resolves once the function catalogue has loaded and Redis has connected (or either failed
   * once and is retrying), so that the first requests already use the shared limits and cache.
   */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The API on port 8000: Elysia routes in front of PostgREST / the embedded engine. Runtime
 * neutral (Request in, Response out); Bun appears only in server.ts.
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const { config } = options;
  const sink = options.log ?? ((line: string) => process.stdout.write(line + "\n"));
  const log = (event: Record<string, unknown>) => sink(JSON.stringify({ time: new Date().toISOString(), ...event }));

  // Two connections suffice: the catalogue (plus its LISTEN) and health probes.
  const sql = connectPostgres(config.databaseUrl, {
    max: 2,
    idle_timeout: 60,
    connect_timeout: 2,
    // postgres.js backs off exponentially (up to 20 s) after failed connects; after a database
    // restart that would keep the API reporting it down long after it is back.
    backoff: (attempt: number) => Math.min(0.05 * attempt, 0.5),
    onnotice: () => {},
  });
  const redis: RedisLink | undefined = config.redisUrl ? connectRedis(config.redisUrl, { log }) : undefined;
  if (!redis) log({ event: "redis_not_configured", detail: "cache, rate limits and session state are kept in this process only" });

  const breaker = new DatabaseBreaker(() => withDeadline(sql`select 1`, 1000), 250, log);
  const upstreamOptions = { timeoutMs: config.upstreamTimeoutMs, buffered: options.upstream.kind === "engine", breaker };
  const upstream = new Upstream(options.upstream.url, options.upstream.fetch, upstreamOptions);
  const jwt = new JwtService(config.jwt.secret, config.jwt.audience, config.jwt.accessTokenTtlSeconds);
  const askDatabase = async (token: string) => {
    const response = await upstream.send({
      method: "GET",
      target: { rpc: "session_active" },
      schema: "api",
      headers: new Headers({ authorization: `Bearer ${token}` }),
      // Asked about a token just verified: a cache hit, handed on so the engine does not verify it again.
      verified: { token, claims: await jwt.verify(token) },
    });
    if (response.status === 200) return response.data === true;
    if (response.status === 401 || response.status === 403) return false;
    throw new UpstreamFailure(fromUpstreamError(response.status, response.error));
  };
  const sessions = new SessionGuard(redis, askDatabase, {
    localTtlMs: config.sessions.localTtlMs,
    redisActiveTtlSeconds: config.sessions.redisActiveTtlSeconds,
    revokedTtlSeconds: config.jwt.accessTokenTtlSeconds + 60,
    log,
  });
  // Every revocation, whatever path made it (a function, SQL by hand), is announced by the
  // database; postgres.js calls the third argument on every (re)connect of the listener.
  let listenerConnected = false;
  sql
    .listen(
      DATABASE_REVOCATION_CHANNEL,
      (payload) => {
        const sid = revokedSessionOf(payload);
        if (sid) sessions.revokedInDatabase(sid);
      },
      () => {
        if (listenerConnected) sessions.listenerReconnected();
        listenerConnected = true;
      },
    )
    .catch((error: unknown) => log({ event: "revocation_listen_failed", error: error instanceof Error ? error.message : String(error) }));
  // Its own connection: a sealing that waits for another sealer's lock never holds up the
  // health probes, the catalogue or the OIDC routes on the pool above.
  const sealerSql = connectPostgres(config.databaseUrl, { max: 1, idle_timeout: 60, connect_timeout: 2, onnotice: () => {} });
  const sealer = new AuditSealer(sealerSql, config.auditSealIntervalMs, log);
  sealer.start();
  const cache: ResponseCache = redis ? new RedisResponseCache(redis) : new MemoryResponseCache();
  const limits = createRateLimits(config.rateLimit, redis);
  const admission = new Admission(config.admission.signInConcurrency, config.admission.signInQueue, config.admission.signInQueueTimeoutMs);
  // The engine's schema cache when it runs here; the same introspection of the gateway's own otherwise.
  const ownSchema = options.upstream.schema ? undefined : new OwnSchemaSnapshots(sql, config.schemas, config.anonRole, log);
  const catalog = new FunctionCatalog(options.upstream.schema ?? ownSchema!);
  const startedUp = Promise.all([ownSchema?.start(), redis && firstConnection(redis)]).then(() => {});
  const rpc = new RpcHandler({ config, jwt, sessions, upstream, cache, limits, admission, catalog, sealAuditTrail: () => sealer.sealBeforeRead(), log });
  const oidc = new OidcRoutes({ oidc: config.oidc, perAddress: limits.perAddress, sql, redis, log });
  const context = requestContext({ cors: new Cors(config.corsOrigins), trustProxy: config.trustProxy, logRequests: config.logRequests, log });

  const app = new Elysia()
    // First: Elysia applies a hook only to the routes registered after it.
    .use(context.plugin)
    .onError(({ code, error, request }) => {
      if (code === "NOT_FOUND") return gatewayErrors.notFound(new URL(request.url).pathname).toResponse();
      return errorResponse(error, log);
    })
    .get("/health", () =>
      healthReport({
        sql,
        redis,
        upstreamKind: options.upstream.kind,
        log,
        // Anonymous call of a function the anonymous role may not run: exercises the whole
        // upstream path (HTTP, pool, database) without touching data.
        upstream: () => options.upstream.fetch(new Request(`${options.upstream.url}/rpc/session_active`, { method: "GET", headers: { "Accept-Profile": "api" } })),
      }),
    )
    .get("/docs", () => docsPage())
    .get("/docs/", () => docsPage())
    .get("/docs/json", async () => {
      if (!catalog.isLoaded()) await catalog.reload();
      if (!catalog.isLoaded()) return gatewayErrors.catalogueUnavailable().toResponse();
      return Response.json(buildOpenApi(catalog.all(), { defaultSchema: config.schemas[0]!, version: options.version ?? "0.1.0" }));
    })
    .get(`${DOCS_ASSET_PREFIX}:file`, ({ params, request }) => docsAsset(params.file) ?? gatewayErrors.notFound(new URL(request.url).pathname).toResponse())
    .get("/auth/authorize", ({ request, notes }) => oidc.authorize(request, notes.clientIp()))
    .get("/auth/callback", ({ request }) => oidc.callback(request))
    // The target is resolved from the raw path by rpc.handle (resolve.ts), not from Elysia's params.
    .all("/rpc/:fn", ({ request, notes }) => rpc.handle(request, notes), { parse: "none" })
    .all("/:relation", ({ request, notes }) => rpc.handle(request, notes), { parse: "none" })
    // Every other path: answered inside the request context (id, headers, log line), unlike NOT_FOUND.
    .all("/*", ({ request }) => gatewayErrors.notFound(new URL(request.url).pathname).toResponse(), { parse: "none" });

  async function handle(request: Request, info: RequestInfo = {}): Promise<Response> {
    const routable = context.enter(withRoutableUrl(request), info);
    // Route errors are answered by onError inside the context; this catch is for Elysia's own failures.
    return app.handle(routable).catch((error: unknown) => {
      const response = errorResponse(error, log);
      securityHeaders(response.headers);
      return response;
    });
  }

  return {
    handle,
    ready: () => startedUp,
    async close() {
      ownSchema?.stop();
      await sealer.stop();
      await sealerSql.end({ timeout: 1 });
      await redis?.close();
      await sql.end({ timeout: 1 });
    },
  };
}

/**
 * Elysia finds the path by searching for "/" from index 11 of the URL, which skips the first
 * path segment when the host is very short (`Host: api` → "http://api/rpc/me"). Such
 * requests get a longer placeholder host; nothing downstream reads the host.
 */
function withRoutableUrl(request: Request): Request {
  const url = request.url;
  const pathStart = url.indexOf("/", url.indexOf("//") + 2);
  if (pathStart >= 11 || pathStart === -1) return request;
  return new Request(`http://gateway.internal${url.slice(pathStart)}`, request);
}

function fromUpstreamError(status: number, error: { code?: string; message?: string; details?: string | null; hint?: string | null } | null): ApiError {
  if (typeof error?.code !== "string" || typeof error.message !== "string") return gatewayErrors.sessionCheckFailed(status);
  return relayedError(status >= 500 ? status : 503, { code: error.code, message: error.message, details: error.details, hint: error.hint });
}

/** Settles when Redis's command connection is first ready or first fails (at most 2 s). */
function firstConnection(redis: RedisLink): Promise<void> {
  if (redis.ready()) return Promise.resolve();
  return new Promise((resolve) => {
    const settle = () => {
      clearTimeout(timer);
      redis.client.off("ready", settle);
      redis.client.off("error", settle);
      resolve();
    };
    const timer = setTimeout(settle, 2000);
    redis.client.once("ready", settle);
    redis.client.once("error", settle);
  });
}

/** The session id of a revocation notification (`{"sid": …, "sub": …}`). */
function revokedSessionOf(payload: string): string | undefined {
  try {
    const sid = (JSON.parse(payload) as { sid?: unknown }).sid;
    return typeof sid === "string" ? sid : undefined;
  } catch {
    return undefined;
  }
}

function errorResponse(error: unknown, log: (event: Record<string, unknown>) => void): Response {
  if (error instanceof ApiError) return error.toResponse();
  if (error instanceof UpstreamFailure) {
    if (error.reason) log({ event: "upstream_failure", error: error.reason });
    return error.apiError.toResponse();
  }
  log({ event: "unhandled_error", error: error instanceof Error ? error.message : String(error) });
  return gatewayErrors.internal().toResponse();
}
