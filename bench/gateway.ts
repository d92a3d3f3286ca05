/**
 * `bun run bench:gateway`: what the API gateway costs and what its cache buys, in one run.
 *
 *   1. authenticated GET /rpc/me through the gateway (JWT check, session check, postgrest-js,
 *      embedded engine) vs the same request on the engine served alone;
 *   2. a cacheable GET (/rpc/list_rules) through the gateway with its Redis cache vs with the
 *      cache switched off.
 *
 * Each server runs as its own process (as in production) while wrk (when installed; otherwise
 * autocannon, in this process) loads it; one server is loaded at a time, so they do not share
 * the two cores. The gateway and the bare engine are loaded in alternating rounds: on a shared
 * machine a slow minute then costs both sides, not whichever ran in it. LOAD_GENERATOR=autocannon
 * forces autocannon. Not a test.
 * Options: --connections N (64), --duration S (5), --warmup S (1).
 *
 * `gatewayGroup` is the same measurement as a `bun run bench` group (bench/run.ts), on that run's
 * stack: its API (cache on), its cache-off API instance, and a bare engine started beside them.
 */
import autocannon from "autocannon";
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { freePort } from "../api/src/stack/free-port";
import { startEmbeddedPostgres } from "../api/src/stack/embedded-postgres";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../api/src/stack/migrate";
import { startRedisServer } from "../api/src/stack/redis-server";
import type { BenchRow } from "./lib";
import { errorCount } from "./load/cannon";
import { fireWrk, wrkChosen } from "./load/wrk";

const ROOT = resolve(import.meta.dir, "..");
const { values: args } = parseArgs({
  // Only the script's own command line (not `bun run bench`'s, when imported as a group).
  args: import.meta.main ? process.argv.slice(2) : [],
  options: {
    connections: { type: "string", default: "64" },
    duration: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
  },
});
const CONNECTIONS = Number(args.connections);
const DURATION = Number(args.duration);
const WARMUP = Number(args.warmup);

interface Measured {
  name: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

async function load(
  name: string,
  url: string,
  headers: Record<string, string>,
  timing: { duration?: number; warmup?: number } = {},
): Promise<Measured> {
  if (wrkChosen()) {
    // wrk (a C generator) when installed, as the load report uses it: autocannon under Bun takes
    // about 0.09 ms of CPU per request from the two cores the servers share with it.
    const target = new URL(url);
    const r = await fireWrk({
      name, url: target.origin, connections: CONNECTIONS, durationSec: timing.duration ?? DURATION,
      warmupSec: timing.warmup ?? WARMUP, requests: [{ path: target.pathname + target.search, headers }],
    });
    return { name, rps: r.reqPerSec, p50: r.p50, p99: r.p99, errors: errorCount(r) };
  }
  const run = (duration: number) => autocannon({ url, connections: CONNECTIONS, duration, headers, pipelining: 1 });
  await run(timing.warmup ?? WARMUP);
  const result = await run(timing.duration ?? DURATION);
  return {
    name,
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}

async function spawnServer(command: string[], env: Record<string, string>, healthUrl: string) {
  const proc = Bun.spawn(command, { cwd: ROOT, env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env }, stdout: "ignore", stderr: "pipe" });
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${command.join(" ")} exited: ${await new Response(proc.stderr).text()}`);
    try {
      const res = await fetch(healthUrl);
      await res.arrayBuffer();
      if (res.status < 500) break;
    } catch {}
    await Bun.sleep(50);
  }
  return {
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}

async function post(base: string, fn: string, body: unknown, token?: string) {
  const res = await fetch(`${base}/rpc/${fn}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${fn}: ${res.status} ${JSON.stringify(json)}`);
  return json as any;
}

/** What the group needs from `bun run bench`'s context (a subset of bench/lib.ts BenchContext). */
export interface GatewayBenchContext {
  apiUrl: string;
  /** The same API with CACHE_TTL_SECONDS=0; without it the cache comparison is left out. */
  uncachedApiUrl?: string;
  authenticatorUrl: string;
  jwtSecret: string;
  /** The audience the API's tokens carry, when it sets one (the bare engine must expect it too). */
  jwtAudience?: string;
  durationMs?: number;
  warmupMs?: number;
  log?: (line: string) => void;
  session(): Promise<{ accessToken: string }>;
}

/** Rounds of the gateway-vs-engine comparison: their loads alternate, so drift on a shared machine hits both alike. */
const ROUNDS = 3;
const FIRST_WARMUP_S = 3;

/**
 * `a` and `b` loaded in alternating order, ROUNDS times each after one warm-up of each: req/s
 * is the mean over the rounds (equal windows), p50 and p99 the median round's.
 */
async function interleaved(
  a: { name: string; url: string },
  b: { name: string; url: string },
  headers: Record<string, string>,
  timing: { duration: number; warmup: number },
): Promise<[Measured, Measured]> {
  const runs: [Measured[], Measured[]] = [[], []];
  const targets = [a, b];
  for (let round = 0; round < ROUNDS; round++) {
    for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) {
      const target = targets[i]!;
      // The first load of each server warms it (JIT, pools) for at least FIRST_WARMUP_S, since
      // the gateway's process has much more code to compile than the bare engine's; later
      // rounds find both warm.
      const warmup = round === 0 ? Math.max(timing.warmup, FIRST_WARMUP_S) : 1;
      runs[i]!.push(await load(target.name, target.url, headers, { duration: timing.duration, warmup }));
      if (process.env.BENCH_DEBUG) console.error(round, target.name, runs[i]!.at(-1)!.rps.toFixed(0));
    }
  }
  const combine = (name: string, rs: Measured[]): Measured => {
    const byP50 = [...rs].sort((x, y) => x.p50 - y.p50);
    const median = byP50[Math.floor(rs.length / 2)]!;
    return { name, rps: rs.reduce((sum, r) => sum + r.rps, 0) / rs.length, p50: median.p50, p99: median.p99, errors: rs.reduce((sum, r) => sum + r.errors, 0) };
  };
  return [combine(a.name, runs[0]), combine(b.name, runs[1])];
}

export async function gatewayGroup(ctx: GatewayBenchContext): Promise<BenchRow[]> {
  const timing = { duration: (ctx.durationMs ?? DURATION * 1000) / 1000, warmup: (ctx.warmupMs ?? WARMUP * 1000) / 1000 };
  const { accessToken } = await ctx.session();
  const auth = { Authorization: `Bearer ${accessToken}` };
  const tenant = await post(ctx.apiUrl, "create_tenant", { name: "Bench Ltd" }, accessToken);
  const rules = Array.from({ length: 50 }, (_, i) => ({ key: `1.${i}`, title: `Rule ${i}`, severity: "medium" }));
  await post(ctx.apiUrl, "upsert_rules", { tenant_id: tenant.id, framework: "cis-m365", rules }, accessToken);
  const rulesPath = `/rpc/list_rules?tenant_id=${tenant.id}`;

  ctx.log?.("gateway: list_rules through the API, cached and uncached");
  const cached = await load("list_rules via gateway, cached", `${ctx.apiUrl}${rulesPath}`, auth, timing);
  const uncached = ctx.uncachedApiUrl ? await load("list_rules via gateway, uncached", `${ctx.uncachedApiUrl}${rulesPath}`, auth, timing) : undefined;

  ctx.log?.(`gateway: me through the API and on a bare engine, ${ROUNDS} alternating rounds`);
  const enginePort = await freePort();
  const engineUrl = `http://127.0.0.1:${enginePort}`;
  const server = await spawnServer(
    ["bun", "api/src/engine/server.ts"],
    {
      PGRST_DB_URI: ctx.authenticatorUrl,
      PGRST_JWT_SECRET: ctx.jwtSecret,
      ...(ctx.jwtAudience ? { PGRST_JWT_AUD: ctx.jwtAudience } : {}),
      PGRST_DB_SCHEMAS: "api",
      PGRST_DB_ANON_ROLE: "anon",
      PGRST_SERVER_HOST: "127.0.0.1",
      PGRST_SERVER_PORT: String(enginePort),
    },
    `${engineUrl}/rpc/me`,
  );
  let viaGateway: Measured;
  let engine: Measured;
  try {
    [viaGateway, engine] = await interleaved(
      { name: "me via gateway", url: `${ctx.apiUrl}/rpc/me` },
      { name: "me on the engine directly", url: `${engineUrl}/rpc/me` },
      auth,
      timing,
    );
  } finally {
    await server.stop();
  }

  const row = (r: Measured, ratio?: number, note?: string): BenchRow => ({
    group: "gateway", name: r.name, concurrency: CONNECTIONS, requests: Math.round(r.rps * timing.duration), errors: r.errors,
    reqPerSec: r.rps, p50: r.p50, p99: r.p99, ratio, note,
  });
  return [
    row(engine),
    row(viaGateway, viaGateway.rps / engine.rps, `÷ engine directly (${ROUNDS} alternating rounds); a retired target, reported only`),
    ...(uncached ? [row(uncached), row(cached, cached.rps / uncached.rps, "÷ uncached, target ≥ 5")] : [row(cached)]),
  ];
}

if (import.meta.main) {
  const pg = await startEmbeddedPostgres({ database: "autoaudit_bench" });
  const redis = await startRedisServer();
  const servers: { stop(): Promise<void> }[] = [];
  try {
    await dbmate(pg.url, "up");
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
    // Preparation only signs in a handful of times; the benchmark measures no bcrypt.
    await admin.unsafe("alter database autoaudit_bench set autoaudit.bcrypt_cost = 4");
    await admin.end();
    const password = randomBytes(18).toString("base64url");
    await setAuthenticatorPassword(pg.url, password);
    const appUrl = authenticatorUrl(pg.url, password);
    const jwtSecret = randomBytes(36).toString("base64url");
    const apiEnv = {
      DATABASE_URL: appUrl,
      PGRST_DB_URI: appUrl,
      PGRST_JWT_SECRET: jwtSecret,
      PGRST_JWT_AUD: "autoaudit",
      PGRST_DB_SCHEMAS: "api",
      PGRST_DB_ANON_ROLE: "anon",
      LOG_REQUESTS: "false",
      RATE_LIMIT_IP_MAX: "0",
      REDIS_URL: redis.url,
      HOST: "127.0.0.1",
    };
    // The API as deployed, and the same API with its cache off (the uncached reference).
    const startApi = async (extra: Record<string, string>) => {
      const url = `http://127.0.0.1:${await freePort()}`;
      servers.push(await spawnServer(["bun", "api/src/server.ts"], { ...apiEnv, PORT: new URL(url).port, ...extra }, `${url}/health`));
      return url;
    };
    const apiUrl = await startApi({});
    const uncachedApiUrl = await startApi({ CACHE_TTL_SECONDS: "0" });

    const email = `bench-${Date.now()}@example.com`;
    await post(apiUrl, "sign_up", { email, password: "bench-password", first_name: "Bench", last_name: "User" });
    const session = await post(apiUrl, "sign_in", { email, password: "bench-password" });
    const rows = await gatewayGroup({
      apiUrl,
      uncachedApiUrl,
      authenticatorUrl: appUrl,
      jwtSecret,
      jwtAudience: "autoaudit",
      log: (line) => console.error(`[bench] ${line}`),
      session: async () => ({ accessToken: session.access_token }),
    });

    const by = (name: string) => rows.find((r) => r.name === name)!;
    console.log(`\ngateway benchmark — ${CONNECTIONS} connections, ${DURATION} s per run (${new Date().toISOString()})\n`);
    console.log("| scenario | req/s | p50 ms | p99 ms | errors |");
    console.log("|---|---:|---:|---:|---:|");
    for (const r of rows) console.log(`| ${r.name} | ${r.reqPerSec.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} |`);
    const overhead = 1 - by("me via gateway").reqPerSec / by("me on the engine directly").reqPerSec;
    const speedup = by("list_rules via gateway, cached").reqPerSec / by("list_rules via gateway, uncached").reqPerSec;
    console.log(`\ngateway overhead on me: ${(overhead * 100).toFixed(1)} % of engine throughput (reported; the ratio target of issue 8 is retired)`);
    console.log(`cache speed-up on list_rules: ${speedup.toFixed(2)}× (target ≥ 5×)`);
  } finally {
    for (const server of servers) await server.stop();
    await redis.stop();
    await pg.stop();
  }
}
