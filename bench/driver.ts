/**
 * `bun bench/driver.ts [--seconds 6] [--rounds 2]`: the driver decision's measurement
 * (docs/decisions/0001-database-driver.md). A request transaction as the engine runs it
 * (BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; one set_config statement with role, claims,
 * method, path and headers; the call; COMMIT) on a connection reserved for it, 64 concurrent
 * callers over a pool of 10, with stock postgres.js and with Bun's built-in Bun.sql, against a
 * throwaway embedded PostgreSQL reached over TCP (127.0.0.1) and over TLS (a self-signed
 * certificate made with openssl, `ssl = on` by ALTER SYSTEM + reload). Rounds alternate
 * drivers. Reports; asserts nothing.
 */
import { SQL } from "bun";
import { execFileSync } from "node:child_process";
import { chownSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { startEmbeddedPostgres } from "../api/src/stack/embedded-postgres";
import { measure, type Measurement } from "./lib";

const { values: args } = parseArgs({ options: { seconds: { type: "string" }, rounds: { type: "string" } } });
const SECONDS = Number(args.seconds ?? 6);
const ROUNDS = Number(args.rounds ?? 2);
const POOL = 10;
const CALLERS = 64;
const say = (line: string) => console.error(`[driver] ${line}`);

const pg = await startEmbeddedPostgres({ database: "driver_bench" });
try {
  // TLS: a self-signed certificate in the data directory, readable by the server's OS user only.
  const crt = join(pg.dataDir, "server.crt");
  const key = join(pg.dataDir, "server.key");
  execFileSync("openssl", ["req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1", "-newkey", "rsa:2048", "-keyout", key, "-out", crt], { stdio: "ignore" });
  chmodSync(key, 0o600);
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(key, uid, gid);
    chownSync(crt, uid, gid);
  }
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`alter system set ssl = on`);
  await admin.unsafe(`select pg_reload_conf()`);
  await Bun.sleep(500);
  await admin.unsafe(`
    create or replace function public.bench_me() returns json language plpgsql stable as $$
    begin
      return json_build_object('sub', current_setting('request.jwt.claims', true)::json ->> 'sub', 'role', current_user);
    end $$;
  `);
  const [ssl] = await admin`select setting from pg_settings where name = 'ssl'`;
  say(`PostgreSQL on 127.0.0.1:${pg.port}, ssl = ${ssl?.setting}`);
  await admin.end();

  const settingsText =
    "select set_config('search_path', $1, true), set_config('role', $2, true), set_config('request.jwt.claims', $3, true), " +
    "set_config('request.method', $4, true), set_config('request.path', $5, true), set_config('request.headers', $6, true)";
  const headers = JSON.stringify({ host: "api.example", "user-agent": "bench", accept: "application/json", authorization: "Bearer " + "x".repeat(200) });
  const values = (i: number) => ['"public"', "postgres", JSON.stringify({ role: "authenticated", sub: `user-${i}` }), "GET", "/rpc/me", headers];
  let n = 0;

  // postgres.js, as the engine does it: reserve, issue the four statements at once, release.
  const postgresJs = (url: string, ssl: boolean) => {
    const sql = postgres(url, { max: POOL, prepare: true, onnotice: () => {}, ...(ssl ? { ssl: { rejectUnauthorized: false } } : {}) });
    const call = async () => {
      const tx = await sql.reserve();
      try {
        const steps = [
          tx.unsafe("begin isolation level read committed read only").execute(),
          tx.unsafe(settingsText, values(n++), { prepare: true }).execute(),
          tx.unsafe("select public.bench_me()::text as body", [], { prepare: true, simple: false } as { prepare: boolean }).execute(),
          tx.unsafe("commit").execute(),
        ];
        const results = await Promise.all(steps);
        if (!(results[2] as unknown as { body: string }[])[0]?.body) throw new Error("no body");
      } finally {
        tx.release();
      }
    };
    return { call, end: () => sql.end({ timeout: 2 }) };
  };

  // Bun.sql, the same transaction on a reserved connection (Bun pipelines queries on it).
  const bunSql = (url: string, ssl: boolean) => {
    const sql = new SQL({ url, max: POOL, prepare: true, ...(ssl ? { tls: { rejectUnauthorized: false } } : {}) });
    const call = async () => {
      const tx = await sql.reserve();
      try {
        const steps = [
          tx.unsafe("begin isolation level read committed read only"),
          tx.unsafe(settingsText, values(n++)),
          tx.unsafe("select public.bench_me()::text as body"),
          tx.unsafe("commit"),
        ];
        const results = await Promise.all(steps);
        if (!(results[2] as { body: string }[])[0]?.body) throw new Error("no body");
      } finally {
        tx.release();
      }
    };
    return { call, end: () => sql.close({ timeout: 2 }) };
  };

  const tcpUrl = pg.url;
  const rows: { transport: string; driver: string; m: Measurement[] }[] = [];
  for (const [transport, ssl] of [["TCP", false], ["TLS", true]] as const) {
    for (const [driver, make] of [["postgres.js 3.4.9 (stock)", postgresJs], [`Bun.sql (Bun ${Bun.version})`, bunSql]] as const) {
      rows.push({ transport, driver, m: [] });
    }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) {
        const row = rows[rows.length - 2 + i]!;
        const client = (i === 0 ? postgresJs : bunSql)(tcpUrl, ssl);
        try {
          if (round === 0) {
            // Proves the transport: the server's own view of this driver's connection.
            const probe = i === 0 ? postgres(tcpUrl, { max: 1, ...(ssl ? { ssl: { rejectUnauthorized: false } } : {}) }) : new SQL({ url: tcpUrl, max: 1, ...(ssl ? { tls: { rejectUnauthorized: false } } : {}) });
            const [seen] = (await (probe.unsafe as (q: string) => Promise<unknown>)("select coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl, inet_server_addr()::text as addr")) as { ssl: boolean; addr: string }[];
            say(`${row.driver} over ${transport}: server sees ssl=${seen?.ssl}, addr=${seen?.addr}`);
            await (i === 0 ? (probe as ReturnType<typeof postgres>).end() : (probe as SQL).close());
          }
          say(`${transport} ${row.driver}, round ${round + 1}…`);
          const m = await measure({ concurrency: CALLERS, durationMs: SECONDS * 1000, warmupMs: 1000 }, client.call);
          say(`  ${m.reqPerSec.toFixed(0)} tx/s, p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms, errors ${m.errors}`);
          row.m.push(m);
        } finally {
          await client.end();
        }
      }
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`\n## Request transactions, ${CALLERS} callers, pool ${POOL}, ${SECONDS} s × ${ROUNDS} rounds (alternating)\n`);
  console.log("| transport | driver | tx/s (mean) | tx/s per round | p50 ms | p99 ms | errors |");
  console.log("|---|---|--:|---|--:|--:|--:|");
  for (const r of rows) {
    console.log(`| ${r.transport} | ${r.driver} | ${mean(r.m.map((m) => m.reqPerSec)).toFixed(0)} | ${r.m.map((m) => m.reqPerSec.toFixed(0)).join(", ")} | ${mean(r.m.map((m) => m.p50)).toFixed(2)} | ${mean(r.m.map((m) => m.p99)).toFixed(2)} | ${r.m.reduce((a, m) => a + m.errors, 0)} |`);
  }
} finally {
  await pg.stop();
}
