// Redis stopped mid-test: the API keeps serving (cache bypassed, limits per process, sessions
// checked against the database), never accepts a revoked session, and reconnects by itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { freePort } from "../../api/src/stack/free-port";
import { startRedisServer, type RunningRedis } from "../../api/src/stack/redis-server";
import { testStack } from "../support/stack";
import { call, newUser, signIn, signUp } from "./helpers";

const baseEnv = testStack().apiEnv;

describe.skipIf(!baseEnv)("Redis outage [stops a Redis server: not with API_URL]", () => {
  let redis: RunningRedis;
  let a: RunningApi;
  let b: RunningApi;

  beforeAll(async () => {
    redis = await startRedisServer();
    const env = { ...baseEnv!, REDIS_URL: redis.url };
    [a, b] = await Promise.all([startApi(loadConfig(env), () => {}), startApi(loadConfig(env), () => {})]);
  }, 30_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  async function until(check: () => Promise<boolean>, timeoutMs: number) {
    const started = performance.now();
    while (performance.now() - started < timeoutMs) {
      if (await check()) return true;
      await Bun.sleep(50);
    }
    return false;
  }

  test("serves through the outage, refuses revoked sessions, and recovers when Redis returns", async () => {
    const user = newUser();
    await signUp(user, a.url);
    const session = await signIn(user, a.url);
    const spare = await signIn(user, a.url); // a second session, revoked during the outage
    const tenant = await call("/rpc/create_tenant", { base: a.url, token: session.access_token, body: { name: "Outage Ltd" } });
    const rulesPath = `/rpc/list_rules?tenant_id=${tenant.json.id}`;
    expect((await call(rulesPath, { base: a.url, token: session.access_token })).headers.get("x-cache")).toBe("MISS");
    expect((await call(rulesPath, { base: a.url, token: session.access_token })).headers.get("x-cache")).toBe("HIT");
    for (const api of [a, b]) expect((await call("/rpc/me", { base: api.url, token: spare.access_token })).status).toBe(200);

    await redis.stop();

    // Health names Redis as down but the API is still up (Redis is not required).
    const health = await call("/health", { base: a.url });
    expect(health.status).toBe(200);
    expect(health.json.status).toBe("degraded");
    expect(health.json.down).toEqual(["redis"]);
    // Which part is down, never the driver's own error text.
    expect(health.json.checks.redis.error).toBe("unreachable");

    // Every route still answers: auth, uncached reads, writes, sign-in (limits per process).
    expect((await call("/rpc/me", { base: a.url, token: session.access_token })).status).toBe(200);
    expect((await call("/rpc/me", { base: b.url, token: session.access_token })).status).toBe(200);
    const uncached = await call(rulesPath, { base: a.url, token: session.access_token });
    expect(uncached.status).toBe(200);
    expect(uncached.headers.get("x-cache")).toBe("MISS");
    const again = await signIn(user, b.url);
    expect((await call("/rpc/me", { base: b.url, token: again.access_token })).status).toBe(200);
    const refreshed = await call("/rpc/issue_token", { base: b.url, body: { refresh_token: again.refresh_token } });
    expect(refreshed.status).toBe(200);

    // Revoked on A while Redis is away: refused on A at once, and on B within a second
    // (B asks the database once its short local trust runs out).
    expect((await call("/rpc/revoke_token", { base: a.url, body: { refresh_token: spare.refresh_token } })).status).toBe(200);
    expect((await call("/rpc/me", { base: a.url, token: spare.access_token })).status).toBe(401);
    expect(await until(async () => (await call("/rpc/me", { base: b.url, token: spare.access_token })).status === 401, 1000)).toBe(true);

    // Redis returns (same port, empty): both instances reconnect by themselves.
    redis = await startRedisServer({ port: redis.port });
    expect(await until(async () => (await call("/health", { base: a.url })).json.status === "ok", 5000)).toBe(true);
    expect(await until(async () => (await call("/health", { base: b.url })).json.status === "ok", 5000)).toBe(true);
    expect((await call(rulesPath, { base: a.url, token: session.access_token })).headers.get("x-cache")).toBe("MISS");
    expect((await call(rulesPath, { base: a.url, token: session.access_token })).headers.get("x-cache")).toBe("HIT");
    // Still refused everywhere after the outage, though Redis lost everything it knew.
    for (const api of [a, b]) {
      const refused = await call("/rpc/me", { base: api.url, token: spare.access_token });
      expect(refused.status).toBe(401);
      expect(refused.json.message).toBe("JWT session revoked");
    }
    expect((await call("/rpc/me", { base: b.url, token: session.access_token })).status).toBe(200);
  });

  test("starts while Redis is down, and picks it up when it comes", async () => {
    const port = await freePort();
    const env = { ...baseEnv!, REDIS_URL: `redis://127.0.0.1:${port}` };
    const api = await startApi(loadConfig(env), () => {});
    let late: RunningRedis | undefined;
    try {
      const health = await call("/health", { base: api.url });
      expect(health.status).toBe(200);
      expect(health.json.down).toEqual(["redis"]);
      const user = newUser();
      await signUp(user, api.url);
      const session = await signIn(user, api.url);
      expect((await call("/rpc/me", { base: api.url, token: session.access_token })).status).toBe(200);

      late = await startRedisServer({ port });
      expect(await until(async () => (await call("/health", { base: api.url })).json.status === "ok", 5000)).toBe(true);
      expect((await call("/rpc/me", { base: api.url, token: session.access_token })).status).toBe(200);
    } finally {
      await api.stop();
      await late?.stop();
    }
  });
});
