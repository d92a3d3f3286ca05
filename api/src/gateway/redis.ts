import Redis from "ioredis";

/**
 * The gateway's Redis connections: one for commands, one subscribed to revocations. Commands
 * never queue while Redis is away (they fail at once and the caller degrades), and a slow
 * Redis cannot hold a request for longer than `commandTimeoutMs`. Both connections reconnect
 * by themselves, forever, with a capped backoff.
 */
export interface RedisLink {
  readonly client: Redis;
  /** True while the command connection is ready. */
  ready(): boolean;
  /** Subscribes to a channel; the handler survives reconnects. */
  subscribe(channel: string, handler: (message: string) => void): void;
  ping(): Promise<number>;
  close(): Promise<void>;
}

export function connectRedis(url: string, options: { commandTimeoutMs?: number; log?: (event: Record<string, unknown>) => void } = {}): RedisLink {
  const log = options.log ?? (() => {});
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), 1000),
    lazyConnect: false,
  } as const;
  const client = new Redis(url, { ...common, commandTimeout: options.commandTimeoutMs ?? 250 });
  // Subscriber: its own connection (a subscribed connection cannot run other commands); the
  // offline queue lets SUBSCRIBE wait for the first connect, and ioredis re-subscribes after.
  const subscriber = new Redis(url, { ...common, enableOfflineQueue: true, maxRetriesPerRequest: null });
  let wasReady = false;
  client.on("ready", () => {
    if (!wasReady) log({ event: "redis_up" });
    wasReady = true;
  });
  client.on("error", () => {});
  client.on("close", () => {
    if (wasReady) log({ event: "redis_down" });
    wasReady = false;
  });
  subscriber.on("error", () => {});

  const handlers = new Map<string, (message: string) => void>();
  subscriber.on("message", (channel: string, message: string) => handlers.get(channel)?.(message));

  return {
    client,
    ready: () => client.status === "ready",
    subscribe(channel, handler) {
      handlers.set(channel, handler);
      subscriber.subscribe(channel).catch(() => {});
    },
    async ping() {
      const started = performance.now();
      await client.ping();
      return performance.now() - started;
    },
    async close() {
      client.disconnect();
      subscriber.disconnect();
    },
  };
}
