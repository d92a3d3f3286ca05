import Redis from "ioredis";
import postgres from "postgres";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { JobStore } from "./jobs-db";
import { ensureConsumerGroup, parseEntries, SCAN_JOB_GROUP, SCAN_JOB_STREAM, type StreamEntry } from "./stream";
import { PermanentJobError, type ScanJobHandler } from "./types";

export interface WorkerOptions {
  sql: postgres.Sql;
  redisUrl: string;
  handler: ScanJobHandler;
  /** The consumer name in the group and the `worker` recorded on the job. Unique per process. */
  name?: string;
  stream?: string;
  group?: string;
  /** Pending entries idle longer than this belong to a dead worker and are taken over. */
  claimIdleMs?: number;
  /** How often a running job proves it is alive (database heartbeat + stream entry touch). */
  heartbeatMs?: number;
  /** A running job whose heartbeat is older may be taken over. Defaults to claimIdleMs. */
  staleAfterMs?: number;
  /** XREADGROUP BLOCK time: how quickly stop() is noticed. */
  blockMs?: number;
  /** An attempt running longer is aborted and retried (default 15 minutes). */
  jobTimeoutMs?: number;
  /** Called after a job recorded a scan (the API's cache of that tenant is stale). */
  onScanRecorded?: (tenantId: string) => Promise<void> | void;
  /** Called after an attempt failed and the job went back to the outbox for a retry. */
  onRequeued?: () => void;
  log?: (event: Record<string, unknown>) => void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Findings the database rejects: retrying the same scanner output cannot help.
const CLIENT_ERROR = /^(22|23)/;

export function defaultWorkerName(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

/**
 * Consumes scan jobs from the Redis Stream with a consumer group. Postgres decides: an entry
 * is acknowledged only after the database committed the job's outcome (or says there is
 * nothing left to do), so a worker dying at any point leaves the entry pending for another
 * worker to reclaim (XAUTOCLAIM), and the lease in scan_jobs makes finishing happen once.
 */
export class ScanWorker {
  readonly name: string;
  private readonly store: JobStore;
  private readonly stream: string;
  private readonly group: string;
  private readonly claimIdleMs: number;
  private readonly heartbeatMs: number;
  private readonly staleAfterMs: number;
  private readonly blockMs: number;
  private readonly jobTimeoutMs: number;
  private readonly log: (event: Record<string, unknown>) => void;
  /** Blocking reads get their own connection; commands must not wait behind them. */
  private readonly reader: Redis;
  private readonly commands: Redis;
  private stopping = false;
  private loop?: Promise<void>;
  private current?: AbortController;
  private groupReady = false;
  private nextClaimAt = 0;

  constructor(private readonly options: WorkerOptions) {
    this.name = options.name ?? defaultWorkerName();
    this.store = new JobStore(options.sql);
    this.stream = options.stream ?? SCAN_JOB_STREAM;
    this.group = options.group ?? SCAN_JOB_GROUP;
    this.claimIdleMs = options.claimIdleMs ?? 30_000;
    this.heartbeatMs = options.heartbeatMs ?? Math.max(50, Math.floor(this.claimIdleMs / 4));
    this.staleAfterMs = options.staleAfterMs ?? this.claimIdleMs;
    this.blockMs = options.blockMs ?? 2000;
    this.jobTimeoutMs = options.jobTimeoutMs ?? 15 * 60_000;
    this.log = options.log ?? (() => {});
    const common = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
      retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), 1000),
    } as const;
    this.reader = new Redis(options.redisUrl, common);
    this.commands = new Redis(options.redisUrl, { ...common, commandTimeout: 2000 });
    this.reader.on("error", () => {});
    this.commands.on("error", () => {});
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops taking entries, aborts the running handler (its job is retaken later), closes Redis. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.current?.abort(new Error("worker stopping"));
    await this.loop;
    this.reader.disconnect();
    this.commands.disconnect();
  }

  private async run(): Promise<void> {
    let backoff = 50;
    while (!this.stopping) {
      try {
        if (!this.groupReady) {
          await ensureConsumerGroup(this.commands, this.stream, this.group);
          this.groupReady = true;
        }
        const entries = Date.now() >= this.nextClaimAt ? await this.reclaim() : [];
        if (entries.length === 0) entries.push(...(await this.readNew()));
        for (const entry of entries) {
          if (this.stopping) break;
          await this.process(entry);
        }
        backoff = 50;
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        // Redis restarted without its data: the group is gone; make it again.
        if (message.includes("NOGROUP")) this.groupReady = false;
        this.log({ event: "scan_worker_error", worker: this.name, error: message });
        await Bun.sleep(backoff);
        backoff = Math.min(backoff * 2, 1000);
      }
    }
  }

  /** Entries other consumers took but left idle too long: their worker is presumed dead. */
  private async reclaim(): Promise<StreamEntry[]> {
    this.nextClaimAt = Date.now() + Math.max(25, Math.floor(this.claimIdleMs / 4));
    const reply = (await this.commands.xautoclaim(this.stream, this.group, this.name, this.claimIdleMs, "0-0", "COUNT", 10)) as unknown[];
    const entries = parseEntries(reply[1]);
    const deleted = (reply[2] as string[] | undefined) ?? [];
    // Entries trimmed from the stream while pending: XAUTOCLAIM already dropped them from the PEL.
    if (deleted.length) this.log({ event: "scan_worker_pending_deleted", ids: deleted });
    if (entries.length) this.log({ event: "scan_worker_reclaimed", worker: this.name, ids: entries.map((e) => e.id) });
    return entries;
  }

  private async readNew(): Promise<StreamEntry[]> {
    const reply = (await this.reader.xreadgroup(
      "GROUP", this.group, this.name, "COUNT", 1, "BLOCK", this.blockMs, "STREAMS", this.stream, ">",
    )) as [string, unknown][] | null;
    return reply ? parseEntries(reply[0]?.[1]) : [];
  }

  private async ack(entry: StreamEntry): Promise<void> {
    await this.commands.xack(this.stream, this.group, entry.id);
  }

  /** One stream entry, start to acknowledgement. Throws only when Postgres or Redis is unreachable. */
  async process(entry: StreamEntry): Promise<void> {
    const jobId = entry.jobId;
    if (!jobId || !UUID.test(jobId)) {
      await this.ack(entry);
      return;
    }
    const started = await this.store.start(jobId, this.name, this.staleAfterMs);
    if (started.outcome === "busy") return; // another live worker has it; its XACK clears this entry
    if (started.outcome !== "started") {
      await this.ack(entry);
      return;
    }
    const { job, lease } = started;
    this.log({ event: "scan_job_started", worker: this.name, job: job.id, attempt: job.attempt });

    const controller = new AbortController();
    this.current = controller;
    let leaseLost = false;
    const beat = setInterval(() => {
      void (async () => {
        try {
          if (!(await this.store.heartbeat(job.id, lease))) {
            leaseLost = true;
            controller.abort(new Error("lease lost: another worker took the job over"));
            return;
          }
          // Touching the entry resets its idle time, so live jobs are not reclaimed.
          await this.commands.xclaim(this.stream, this.group, this.name, 0, entry.id, "JUSTID");
        } catch {
          // Unreachable database or Redis: the next beat tries again; if it stays away the job is retaken.
        }
      })();
    }, this.heartbeatMs);

    const timeout = setTimeout(
      () => controller.abort(new Error(`attempt timed out after ${this.jobTimeoutMs} ms`)),
      this.jobTimeoutMs,
    );

    try {
      let result;
      try {
        // A handler that ignores its signal still loses the race: the attempt ends either way.
        result = await Promise.race([this.options.handler.handle(job, { signal: controller.signal }), rejectOnAbort(controller.signal)]);
        if (leaseLost) return;
      } catch (error) {
        if (leaseLost) return;
        const reason = error instanceof Error ? error.message : String(error);
        const status = await this.store.fail(job.id, lease, reason, !(error instanceof PermanentJobError));
        this.log({ event: "scan_job_failed", worker: this.name, job: job.id, attempt: job.attempt, status, error: reason });
        if (status !== null) {
          await this.ack(entry);
          if (status === "queued") this.options.onRequeued?.();
        }
        return;
      }

      let outcome;
      try {
        outcome = await this.store.finish(job.id, lease, result.findings, result.startedAt);
      } catch (error) {
        if (!(error instanceof postgres.PostgresError) || !CLIENT_ERROR.test(error.code)) throw error;
        const status = await this.store.fail(job.id, lease, `the scanner's findings were rejected: ${error.message}`, false);
        this.log({ event: "scan_job_failed", worker: this.name, job: job.id, status, error: error.message });
        if (status !== null) await this.ack(entry);
        return;
      }
      if (!outcome.finished) {
        this.log({ event: "scan_job_lease_lost", worker: this.name, job: job.id });
        return;
      }
      // Only now, with the outcome committed, does the stream forget the entry.
      await this.ack(entry);
      this.log({ event: "scan_job_done", worker: this.name, job: job.id, attempt: job.attempt, scan: outcome.scanId });
      if (outcome.scanId) await Promise.resolve(this.options.onScanRecorded?.(job.tenantId)).catch(() => {});
    } finally {
      clearInterval(beat);
      clearTimeout(timeout);
      this.current = undefined;
    }
  }
}

function rejectOnAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
