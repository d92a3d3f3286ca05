// `bun run worker`: consumes scan jobs (Redis Stream consumer group) and runs the outbox relay
// that publishes queued jobs. Reads the API's environment: DATABASE_URL and REDIS_URL.
//
//   SCAN_JOB_HANDLER         "simulated" (default: a deterministic stand-in scanner) or the path
//                            of a module whose default export is a ScanJobHandler or a factory
//   SCAN_WORKER_NAME         consumer name (default host-pid-random; must be unique per process)
//   SCAN_JOB_CLAIM_IDLE_MS   take over jobs of workers silent this long (default 30000)
//   SCAN_JOB_HEARTBEAT_MS    heartbeat of a running job (default claim idle / 4)
//   SCAN_JOB_RELAY           "false" to run without the outbox relay (another process runs it)
//   SCAN_JOB_STREAM          the stream key (default autoaudit:scan-jobs)
//   SCAN_JOB_TIMEOUT_MS      abort and retry an attempt running longer (default 900000)
//   SCAN_WORKER_DATABASE_URL connect with this URL instead of DATABASE_URL (a login role that
//                            is a member of scan_worker)
//   SCAN_WORKER_DB_ROLE      role the connections switch to (default scan_worker: the queue
//                            functions and nothing else, even when the URL is a superuser's);
//                            empty to stay the URL's role
//   AUDIT_RETENTION_DAYS     prune the audit trail of events older than this, hourly (unset:
//                            keep forever); as audit_pruner over AUDIT_PRUNE_DATABASE_URL
//                            (default: the worker's URL), see api/src/cli/audit-prune.ts
import { resolve } from "node:path";
import Redis from "ioredis";
import { connectPostgres } from "../db/connection";
import { connectPruner, pruneAuditTrail, retentionDays } from "./audit-prune";
import { connectRedis } from "../gateway/redis";
import { RedisResponseCache } from "../gateway/cache";
import { OutboxRelay } from "../queue/relay";
import { SimulatedScanHandler } from "../queue/simulated-handler";
import type { ScanJobHandler } from "../queue/types";
import { defaultWorkerName, ScanWorker } from "../queue/worker";
import { SCAN_JOB_STREAM } from "../queue/stream";

function env(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value ? value : undefined;
}

function intEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = env(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer between ${min} and ${max} (got "${raw}")`);
  }
  return value;
}

async function loadHandler(spec: string): Promise<ScanJobHandler> {
  if (spec === "simulated") return new SimulatedScanHandler();
  const loaded = await import(resolve(process.cwd(), spec));
  const exported = loaded.default ?? loaded.handler;
  // A handler object, a class with a no-argument constructor, or a factory function.
  let handler = exported;
  if (typeof exported === "function") {
    handler = typeof exported.prototype?.handle === "function" ? new exported() : await exported();
  }
  if (!handler || typeof handler.handle !== "function") {
    throw new Error(`SCAN_JOB_HANDLER ${spec}: the default export is not a ScanJobHandler (an object with handle(job, context))`);
  }
  return handler as ScanJobHandler;
}

const log = (event: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...event }));

async function main() {
  const databaseUrl = env("SCAN_WORKER_DATABASE_URL") ?? env("DATABASE_URL");
  const redisUrl = env("REDIS_URL");
  if (!databaseUrl || !redisUrl) {
    console.error("bun run worker needs DATABASE_URL and REDIS_URL (the API's configuration; `bun run dev` prints both)");
    process.exit(2);
  }
  const claimIdleMs = intEnv("SCAN_JOB_CLAIM_IDLE_MS", 30_000, 100, 3_600_000);
  const heartbeatMs = intEnv("SCAN_JOB_HEARTBEAT_MS", Math.max(50, Math.floor(claimIdleMs / 4)), 10, claimIdleMs);
  const handler = await loadHandler(env("SCAN_JOB_HANDLER") ?? "simulated");
  const name = env("SCAN_WORKER_NAME") ?? defaultWorkerName();
  const stream = env("SCAN_JOB_STREAM") ?? SCAN_JOB_STREAM;

  const retention = retentionDays(process.env.AUDIT_RETENTION_DAYS);
  const jobTimeoutMs = intEnv("SCAN_JOB_TIMEOUT_MS", 15 * 60_000, 1000, 24 * 3_600_000);
  const dbRole = process.env.SCAN_WORKER_DB_ROLE?.trim() ?? "scan_worker";
  // `role` as a startup parameter: every connection (the LISTEN one too) starts as that role.
  const sql = connectPostgres(databaseUrl, { max: 4, onnotice: () => {}, connection: dbRole ? { role: dbRole } : {} });
  const redisLink = connectRedis(redisUrl);
  const cache = new RedisResponseCache(redisLink);
  const relayRedis = new Redis(redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    commandTimeout: 2000,
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), 1000),
  });
  relayRedis.on("error", () => {});
  const relay = env("SCAN_JOB_RELAY") === "false"
    ? undefined
    : new OutboxRelay({ sql, redis: relayRedis, stream, sweepStaleAfterMs: claimIdleMs * 5, log });
  const worker = new ScanWorker({
    sql,
    redisUrl,
    handler,
    name,
    stream,
    claimIdleMs,
    heartbeatMs,
    jobTimeoutMs,
    // The gateway caches latest_scan and friends per tenant: a recorded scan makes them stale.
    onScanRecorded: (tenantId) => cache.evict([`tenant:${tenantId}`]),
    onRequeued: () => void relay?.flush(),
    log,
  });

  await relay?.start();
  worker.start();
  const pruner = retention === undefined ? undefined : connectPruner(env("AUDIT_PRUNE_DATABASE_URL") ?? databaseUrl);
  const prune = async () => {
    try {
      const result = await pruneAuditTrail(pruner!, retention!);
      log({ event: "audit_trail_pruned", retention_days: retention, pruned_events: result.pruned_events, chains: result.chains.length });
    } catch (error) {
      log({ event: "audit_prune_failed", error: error instanceof Error ? error.message : String(error) });
    }
  };
  const pruneTimer = pruner ? setInterval(prune, 3_600_000) : undefined;
  if (pruner) void prune();
  const [who] = await sql`select current_user as role`;
  log({ event: "scan_worker_started", worker: name, stream, db_role: who?.role, claim_idle_ms: claimIdleMs, heartbeat_ms: heartbeatMs, relay: Boolean(relay) });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log({ event: "scan_worker_stopping", worker: name, signal });
    clearInterval(pruneTimer);
    await worker.stop();
    await relay?.stop();
    relayRedis.disconnect();
    await redisLink.close();
    await sql.end({ timeout: 5 });
    await pruner?.end({ timeout: 5 });
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
