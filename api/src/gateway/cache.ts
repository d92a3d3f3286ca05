import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { RedisKey, Result } from "ioredis";
import type { RedisLink } from "./redis";

declare module "ioredis" {
  interface RedisCommander<Context> {
    /** STORE_SCRIPT: keys entry, tags…, versions…; argv entry, ttl ms, tag count, versions…. */
    responseCacheStore(numKeys: number, ...keysAndArgs: RedisKey[]): Result<number, Context>;
    /** EVICT_SCRIPT: keys tag set, tag version. */
    responseCacheEvict(tagKey: RedisKey, versionKey: RedisKey): Result<number, Context>;
  }
}

/** A cached upstream answer: status, the headers worth replaying, body. */
export interface CachedResponse {
  status: number;
  headers: [string, string][];
  body: string;
}

export interface CacheLookup {
  hit?: CachedResponse;
  /** Tag versions seen before the upstream call; a store only succeeds if none moved since. */
  versions: string[];
}

/**
 * The GET /rpc answer cache. Entries are tagged; evicting a tag bumps its version, so an
 * answer computed while a write was evicting (read before, stored after) is never stored.
 */
export interface ResponseCache {
  lookup(key: string, tags: string[]): Promise<CacheLookup>;
  store(key: string, tags: string[], versions: string[], value: CachedResponse, ttlMs: number): Promise<void>;
  evict(tags: string[]): Promise<void>;
  /** Whether a lookup now can hit (false while Redis is away: answers bypass the cache). */
  available(): boolean;
}

// v2 entries are `status \n headers-json \n body`: a hit reads the body as a slice instead of
// JSON-parsing it out of an escaped string (a 50-rule list is ~10 KB per hit).
const entryKey = (key: string) => `rc2:${createHash("sha1").update(key).digest("base64url")}`;
const tagKey = (tag: string) => `rctag:${tag}`;
const versionKey = (tag: string) => `rcver:${tag}`;

export function encodeEntry(value: CachedResponse): string {
  return `${value.status}\n${JSON.stringify(value.headers)}\n${value.body}`;
}

/** The entry, or undefined when it is not one (never thrown: a bad entry is a miss). */
export function decodeEntry(entry: string): CachedResponse | undefined {
  const first = entry.indexOf("\n");
  const second = first < 0 ? -1 : entry.indexOf("\n", first + 1);
  if (second < 0) return undefined;
  const status = Number(entry.slice(0, first));
  let headers: unknown;
  try {
    headers = JSON.parse(entry.slice(first + 1, second));
  } catch {
    return undefined;
  }
  if (!Number.isInteger(status) || !Array.isArray(headers)) return undefined;
  return { status, headers: headers as [string, string][], body: entry.slice(second + 1) };
}

const STORE_SCRIPT = `
local n = tonumber(ARGV[3])
for i = 1, n do
  local v = redis.call('GET', KEYS[1 + n + i]) or '0'
  if v ~= ARGV[3 + i] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 1, n do
  redis.call('SADD', KEYS[1 + i], KEYS[1])
  if redis.call('PTTL', KEYS[1 + i]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1 + i], ARGV[2]) end
end
return 1`;

const EVICT_SCRIPT = `
local members = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(members) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
return #members`;

export class RedisResponseCache implements ResponseCache {
  /** Evictions Redis missed while it was away, replayed when it returns. */
  private readonly pending = new Set<string>();

  constructor(private readonly redis: RedisLink) {
    // Sent as EVALSHA (ioredis loads a script once per connection, on NOSCRIPT), not whole each call.
    redis.client.defineCommand("responseCacheStore", { lua: STORE_SCRIPT });
    redis.client.defineCommand("responseCacheEvict", { lua: EVICT_SCRIPT, numberOfKeys: 2 });
    redis.client.on("ready", () => {
      if (this.pending.size === 0) return;
      const tags = [...this.pending];
      this.pending.clear();
      void this.evict(tags);
    });
  }

  available() {
    return this.redis.ready();
  }

  async lookup(key: string, tags: string[]): Promise<CacheLookup> {
    const values = await this.redis.client.mget(entryKey(key), ...tags.map(versionKey));
    const [entry, ...versions] = values;
    return {
      hit: entry ? decodeEntry(entry) : undefined,
      versions: versions.map((v) => v ?? "0"),
    };
  }

  async store(key: string, tags: string[], versions: string[], value: CachedResponse, ttlMs: number): Promise<void> {
    const keys = [entryKey(key), ...tags.map(tagKey), ...tags.map(versionKey)];
    await this.redis.client.responseCacheStore(keys.length, ...keys, encodeEntry(value), String(ttlMs), String(tags.length), ...versions);
  }

  async evict(tags: string[]): Promise<void> {
    if (tags.length === 0) return;
    try {
      if (!this.redis.ready()) throw new Error("redis not ready");
      await Promise.all(tags.map((tag) => this.redis.client.responseCacheEvict(tagKey(tag), versionKey(tag))));
    } catch {
      for (const tag of tags) this.pending.add(tag);
    }
  }
}

interface MemoryEntry {
  value: CachedResponse;
  /** The entry's tags and their versions when it was stored: it is a hit only while they hold. */
  tags: string[];
  versions: string[];
}

/**
 * The cache without Redis (`bun run dev` where redis-server is missing): this process only,
 * bounded in entries and bytes, least recently used first out. Eviction needs no tag → keys
 * index: an entry is a hit only while its tags' versions are those it was stored with.
 */
export class MemoryResponseCache implements ResponseCache {
  private readonly entries: LRUCache<string, MemoryEntry>;
  /** tag → version. Versions come from one counter, so none is ever handed out twice. */
  private readonly versions: LRUCache<string, number>;
  private clock = 0;
  /**
   * What a tag without a version reads as. Raised to the counter when a version is dropped for
   * room, so a dropped tag never reads as a version a read may have seen before its eviction.
   */
  private floor = 0;

  constructor(limits: { maxEntries?: number; maxBytes?: number; maxTags?: number } = {}) {
    this.entries = new LRUCache<string, MemoryEntry>({
      max: limits.maxEntries ?? 10_000,
      maxSize: limits.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (entry) => entry.value.body.length + 64,
    });
    this.versions = new LRUCache<string, number>({
      max: limits.maxTags ?? 10_000,
      dispose: (_version, _tag, reason) => {
        if (reason === "evict") this.floor = this.clock;
      },
    });
  }

  available() {
    return true;
  }

  private versionOf(tag: string): string {
    return String(this.versions.get(tag) ?? this.floor);
  }

  async lookup(key: string, tags: string[]): Promise<CacheLookup> {
    const entry = this.entries.get(key);
    const hit = entry && entry.tags.every((t, i) => this.versionOf(t) === entry.versions[i]) ? entry.value : undefined;
    return { hit, versions: tags.map((t) => this.versionOf(t)) };
  }

  async store(key: string, tags: string[], versions: string[], value: CachedResponse, ttlMs: number): Promise<void> {
    // lru-cache reads a ttl of 0 as "forever".
    if (ttlMs <= 0 || tags.some((t, i) => this.versionOf(t) !== versions[i])) return;
    this.entries.set(key, { value, tags, versions }, { ttl: ttlMs });
  }

  async evict(tags: string[]): Promise<void> {
    for (const tag of tags) this.versions.set(tag, ++this.clock);
  }
}
