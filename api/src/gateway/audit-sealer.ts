import type postgres from "postgres";

/** How long an audit read waits for another sealer (a prune, another API process). */
const READ_LOCK_WAIT = "2s";

/** What one audit.seal call links at most (the migration's limit). */
export const SEAL_BATCH = 5000;

/**
 * Links committed audit events into their hash chains: `audit_sealing.seal(false)` every
 * interval, and before an audit read (sealBeforeRead). Why this is not done inside the recording
 * transaction: migrations/20261203000300_audit_sealed_after_commit.sql. The database lets one sealer work at a time, so every API
 * process may run one; a call that finds another at work returns at once. A failing call
 * (database away, migration not applied yet) is logged once per failure streak and retried at
 * a slower pace; nothing is lost meanwhile, the events wait in audit.unsealed.
 */
export class AuditSealer {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | undefined;
  private failing = false;
  private stopped = false;
  private readSeal: Promise<void> | undefined;
  private nextReadSeal: Promise<void> | undefined;

  constructor(
    private readonly sql: postgres.Sql,
    private readonly intervalMs: number,
    private readonly log: (event: Record<string, unknown>) => void,
  ) {}

  start(): void {
    if (this.intervalMs > 0 && !this.stopped) this.schedule(this.intervalMs);
  }

  /** Seals what is committed now, unless another sealer is at work; the number of events linked. */
  private async sealNow(): Promise<number> {
    const [row] = await this.sql<{ n: string }[]>`select audit_sealing.seal(false) as n`;
    return Number(row?.n ?? 0);
  }

  /**
   * Before an audit read: seals what has committed, waiting up to READ_LOCK_WAIT for a sealer
   * at work elsewhere, so the read shows its caller's recent events with their chain hashes.
   * Concurrent reads share the calls: one runs, and reads arriving meanwhile wait for the next
   * one (the running one may have looked before their events committed), so a flood of reads
   * costs at most one sealing at a time. A failure is logged and the read goes on (its events
   * are then shown unsealed).
   */
  sealBeforeRead(): Promise<void> {
    if (!this.readSeal) {
      this.readSeal = this.sealForRead().finally(() => {
        this.readSeal = undefined;
      });
      return this.readSeal;
    }
    this.nextReadSeal ??= this.readSeal.then(() => {
      this.nextReadSeal = undefined;
      return this.sealBeforeRead();
    });
    return this.nextReadSeal;
  }

  private async sealForRead(): Promise<void> {
    try {
      await this.sql.begin(async (tx) => {
        await tx.unsafe(`set local lock_timeout = '${READ_LOCK_WAIT}'`);
        await tx`select audit_sealing.seal(true)`;
      });
    } catch (error) {
      this.log({ event: "audit_seal_before_read_failed", error: error instanceof Error ? error.message : String(error) });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => {
        this.running = undefined;
      });
    }, delayMs);
    this.timer.unref?.();
  }

  private async tick(): Promise<void> {
    let next = this.intervalMs;
    try {
      // a full batch: more are waiting (after a pause of the sealers), go on at once
      if ((await this.sealNow()) >= SEAL_BATCH) next = 0;
      if (this.failing) this.log({ event: "audit_seal_recovered" });
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.log({ event: "audit_seal_failed", error: error instanceof Error ? error.message : String(error) });
      this.failing = true;
      next = Math.min(Math.max(this.intervalMs * 10, 100), 5000);
    }
    if (!this.stopped) this.schedule(next);
  }
}
