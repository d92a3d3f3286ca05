import { LRUCache } from "lru-cache";
import type { RedisLink } from "./redis";

export const REVOCATION_CHANNEL = "autoaudit:sessions:revoked";
/** The channel the database notifies on every session revocation (trigger on auth.sessions). */
export const DATABASE_REVOCATION_CHANNEL = "autoaudit_session_revoked";
const key = (sid: string) => `sess:${sid}`;
/** Redis's "active" marker names the session's user, so it answers only for tokens of that user. */
const activeValue = (sub: string) => `1:${sub}`;
const pairKey = (sid: string, sub: string) => `${sid}:${sub}`;
const LOCAL_MAX = 50_000;

export interface SessionGuardOptions {
  /** How long this process trusts an "active" answer without asking again. */
  localTtlMs: number;
  /** How long Redis keeps "active" before the database is asked again. */
  redisActiveTtlSeconds: number;
  /** Revoked markers must outlive every access token of the session. */
  revokedTtlSeconds: number;
  /** How many sessions this process remembers as active, and as revoked (default 50 000 each). */
  localMax?: number;
  log?: (event: Record<string, unknown>) => void;
}

/**
 * Decides whether the session behind an access token is still active, so a revocation takes
 * effect before the token expires. Layers, fastest first: this process (≤ localTtlMs), Redis
 * (`sess:<sid>`, shared by every instance and updated on revocation), the database
 * (`api.session_active`, the truth). A revocation is published on Redis so every instance
 * drops its local answer at once; without Redis, each instance asks the database at least
 * every localTtlMs. The database also notifies every revocation, whatever path made it (see
 * revokedInDatabase). A session is never accepted without one of these layers saying so, and an
 * answer is only ever reused for the same user (`sub`) it was given for.
 */
export class SessionGuard {
  /** sid → whose session, trusted for localTtlMs. */
  private readonly active: LRUCache<string, string>;
  /**
   * Revoked sids (and sid:sub pairs), each for revokedTtlSeconds. Dropping one for room is safe:
   * Redis or the database is asked again, and says revoked.
   */
  private readonly revoked: LRUCache<string, true>;
  private readonly inflight = new Map<string, Promise<boolean>>();
  /** Revocations Redis missed while it was away, written when it returns. */
  private readonly pending = new Set<string>();
  /** Until then Redis's "active" answers are not trusted: revocations may have been missed. */
  private distrustRedisUntil = 0;

  constructor(
    private readonly redis: RedisLink | undefined,
    /** Asks the database with the caller's token whether its session is active. */
    private readonly askDatabase: (token: string) => Promise<boolean>,
    private readonly options: SessionGuardOptions,
  ) {
    const max = options.localMax ?? LOCAL_MAX;
    this.active = new LRUCache({ max, ttl: Math.max(0, options.localTtlMs) });
    this.revoked = new LRUCache({ max, ttl: options.revokedTtlSeconds * 1000 });
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
  isActive(sid: string, sub: string, token: string): boolean | Promise<boolean> {
    if (this.revoked.has(sid) || this.revoked.has(pairKey(sid, sub))) return false;
    if (this.active.get(sid) === sub) return true;
    const flight = pairKey(sid, sub);
    let lookup = this.inflight.get(flight);
    if (!lookup) {
      lookup = this.lookup(sid, sub, token).finally(() => this.inflight.delete(flight));
      this.inflight.set(flight, lookup);
    }
    return lookup;
  }

  private async lookup(sid: string, sub: string, token: string): Promise<boolean> {
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
    if (state === activeValue(sub) && Date.now() >= this.distrustRedisUntil) {
      this.trust(sid, sub);
      return true;
    }
    // The database checks that the session is active and belongs to the token's `sub`.
    const active = await this.askDatabase(token);
    if (active) {
      this.trust(sid, sub);
      // NX: never overwrite a revocation another instance wrote while we were asking.
      if (redisAnswered) this.redis!.client.set(key(sid), activeValue(sub), "EX", this.options.redisActiveTtlSeconds, "NX").catch(() => {});
    } else {
      // Revoked, or not this user's session: the answer holds for this pair only. Real
      // revocations reach every instance and Redis through the database's notification.
      this.rememberRevoked(pairKey(sid, sub));
    }
    return active;
  }

  /** A session sign_in or issue_token just proved active for user `sub`. */
  markActive(sid: string, sub: string): void {
    this.trust(sid, sub);
    if (this.redis?.ready()) {
      this.redis.client.set(key(sid), activeValue(sub), "EX", this.options.redisActiveTtlSeconds, "NX").catch(() => {});
    }
  }

  /**
   * A revocation the database announced (NOTIFY from the trigger on auth.sessions). Every
   * instance hears it, so it is remembered here and written to Redis without a broadcast.
   */
  revokedInDatabase(sid: string): void {
    this.rememberRevoked(sid);
    if (!this.redis?.ready()) {
      this.pending.add(sid);
      return;
    }
    this.redis.client.set(key(sid), "0", "EX", this.options.revokedTtlSeconds).catch(() => this.pending.add(sid));
  }

  /**
   * The database listener (re)connected: notifications sent while it was away are lost, so
   * nothing this process or Redis remembers as active is trusted until asked again.
   */
  listenerReconnected(): void {
    this.active.clear();
    this.distrustRedisUntil = Date.now() + this.options.redisActiveTtlSeconds * 1000;
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

  private trust(sid: string, sub: string) {
    if (this.options.localTtlMs <= 0) return;
    this.active.set(sid, sub);
  }

  private rememberRevoked(sid: string) {
    this.active.delete(sid);
    this.revoked.set(sid, true);
  }
}
