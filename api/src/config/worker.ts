/** `bun run worker`: the scan job consumer and the outbox relay (api/src/cli/worker.ts). */
import { Type } from "@sinclair/typebox";
import { SCAN_JOB_STREAM } from "../queue/stream";
import { AuditRetentionEnv } from "./audit";
import { POSTGRES_PROTOCOLS, Shared, Var, readEnv, throwIfProblems, type Env } from "./env";

export const WorkerEnv = Type.Object({
  DATABASE_URL: Shared.DATABASE_URL,
  REDIS_URL: { ...Shared.REDIS_URL, description: "Redis: the scan job stream (required by the worker)." },
  SCAN_WORKER_DATABASE_URL: Var.url({ protocols: POSTGRES_PROTOCOLS, description: "Connect with this URL instead of DATABASE_URL (a login role that is a member of scan_worker)." }),
  SCAN_WORKER_DB_ROLE: Var.string({ default: "scan_worker", emptyIsValue: true, description: "Role the connections switch to (the queue functions and nothing else, even when the URL is a superuser's); empty to stay the URL's role." }),
  SCAN_JOB_HANDLER: Var.string({ default: "simulated", description: "\"simulated\" (a deterministic stand-in scanner) or the path of a module whose default export is a ScanJobHandler, a class or a factory." }),
  SCAN_WORKER_NAME: Var.optionalString({ defaultText: "host-pid-random", description: "Consumer name; must be unique per process." }),
  SCAN_JOB_STREAM: Var.string({ default: SCAN_JOB_STREAM, description: "The Redis stream key jobs are announced on." }),
  SCAN_JOB_CLAIM_IDLE_MS: Var.integer({ default: 30_000, minimum: 100, maximum: 3_600_000, unit: "milliseconds", description: "Take over the jobs of workers silent this long." }),
  SCAN_JOB_HEARTBEAT_MS: Var.optionalInteger({ minimum: 10, maximum: 3_600_000, unit: "milliseconds", defaultText: "SCAN_JOB_CLAIM_IDLE_MS / 4 (at least 50)", description: "Heartbeat of a running job; at most SCAN_JOB_CLAIM_IDLE_MS." }),
  SCAN_JOB_TIMEOUT_MS: Var.integer({ default: 900_000, minimum: 1000, maximum: 86_400_000, unit: "milliseconds", description: "Abort and retry an attempt running longer." }),
  SCAN_JOB_RELAY: Var.boolean({ default: true, description: "Run the outbox relay that publishes queued jobs; false when another process runs it." }),
  ...AuditRetentionEnv.properties,
});

export interface WorkerConfig {
  databaseUrl: string;
  redisUrl: string;
  /** Empty: stay the URL's role. */
  dbRole: string;
  handler: string;
  name?: string;
  stream: string;
  claimIdleMs: number;
  heartbeatMs: number;
  jobTimeoutMs: number;
  relay: boolean;
  audit: { retentionDays?: number; pruneDatabaseUrl: string };
}

export function loadWorkerConfig(env: Env = process.env): WorkerConfig {
  const problems: string[] = [];
  const v = readEnv(WorkerEnv, env, problems);
  const databaseUrl = v.SCAN_WORKER_DATABASE_URL ?? v.DATABASE_URL;
  if (!databaseUrl && !problems.some((p) => /^(SCAN_WORKER_)?DATABASE_URL /.test(p))) {
    problems.push("DATABASE_URL (or SCAN_WORKER_DATABASE_URL) is required: the worker's PostgreSQL (`bun run dev` prints it)");
  }
  if (!v.REDIS_URL && !problems.some((p) => p.startsWith("REDIS_URL "))) {
    problems.push("REDIS_URL is required: the worker takes its jobs from a Redis stream (`bun run dev` prints it)");
  }
  const heartbeatMs = v.SCAN_JOB_HEARTBEAT_MS ?? Math.max(50, Math.floor(v.SCAN_JOB_CLAIM_IDLE_MS / 4));
  if (heartbeatMs > v.SCAN_JOB_CLAIM_IDLE_MS) {
    problems.push(`SCAN_JOB_HEARTBEAT_MS must be at most SCAN_JOB_CLAIM_IDLE_MS (${v.SCAN_JOB_CLAIM_IDLE_MS}) (got "${heartbeatMs}")`);
  }
  throwIfProblems(problems);
  return {
    databaseUrl: databaseUrl!,
    redisUrl: v.REDIS_URL!,
    dbRole: v.SCAN_WORKER_DB_ROLE,
    handler: v.SCAN_JOB_HANDLER,
    name: v.SCAN_WORKER_NAME,
    stream: v.SCAN_JOB_STREAM,
    claimIdleMs: v.SCAN_JOB_CLAIM_IDLE_MS,
    heartbeatMs,
    jobTimeoutMs: v.SCAN_JOB_TIMEOUT_MS,
    relay: v.SCAN_JOB_RELAY,
    audit: { retentionDays: v.AUDIT_RETENTION_DAYS, pruneDatabaseUrl: v.AUDIT_PRUNE_DATABASE_URL ?? databaseUrl! },
  };
}
