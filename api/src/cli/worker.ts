// `bun run worker`: consumes scan jobs (Redis Stream consumer group) and runs the outbox relay
// that publishes queued jobs. Reads the API's DATABASE_URL and REDIS_URL, and its own SCAN_*
// variables and the audit retention: api/src/config/worker.ts (docs/reference/configuration.md).
import { resolve } from "node:path";
import Redis from "ioredis";
import { connectPostgres } from "../db/connection";
import { loadWorkerConfig } from "../config";
import { configOrExit } from "./config-or-exit";
import { connectPruner, pruneAuditTrail } from "./audit-prune";
import { connectRedis } from "../gateway/redis";
import { RedisResponseCache } from "../gateway/cache";
import { OutboxRelay } from "../queue/relay";
import { SimulatedScanHandler } from "../queue/simulated-handler";
import type { ScanJobHandler } from "../queue/types";
import { defaultWorkerName, ScanWorker } from "../queue/worker";

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
  const config = configOrExit(loadWorkerConfig, "bun run worker: cannot start, ");
  const { databaseUrl, redisUrl, dbRole, stream, claimIdleMs, heartbeatMs, jobTimeoutMs } = config;
  const retention = config.audit.retentionDays;
  const handler = await loadHandler(config.handler);
  const name = config.name ?? defaultWorkerName();

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
  const relay = !config.relay
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
  const pruner = retention === undefined ? undefined : connectPruner(config.audit.pruneDatabaseUrl);
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
