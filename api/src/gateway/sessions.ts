import type { RedisLink } from "./redis";

export const REVOCATION_CHANNEL = "autoaudit:sessions:revoked";
const key = (sid: string) => `sess:${sid}`;
const LOCAL_MAX = 50_000;

export interface SessionGuardOptions {
  /** How long this process trusts an "active" answer without asking again. */
  localTtlMs: number;
  /** How long Redis keeps "active" before the database is asked again. */
  redisActiveTtlSeconds: number;
  /** Revoked markers must outlive every access token of the session. */
  revokedTtlSeconds: number;
  log?: (event: Record<string, unknown>) => void;
}

/**
 * Decides whether the session behind an access token is still active, so a revocation takes
 * effect before the token expires. Layers, fastest first: this process (≤ localTtlMs), Redis
 * (`sess:<sid>`, shared by every instance and updated on revocation), the database
 * (`api.session_active`, the truth). A revocation is published on Redis so every instance
 * drops its local answer at once; without Redis, each instance asks the database at least
 * every localTtlMs. A session is never accepted without one of these layers saying so.
 */
export class SessionGuard {
  private readonly active = new Map<string, number>(); // sid → trusted until (ms)
  private readonly revoked = new Map<string, number>(); // sid → remember until (ms)
  private readonly inflight = new Map<string, Promise<boolean>>();
  /** Revocations Redis missed while it was away, written when it returns. */
  private readonly pending = new Set<string>();

  constructor(
    private readonly redis: RedisLink | undefined,
    /** Asks the database with the caller's token whether its session is active. */
    private readonly askDatabase: (token: string) => Promise<boolean>,
    private readonly options: SessionGuardOptions,
  ) {
    redis?.subscribe(REVOCATION_CHANNEL, (message) => {
      for (const sid of message.split(",")) if (sid) this.rememberRevoked(sid);
    });
    redis?.client.on("ready", () => {
      // Answers given while Redis was away may be stale; and Redis may have missed revocations.
      this.active.clear();
      void this.flushPending();
    });
  }

  /** A plain answer when this process knows it (the common case), else the lookup. */
  isActive(sid: string, token: string): boolean | Promise<boolean> {
    const now = Date.now();
    const revokedUntil = this.revoked.get(sid);
    if (revokedUntil !== undefined) {
      if (revokedUntil > now) return false;
      this.revoked.delete(sid);
    }
    const trustedUntil = this.active.get(sid);
    if (trustedUntil !== undefined && trustedUntil > now) return true;
    let lookup = this.inflight.get(sid);
    if (!lookup) {
      lookup = this.lookup(sid, token).finally(() => this.inflight.delete(sid));
      this.inflight.set(sid, lookup);
    }
    return lookup;
  }

  private async lookup(sid: string, token: string): Promise<boolean> {
    let state: string | null = null;
    let redisAnswered = false;
    if (this.redis?.ready()) {
      try {
        state = await this.redis.client.get(key(sid));
        redisAnswered = true;
      } catch {
        // Redis went away between the check and the command: the database decides.
      }
    }
    if (state === "0") {
      this.rememberRevoked(sid);
      return false;
    }
    if (state === "1") {
      this.trust(sid);
      return true;
    }
    const active = await this.askDatabase(token);
    if (active) {
      this.trust(sid);
      // NX: never overwrite a revocation another instance wrote while we were asking.
      if (redisAnswered) this.redis!.client.set(key(sid), "1", "EX", this.options.redisActiveTtlSeconds, "NX").catch(() => {});
    } else {
      this.rememberRevoked(sid);
      if (redisAnswered) this.redis!.client.set(key(sid), "0", "EX", this.options.revokedTtlSeconds).catch(() => {});
    }
    return active;
  }

  /** A session sign_in or issue_token just proved active. */
  markActive(sid: string): void {
    this.trust(sid);
    if (this.redis?.ready()) {
      this.redis.client.set(key(sid), "1", "EX", this.options.redisActiveTtlSeconds, "NX").catch(() => {});
    }
  }

  /** Sessions the database just revoked: refuse them here now, and everywhere within a second. */
  async markRevoked(sids: string[]): Promise<void> {
    if (sids.length === 0) return;
    for (const sid of sids) this.rememberRevoked(sid);
    try {
      await this.writeRevoked(sids);
    } catch {
      for (const sid of sids) this.pending.add(sid);
      this.options.log?.({ event: "revocation_pending", sessions: sids.length, reason: "redis unavailable" });
    }
  }

  private async writeRevoked(sids: string[]): Promise<void> {
    if (!this.redis) return;
    if (!this.redis.ready()) throw new Error("redis not ready");
    const tx = this.redis.client.multi();
    for (const sid of sids) tx.set(key(sid), "0", "EX", this.options.revokedTtlSeconds);
    tx.publish(REVOCATION_CHANNEL, sids.join(","));
    await tx.exec();
  }

  private async flushPending() {
    if (this.pending.size === 0) return;
    const sids = [...this.pending];
    try {
      await this.writeRevoked(sids);
      for (const sid of sids) this.pending.delete(sid);
    } catch {}
  }

  private trust(sid: string) {
    if (this.options.localTtlMs <= 0) return;
    if (this.active.size >= LOCAL_MAX) this.active.clear();
    this.active.set(sid, Date.now() + this.options.localTtlMs);
  }

  private rememberRevoked(sid: string) {
    this.active.delete(sid);
    if (this.revoked.size >= LOCAL_MAX) this.revoked.clear();
    this.revoked.set(sid, Date.now() + this.options.revokedTtlSeconds * 1000);
  }
}
