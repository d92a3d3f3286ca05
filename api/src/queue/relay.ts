import type Redis from "ioredis";
import type postgres from "postgres";
import { JobStore } from "./jobs-db";
import { publishJob, SCAN_JOB_STREAM } from "./stream";

export interface RelayOptions {
  sql: postgres.Sql;
  /** A connection whose commands fail fast while Redis is away (enableOfflineQueue: false). */
  redis: Redis;
  stream?: string;
  batchSize?: number;
  /** Safety-net poll; NOTIFY from request_scan normally wakes the relay at once. */
  pollMs?: number;
  /** Running jobs with an older heartbeat go back to the outbox (lost stream entries). */
  sweepStaleAfterMs?: number;
  /** Queued jobs published longer ago are published again (lost stream). */
  republishAfterMs?: number;
  sweepEveryMs?: number;
  log?: (event: Record<string, unknown>) => void;
}

/**
 * The outbox relay: puts queued, unpublished scan jobs on the Redis Stream, then records that
 * in Postgres. SQL cannot reach Redis, so request_scan only writes the row; this closes the gap.
 * While Redis is down rows simply stay unpublished and are sent when it returns. A crash
 * between XADD and the commit publishes a job twice, which the worker tolerates.
 */
export class OutboxRelay {
  private readonly store: JobStore;
  private readonly stream: string;
  private readonly batchSize: number;
  private readonly log: (event: Record<string, unknown>) => void;
  private timer?: ReturnType<typeof setInterval>;
  private unlisten?: () => Promise<void>;
  private flushing?: Promise<number>;
  private again = false;
  private lastSweep = 0;
  private failing = false;

  constructor(private readonly options: RelayOptions) {
    this.store = new JobStore(options.sql);
    this.stream = options.stream ?? SCAN_JOB_STREAM;
    this.batchSize = options.batchSize ?? 100;
    this.log = options.log ?? (() => {});
  }

  async start(): Promise<void> {
    const listener = await this.options.sql.listen("compliance_scan_jobs", () => void this.flush());
    this.unlisten = () => listener.unlisten();
    this.timer = setInterval(() => void this.tick(), this.options.pollMs ?? 1000);
    void this.tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.unlisten?.().catch(() => {});
    await this.flushing?.catch(() => {});
  }

  private async tick(): Promise<void> {
    const every = this.options.sweepEveryMs ?? 10_000;
    if (Date.now() - this.lastSweep >= every) {
      this.lastSweep = Date.now();
      try {
        const n = await this.store.requeueStale(this.options.sweepStaleAfterMs ?? 150_000, this.options.republishAfterMs ?? 600_000);
        if (n > 0) this.log({ event: "scan_jobs_requeued", count: n });
      } catch (error) {
        this.log({ event: "scan_jobs_sweep_failed", error: String(error) });
      }
    }
    await this.flush();
  }

  /** Publishes everything pending. Concurrent calls share one run (plus one more if asked during it). Returns how many were published. */
  flush(): Promise<number> {
    if (this.flushing) {
      this.again = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      let total = 0;
      try {
        do {
          this.again = false;
          let published: number;
          do {
            published = await this.publishBatch();
            total += published;
          } while (published === this.batchSize);
        } while (this.again);
        if (this.failing) this.log({ event: "scan_job_relay_recovered" });
        this.failing = false;
      } catch (error) {
        // Redis or Postgres unavailable: the rows stay in the outbox for the next attempt.
        if (!this.failing) this.log({ event: "scan_job_relay_failed", error: error instanceof Error ? error.message : String(error) });
        this.failing = true;
      } finally {
        this.flushing = undefined;
      }
      return total;
    })();
    return this.flushing;
  }

  private publishBatch(): Promise<number> {
    return this.options.sql.begin(async (tx) => {
      const rows = await tx`select id from compliance.lock_unpublished_jobs(${this.batchSize})`;
      for (const row of rows) {
        const entryId = await publishJob(this.options.redis, row.id as string, this.stream);
        await tx`select compliance.mark_job_published(${row.id}::uuid, ${entryId})`;
      }
      if (rows.length) this.log({ event: "scan_jobs_published", count: rows.length });
      return rows.length;
    });
  }
}
