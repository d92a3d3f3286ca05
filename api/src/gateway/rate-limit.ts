import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";
import type { ApiConfig } from "../config";
import { gatewayErrors } from "./errors";
import type { RedisLink } from "./redis";

/**
 * One budget of attempts per key and window (rate-limiter-flexible's fixed window, opened by a
 * key's first attempt). A spent budget is refused with AA401 and a Retry-After until that
 * window closes; attempts made meanwhile do not move its end, so hammering cannot extend it.
 */
export interface Limit {
  /** Counts one attempt; refuses it (AA401, thrown) when the budget is already spent. */
  consume(key: string): Promise<void>;
  /** Refuses (AA401, thrown) when the budget is spent, without counting (sign-in counts failures only). */
  check(key: string): Promise<void>;
  /** Counts one attempt without checking (a failed sign-in, after the fact). */
  record(key: string): Promise<void>;
}

export interface RateLimits {
  /** RATE_LIMIT_IP_*: sign_in and sign_up together, per client address; /auth/authorize on its own key. */
  perAddress: Limit;
  /** RATE_LIMIT_EMAIL_*: per account and client address. */
  perAccount: Limit;
}

/**
 * The limits in Redis, shared by every instance; while Redis is away (or without one) in this
 * process, so they then hold per instance. The in-process limiter is rate-limiter-flexible's
 * insurance: it answers at once whenever Redis is not ready or a command fails.
 */
export function createRateLimits(config: ApiConfig["rateLimit"], redis: RedisLink | undefined): RateLimits {
  return {
    perAddress: limit("address", config.ipMax, config.ipWindowSeconds, "client address", redis),
    perAccount: limit("account", config.emailMax, config.emailWindowSeconds, "account and client address", redis),
  };
}

const DISABLED: Limit = { consume: async () => {}, check: async () => {}, record: async () => {} };

function limit(name: string, points: number, duration: number, scope: string, redis: RedisLink | undefined): Limit {
  if (points <= 0) return DISABLED;
  // The window is part of the key: a counter opened under another window (an instance with other
  // settings, or during a rolling change of them) would otherwise decide this one's expiry.
  const keyPrefix = `rl:${name}:${duration}`;
  const memory = new RateLimiterMemory({ keyPrefix, points, duration });
  const limiter: RateLimiterAbstract = redis
    ? new RateLimiterRedis({ storeClient: redis.client, keyPrefix, points, duration, insuranceLimiter: memory, rejectIfRedisNotReady: true })
    : memory;
  const refusal = (msBeforeNext: number) => gatewayErrors.rateLimited(Math.max(1, Math.ceil(msBeforeNext / 1000)), scope);
  return {
    async consume(key) {
      try {
        await limiter.consume(key);
      } catch (rejection) {
        throw rejection instanceof RateLimiterRes ? refusal(rejection.msBeforeNext) : rejection;
      }
    },
    async check(key) {
      const state = await limiter.get(key);
      if (state && state.consumedPoints >= points) throw refusal(state.msBeforeNext);
    },
    async record(key) {
      await limiter.penalty(key);
    },
  };
}
