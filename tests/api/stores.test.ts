// The gateway's Redis-backed building blocks against a real redis-server, and their in-process
// twins (used without Redis) against the same expectations.
import { afterAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { Admission } from "../../api/src/gateway/admission";
import { MemoryResponseCache, RedisResponseCache, type ResponseCache } from "../../api/src/gateway/cache";
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from "../../api/src/gateway/rate-limit";
import { connectRedis } from "../../api/src/gateway/redis";
import { testStack } from "../support/stack";

const link = connectRedis(testStack().redisUrl);
afterAll(() => link.close());

async function redisReady() {
  for (let i = 0; i < 100 && !link.ready(); i++) await Bun.sleep(20);
  expect(link.ready()).toBe(true);
}

const limiters: [string, () => Promise<RateLimiter>][] = [
  ["redis", async () => (await redisReady(), new RedisRateLimiter(link))],
  ["memory", async () => new MemoryRateLimiter()],
];

for (const [name, make] of limiters) {
  describe(`${name} rate limiter`, () => {
    test("allows max attempts per window, refuses the next with a Retry-After, recovers after the window", async () => {
      const limiter = await make();
      const key = `test:${randomUUID()}`;
      for (let i = 0; i < 3; i++) expect((await limiter.attempt(key, 3, 1, true)).allowed).toBe(true);
      const refused = await limiter.attempt(key, 3, 1, true);
      expect(refused.allowed).toBe(false);
      expect(refused.retryAfter).toBeGreaterThanOrEqual(1);
      expect(refused.retryAfter).toBeLessThanOrEqual(2);
      // Refused attempts are not counted: waiting out the sliding window is enough.
      await Bun.sleep(2100);
      expect((await limiter.attempt(key, 3, 1, true)).allowed).toBe(true);
    });

    test("record counts without checking, and a check without consume does not count", async () => {
      const limiter = await make();
      const key = `test:${randomUUID()}`;
      for (let i = 0; i < 5; i++) expect((await limiter.attempt(key, 2, 60, false)).allowed).toBe(true);
      await limiter.record(key, 60);
      await limiter.record(key, 60);
      const decision = await limiter.attempt(key, 2, 60, false);
      expect(decision.allowed).toBe(false);
      expect(decision.retryAfter).toBeGreaterThan(0);
      expect(decision.retryAfter).toBeLessThanOrEqual(120);
    });
  });
}

const caches: [string, () => Promise<ResponseCache>][] = [
  ["redis", async () => (await redisReady(), new RedisResponseCache(link))],
  ["memory", async () => new MemoryResponseCache()],
];

for (const [name, make] of caches) {
  describe(`${name} response cache`, () => {
    const value = { status: 200, headers: [["content-type", "application/json"]] as [string, string][], body: '{"n":1}' };

    test("stores, hits, and expires", async () => {
      const cache = await make();
      const key = randomUUID();
      const miss = await cache.lookup(key, []);
      expect(miss.hit).toBeUndefined();
      await cache.store(key, [], miss.versions, value, 300);
      expect((await cache.lookup(key, [])).hit).toEqual(value);
      await Bun.sleep(400);
      expect((await cache.lookup(key, [])).hit).toBeUndefined();
    });

    test("evicting a tag removes its entries and leaves others", async () => {
      const cache = await make();
      const tag = `tenant:${randomUUID()}`;
      const [a, b] = [randomUUID(), randomUUID()];
      await cache.store(a, [tag], (await cache.lookup(a, [tag])).versions, value, 60_000);
      await cache.store(b, [], [], value, 60_000);
      await cache.evict([tag]);
      expect((await cache.lookup(a, [tag])).hit).toBeUndefined();
      expect((await cache.lookup(b, [])).hit).toEqual(value);
    });

    test("an answer computed across an eviction is not stored", async () => {
      const cache = await make();
      const tag = `tenant:${randomUUID()}`;
      const key = randomUUID();
      const before = await cache.lookup(key, [tag]);
      await cache.evict([tag]); // a write lands while the read is at the database
      await cache.store(key, [tag], before.versions, value, 60_000);
      expect((await cache.lookup(key, [tag])).hit).toBeUndefined();
    });
  });
}

describe("sign-in admission", () => {
  test("runs `limit` at once, queues `queue` more, refuses the rest immediately", async () => {
    const admission = new Admission(2, 1, 5_000);
    const first = await admission.acquire();
    const second = await admission.acquire();
    expect(first).toBeFunction();
    expect(second).toBeFunction();
    const queued = admission.acquire();
    expect(await admission.acquire()).toBeUndefined();
    expect(admission.stats()).toEqual({ running: 2, waiting: 1, limit: 2 });
    first!();
    const third = await queued;
    expect(third).toBeFunction();
    second!();
    third!();
    expect(admission.stats()).toEqual({ running: 0, waiting: 0, limit: 2 });
  });

  test("a waiter that cannot start within the timeout is refused", async () => {
    const admission = new Admission(1, 5, 50);
    const holder = await admission.acquire();
    expect(await admission.acquire()).toBeUndefined();
    holder!();
    expect(admission.stats().running).toBe(0);
  });
});

describe("cache entry encoding", () => {
  test("round-trips status, headers and a body with newlines and unicode; anything else is a miss", async () => {
    const { encodeEntry, decodeEntry } = await import("../../api/src/gateway/cache");
    const value = { status: 200, headers: [["content-type", "application/json"], ["content-range", "0-1/*"]] as [string, string][], body: '[{"a":"line\\none"},\n{"b":"Zürich ✓"}]' };
    expect(decodeEntry(encodeEntry(value))).toEqual(value);
    expect(decodeEntry(encodeEntry({ ...value, body: "" }))).toEqual({ ...value, body: "" });
    for (const bad of ["", "200", "200\n[]", "x\n[]\nbody", "200\n{not json\nbody", '200\n{"a":1}\nbody']) expect(decodeEntry(bad)).toBeUndefined();
  });
});
