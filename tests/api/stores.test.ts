// The gateway's Redis-backed building blocks against a real redis-server, and their in-process
// twins (used without Redis) against the same expectations.
import { afterAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { Admission } from "../../api/src/gateway/admission";
import { MemoryResponseCache, RedisResponseCache, type ResponseCache } from "../../api/src/gateway/cache";
import { ApiError } from "../../api/src/gateway/errors";
import { createRateLimits, type RateLimits } from "../../api/src/gateway/rate-limit";
import { connectRedis } from "../../api/src/gateway/redis";
import { freePort } from "../../api/src/stack/free-port";
import { redisServerAvailable, startRedisServer } from "../../api/src/stack/redis-server";
import { testStack } from "../support/stack";

const link = connectRedis(testStack().redisUrl);
afterAll(() => link.close());

async function redisReady() {
  for (let i = 0; i < 100 && !link.ready(); i++) await Bun.sleep(20);
  expect(link.ready()).toBe(true);
}

const RATE = { ipMax: 3, ipWindowSeconds: 1, emailMax: 2, emailWindowSeconds: 60 };

/** The AA401 a spent budget is refused with, and its Retry-After in seconds. */
async function refusal(attempt: Promise<void>): Promise<number> {
  const error = await attempt.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(ApiError);
  const response = (error as ApiError).toResponse();
  expect(response.status).toBe(429);
  expect(((await response.json()) as { code: string }).code).toBe("AA401");
  return Number(response.headers.get("retry-after"));
}

const limitStores: [string, () => Promise<RateLimits>][] = [
  ["redis", async () => (await redisReady(), createRateLimits(RATE, link))],
  ["memory", async () => createRateLimits(RATE, undefined)],
];

for (const [name, make] of limitStores) {
  describe(`${name} rate limits`, () => {
    test("allow max attempts per window, refuse the next with a Retry-After, recover after the window", async () => {
      const { perAddress } = await make();
      const key = `test:${randomUUID()}`;
      for (let i = 0; i < 3; i++) await perAddress.consume(key);
      const retryAfter = await refusal(perAddress.consume(key));
      expect(retryAfter).toBe(1);
      // Refused attempts do not move the window's end: waiting out Retry-After is enough.
      await refusal(perAddress.consume(key));
      await Bun.sleep(retryAfter * 1000 + 100);
      await perAddress.consume(key);
    });

    test("record counts without checking, and a check does not count", async () => {
      const { perAccount } = await make();
      const key = `test:${randomUUID()}`;
      for (let i = 0; i < 5; i++) await perAccount.check(key);
      await perAccount.record(key);
      await perAccount.check(key);
      await perAccount.record(key);
      const retryAfter = await refusal(perAccount.check(key));
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
    });

    test("a limit of 0 is no limit", async () => {
      const { perAddress } = createRateLimits({ ...RATE, ipMax: 0 }, name === "redis" ? link : undefined);
      for (let i = 0; i < 10; i++) await perAddress.consume("test:unlimited");
    });
  });
}

describe.skipIf(!redisServerAvailable())("rate limits while Redis is away", () => {
  test("counted in Redis while it answers (shared by instances), in this process once it stops", async () => {
    const redis = await startRedisServer();
    const own = connectRedis(redis.url);
    try {
      for (let i = 0; i < 100 && !own.ready(); i++) await Bun.sleep(20);
      expect(own.ready()).toBe(true);
      const config = { ...RATE, emailMax: 3 };
      const [a, b] = [createRateLimits(config, own), createRateLimits(config, own)];
      const key = `test:${randomUUID()}`;
      await a.perAccount.consume(key);
      await b.perAccount.consume(key);
      await a.perAccount.consume(key);
      await refusal(b.perAccount.consume(key)); // one budget in Redis

      await redis.stop();
      for (let i = 0; i < 100 && own.ready(); i++) await Bun.sleep(20);
      expect(own.ready()).toBe(false);
      // The insurance limiter starts its own count: 3 more, then refused, without Redis.
      const other = `test:${randomUUID()}`;
      for (let i = 0; i < 3; i++) await a.perAccount.consume(other);
      await refusal(a.perAccount.consume(other));
      await a.perAccount.record(`${other}:failures`);
      await a.perAccount.record(`${other}:failures`);
      await a.perAccount.record(`${other}:failures`);
      await refusal(a.perAccount.check(`${other}:failures`));
    } finally {
      await own.close();
      await redis.stop();
    }
  });

  test("a configured Redis that never answered: limits hold in this process", async () => {
    const unreachable = connectRedis(`redis://127.0.0.1:${await freePort()}`);
    try {
      const { perAddress } = createRateLimits(RATE, unreachable);
      const key = `test:${randomUUID()}`;
      for (let i = 0; i < 3; i++) await perAddress.consume(key);
      expect(await refusal(perAddress.consume(key))).toBe(1);
    } finally {
      await unreachable.close();
    }
  });
});

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

describe("memory response cache bounds", () => {
  const value = { status: 200, headers: [] as [string, string][], body: "[]" };

  test("holds at most maxEntries, the least recently used go first", async () => {
    const cache = new MemoryResponseCache({ maxEntries: 2 });
    for (const key of ["a", "b"]) await cache.store(key, [], [], value, 60_000);
    expect((await cache.lookup("a", [])).hit).toEqual(value); // a is now the most recent
    await cache.store("c", [], [], value, 60_000);
    expect((await cache.lookup("b", [])).hit).toBeUndefined();
    expect((await cache.lookup("a", [])).hit).toEqual(value);
    expect((await cache.lookup("c", [])).hit).toEqual(value);
  });

  test("holds at most maxBytes of bodies", async () => {
    const cache = new MemoryResponseCache({ maxBytes: 1000 });
    const big = { ...value, body: "x".repeat(400) };
    for (const key of ["a", "b", "c"]) await cache.store(key, [], [], big, 60_000);
    expect((await cache.lookup("a", [])).hit).toBeUndefined();
    expect((await cache.lookup("c", [])).hit).toEqual(big);
  });

  test("a tag version dropped for room never lets an answer computed across its eviction in", async () => {
    const cache = new MemoryResponseCache({ maxTags: 1 });
    const before = await cache.lookup("k", ["tenant:1"]);
    await cache.evict(["tenant:1"]); // a write, while the read is at the database
    await cache.evict(["tenant:2"]); // another: tenant:1's version is dropped for room
    await cache.store("k", ["tenant:1"], before.versions, value, 60_000);
    expect((await cache.lookup("k", ["tenant:1"])).hit).toBeUndefined();
    // Stored after both writes, it is a hit; evicting its tag (dropped or not) ends it.
    const after = await cache.lookup("k", ["tenant:1"]);
    await cache.store("k", ["tenant:1"], after.versions, value, 60_000);
    expect((await cache.lookup("k", ["tenant:1"])).hit).toEqual(value);
    await cache.evict(["tenant:1"]);
    expect((await cache.lookup("k", ["tenant:1"])).hit).toBeUndefined();
  });
});

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
