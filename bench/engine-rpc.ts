/**
 * Engine overhead benchmark: one function called through the embedded engine
 * (`engine.fetch(POST /rpc/validate_token)`: anonymous request, transaction, role switch,
 * request GUCs, body rendered by PostgreSQL) and the same function called directly in SQL on
 * the same pool, 32 concurrent callers each, one after the other in one run. A third line runs
 * the direct SQL inside the request transaction the engine wraps around every request (role and
 * request GUCs, read only, the call, commit: PostgREST's transaction, sent as one exchange), to
 * tell the cost of that wrapping from the engine's own code.
 *
 *   bun run bench:engine                 # embedded PostgreSQL, migrated, thrown away after
 *   DATABASE_URL=postgres://… bun run bench:engine   # an existing migrated database (superuser URL)
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=32 bun run bench:engine
 *
 * `engineRpcGroup` is the same measurement as a `bun run bench` group (bench/run.ts).
 */
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { defaultEngineConfig } from "../api/src/config";
import { createEngine, createEnginePool } from "../api/src/engine/index";
import { RequestConnections, runInRequestTransaction } from "../api/src/engine/transaction";
import { startEmbeddedPostgres } from "../api/src/stack/embedded-postgres";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../api/src/stack/migrate";
import type { BenchRow } from "./lib";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const POOL = Number(process.env.BENCH_POOL ?? 10);

async function database(): Promise<{ adminUrl: string; stop: () => Promise<void> }> {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL, stop: async () => {} };
  const pg = await startEmbeddedPostgres({ database: "autoaudit_bench" });
  await dbmate(pg.url, "up");
  return { adminUrl: pg.url, stop: () => pg.stop() };
}

interface Result {
  name: string;
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
}

/** `CONCURRENCY` callers in a closed loop for `SECONDS` (after a short warm-up). */
async function run(name: string, call: () => Promise<void>, seconds = SECONDS, warmupMs = 1000): Promise<Result> {
  const warmUntil = performance.now() + warmupMs;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => { while (performance.now() < warmUntil) await call(); }));
  const latencies: number[] = [];
  const start = performance.now();
  const until = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        await call();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;
  return { name, requests: latencies.length, seconds: elapsed, p50: pct(50), p99: pct(99) };
}

/** What the group needs from `bun run bench`'s context (a subset of bench/lib.ts BenchContext). */
export interface EngineRpcBenchContext {
  /** Superuser URL of a migrated database. */
  databaseUrl: string;
  /** The engine's login (its password is not changed). */
  authenticatorUrl: string;
  durationMs?: number;
  warmupMs?: number;
  log?: (line: string) => void;
}

/** The three measurements, one after the other, on one pool. */
async function measureAll(adminUrl: string, appUrl: string, seconds = SECONDS, warmupMs = 1000, log: (line: string) => void = () => {}) {
  // The direct path runs as the same login as the engine; let it execute the function itself.
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin`grant usage on schema api to authenticator`;
  await admin`grant execute on function api.validate_token(text) to authenticator`;
  await admin.end();

  const config = defaultEngineConfig({ dbSchemas: ["api"], dbAnonRole: "anon", dbPoolSize: POOL, jwtSecret: randomBytes(32).toString("hex") });
  const sql = createEnginePool(appUrl, config);
  const engine = await createEngine(config, { sql, log: () => {} });
  const body = JSON.stringify({ refresh_token: "bench-token-that-does-not-exist" });

  try {
    log("engine rpc: direct SQL");
    const direct = await run("direct SQL", async () => {
      const rows = await sql`select api.validate_token(${"bench-token-that-does-not-exist"})::text as body`;
      if (!rows[0]?.body) throw new Error("direct call returned nothing");
    }, seconds, warmupMs);
    // The same call in the request transaction (role and request GUCs, read only, the call,
    // commit), without the engine's HTTP handling: separates the cost of the transaction from
    // what the engine's own code adds.
    const connections = new RequestConnections(sql, POOL);
    const settings = {
      role: "anon", claims: { role: "anon" }, method: "POST", path: "/rpc/validate_token",
      headers: { "content-type": "application/json" }, cookies: {}, searchPath: ["api", "public"],
    };
    log("engine rpc: SQL in the request transaction");
    const inTransaction = await run("SQL in tx", async () => {
      const rows = await runInRequestTransaction(connections, settings, { readOnly: true, acquisitionTimeoutSeconds: 10 },
        { text: "select api.validate_token($1)::text as body", values: ["bench-token-that-does-not-exist"], prepare: true }, true);
      if (!rows[0]?.body) throw new Error("transaction call returned nothing");
    }, seconds, warmupMs);
    connections.close();
    log("engine rpc: engine.fetch");
    const viaEngine = await run("engine.fetch", async () => {
      const res = await engine.fetch(new Request("http://engine/rpc/validate_token", {
        method: "POST", headers: { "Content-Type": "application/json" }, body,
      }));
      const text = await res.text();
      if (res.status !== 200) throw new Error(`engine answered ${res.status}: ${text}`);
    }, seconds, warmupMs);
    return { direct, inTransaction, viaEngine };
  } finally {
    await engine.close();
    await sql.end();
  }
}

const perSecond = (r: Result) => r.requests / r.seconds;

export async function engineRpcGroup(ctx: EngineRpcBenchContext): Promise<BenchRow[]> {
  const { direct, inTransaction, viaEngine } = await measureAll(
    ctx.databaseUrl, ctx.authenticatorUrl, (ctx.durationMs ?? SECONDS * 1000) / 1000, ctx.warmupMs ?? 1000, ctx.log,
  );
  const row = (r: Result, ratio?: number, note?: string): BenchRow => ({
    group: "engine rpc", name: `validate_token: ${r.name}`, concurrency: CONCURRENCY, requests: r.requests, errors: 0,
    reqPerSec: perSecond(r), p50: r.p50, p99: r.p99, ratio, note,
  });
  return [
    row(direct),
    row(inTransaction, perSecond(inTransaction) / perSecond(direct), "÷ direct SQL"),
    row(viaEngine, perSecond(viaEngine) / perSecond(direct),
      `÷ direct SQL (a retired target, reported only); ÷ SQL in tx = ${(perSecond(viaEngine) / perSecond(inTransaction)).toFixed(2)}`),
  ];
}

if (import.meta.main) {
  const db = await database();
  try {
    const password = randomBytes(18).toString("base64url");
    await setAuthenticatorPassword(db.adminUrl, password);
    const { direct, inTransaction, viaEngine } = await measureAll(db.adminUrl, authenticatorUrl(db.adminUrl, password));
    const fmt = (r: Result) =>
      `${r.name.padEnd(14)} ${(r.requests / r.seconds).toFixed(0).padStart(7)} req/s   p50 ${r.p50.toFixed(2)} ms   p99 ${r.p99.toFixed(2)} ms   (${r.requests} calls)`;
    console.log(`engine RPC benchmark: ${CONCURRENCY} concurrent callers, pool ${POOL}, ${SECONDS}s each`);
    console.log(fmt(direct));
    console.log(fmt(inTransaction));
    console.log(fmt(viaEngine));
    const throughput = (viaEngine.requests / viaEngine.seconds) / (direct.requests / direct.seconds);
    console.log(
      `ratio engine/direct: throughput ${throughput.toFixed(2)}, p50 ${(viaEngine.p50 / direct.p50).toFixed(2)}, p99 ${(viaEngine.p99 / direct.p99).toFixed(2)}` +
        `  → engine adds ${((1 / throughput - 1) * 100).toFixed(0)}% per call (reported; the ratio target is retired)`,
    );
    const overTx = (viaEngine.requests / viaEngine.seconds) / (inTransaction.requests / inTransaction.seconds);
    console.log(`ratio engine/SQL in tx: throughput ${overTx.toFixed(2)} (the engine's own code, beyond PostgREST's transaction)`);
  } finally {
    await db.stop();
  }
}
