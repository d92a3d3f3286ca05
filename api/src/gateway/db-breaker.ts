/**
 * Knows when PostgreSQL is unreachable, so requests get PostgREST's 503 at once instead of
 * queueing on an upstream that waits for its connections. It trips only on its own evidence:
 * an upstream 503 or timeout makes it probe the database (through the gateway's own pool);
 * only a failed probe marks the database down. While down it re-probes in the background at
 * most every `intervalMs`, and the first successful probe lets requests through again.
 */
export class DatabaseBreaker {
  private down = false;
  private lastProbe = 0;
  private probing: Promise<boolean> | undefined;

  constructor(
    private readonly probe: () => Promise<unknown>,
    private readonly intervalMs = 250,
    private readonly log: (event: Record<string, unknown>) => void = () => {},
  ) {}

  /** True while the last probe found the database unreachable (and re-probes when due). */
  isDown(): boolean {
    if (this.down && Date.now() - this.lastProbe >= this.intervalMs) void this.check();
    return this.down;
  }

  /** An upstream answer suggested the database is gone: find out. Resolves to "down". */
  suspect(): Promise<boolean> {
    return this.check();
  }

  private check(): Promise<boolean> {
    this.probing ??= (async () => {
      this.lastProbe = Date.now();
      let reachable: boolean;
      try {
        await this.probe();
        reachable = true;
      } catch {
        reachable = false;
      }
      if (reachable === this.down) this.log({ event: reachable ? "database_up" : "database_down" });
      this.down = !reachable;
      return this.down;
    })().finally(() => (this.probing = undefined));
    return this.probing;
  }
}
