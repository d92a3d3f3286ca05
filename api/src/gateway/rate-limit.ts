import type { RedisLink } from "./redis";

export interface LimitDecision {
  allowed: boolean;
  /** Seconds until one more attempt would be allowed (when not allowed). */
  retryAfter: number;
}

/**
 * Sliding-window counters (the current fixed window plus the previous one, weighted by how
 * much of it still overlaps): smooth like a log of attempts, two integers per key. Blocked
 * attempts are not counted, so an attacker cannot extend a lockout by hammering: once they
 * stop, the account is usable again within one window.
 */
export interface RateLimiter {
  /** Checks the limit and, when allowed and `consume`, counts one attempt. */
  attempt(key: string, max: number, windowSeconds: number, consume: boolean): Promise<LimitDecision>;
  /** Counts one attempt without checking (e.g. a failed sign-in, counted after the fact). */
  record(key: string, windowSeconds: number): Promise<void>;
}

function decide(current: number, previous: number, max: number, windowMs: number, elapsedMs: number): LimitDecision {
  const weighted = current + (previous * (windowMs - elapsedMs)) / windowMs;
  if (weighted < max) return { allowed: true, retryAfter: 0 };
  let waitMs: number;
  if (current < max && previous > 0) {
    // Still in this window: wait until the previous window's weight has decayed enough.
    waitMs = windowMs - elapsedMs - ((max - current) * windowMs) / previous;
  } else {
    // Into the next window, where this window's count becomes the decaying one.
    waitMs = windowMs - elapsedMs + Math.max(0, windowMs * (1 - max / Math.max(current, 1)));
  }
  return { allowed: false, retryAfter: Math.max(1, Math.ceil(waitMs / 1000)) };
}

// KEYS[1] = key prefix. ARGV: max, window ms, consume (0/1). Uses the server's clock so
// every gateway instance agrees on the window.
const ATTEMPT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local currentKey = KEYS[1] .. ':' .. index
local current = tonumber(redis.call('GET', currentKey) or '0')
local previous = tonumber(redis.call('GET', KEYS[1] .. ':' .. (index - 1)) or '0')
local elapsed = now - index * window
local weighted = current + previous * (window - elapsed) / window
if weighted < tonumber(ARGV[1]) and ARGV[3] == '1' then
  current = redis.call('INCR', currentKey)
  redis.call('PEXPIRE', currentKey, window * 2)
  current = current - 1
end
return { current, previous, elapsed }`;

const RECORD_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local currentKey = KEYS[1] .. ':' .. math.floor(now / window)
redis.call('INCR', currentKey)
redis.call('PEXPIRE', currentKey, window * 2)
return 1`;

export class RedisRateLimiter implements RateLimiter {
  constructor(private readonly redis: RedisLink) {}

  async attempt(key: string, max: number, windowSeconds: number, consume: boolean): Promise<LimitDecision> {
    const windowMs = windowSeconds * 1000;
    const [current, previous, elapsed] = (await this.redis.client.eval(ATTEMPT_SCRIPT, 1, `rl:${key}`, String(max), String(windowMs), consume ? "1" : "0")) as number[];
    return decide(current!, previous!, max, windowMs, elapsed!);
  }

  async record(key: string, windowSeconds: number): Promise<void> {
    await this.redis.client.eval(RECORD_SCRIPT, 1, `rl:${key}`, String(windowSeconds * 1000));
  }
}

/** Same algorithm in this process: without Redis, or while it is away (limits then apply per instance). */
export class MemoryRateLimiter implements RateLimiter {
  private readonly counts = new Map<string, number>();

  async attempt(key: string, max: number, windowSeconds: number, consume: boolean): Promise<LimitDecision> {
    const windowMs = windowSeconds * 1000;
    const now = Date.now();
    const index = Math.floor(now / windowMs);
    const current = this.counts.get(`${key}:${index}`) ?? 0;
    const previous = this.counts.get(`${key}:${index - 1}`) ?? 0;
    const decision = decide(current, previous, max, windowMs, now - index * windowMs);
    if (decision.allowed && consume) this.bump(`${key}:${index}`, windowMs);
    return decision;
  }

  async record(key: string, windowSeconds: number): Promise<void> {
    const windowMs = windowSeconds * 1000;
    this.bump(`${key}:${Math.floor(Date.now() / windowMs)}`, windowMs);
  }

  private bump(counter: string, windowMs: number) {
    const existing = this.counts.get(counter);
    this.counts.set(counter, (existing ?? 0) + 1);
    if (existing === undefined) setTimeout(() => this.counts.delete(counter), windowMs * 2).unref?.();
  }
}

/** Redis when it answers, this process's counters when it does not. */
export class FallbackRateLimiter implements RateLimiter {
  constructor(
    private readonly primary: RedisRateLimiter,
    private readonly redis: RedisLink,
    private readonly fallback = new MemoryRateLimiter(),
  ) {}

  async attempt(key: string, max: number, windowSeconds: number, consume: boolean): Promise<LimitDecision> {
    if (this.redis.ready()) {
      try {
        return await this.primary.attempt(key, max, windowSeconds, consume);
      } catch {}
    }
    return this.fallback.attempt(key, max, windowSeconds, consume);
  }

  async record(key: string, windowSeconds: number): Promise<void> {
    if (this.redis.ready()) {
      try {
        return await this.primary.record(key, windowSeconds);
      } catch {}
    }
    return this.fallback.record(key, windowSeconds);
  }
}
