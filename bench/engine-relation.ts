/**
 * Relation-read overhead benchmark: a filtered, ordered, limited table read through the embedded
 * engine (`GET /items?select=…&team=eq.red&score=gte.50&order=id&limit=20`: anonymous request,
 * read-only transaction, role switch, request GUCs, query parse, json_agg body) and the same
 * query written by hand in SQL on the same pool, 32 concurrent callers each, in one run.
 *
 *   bun bench/engine-relation.ts                  # embedded PostgreSQL, thrown away after
 *   DATABASE_URL=postgres://… bun bench/engine-relation.ts   # an existing database (superuser URL)
 *   BENCH_DURATION_MS=10000 BENCH_CONCURRENCY=32 bun bench/engine-relation.ts
 */
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { defaultEngineConfig } from "../api/src/engine/config";
import { createEngine, createEnginePool } from "../api/src/engine/index";
import { startEmbeddedPostgres } from "../api/src/stack/embedded-postgres";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../api/src/stack/migrate";
import { buildReadSql, parseReadQuery } from "../api/src/engine/query";
import { formatTable, measure, ratio, type BenchRow } from "./lib";

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const POOL = Number(process.env.BENCH_POOL ?? 10);
const SCHEMA = "bench_relation";
const ROWS = 10_000;

async function database(): Promise<{ adminUrl: string; stop: () => Promise<void> }> {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL, stop: async () => {} };
  const pg = await startEmbeddedPostgres({ database: "autoaudit_bench_relation" });
  await dbmate(pg.url, "up");
  return { adminUrl: pg.url, stop: () => pg.stop() };
}

const db = await database();
const password = randomBytes(18).toString("base64url");
await setAuthenticatorPassword(db.adminUrl, password);
const admin = postgres(db.adminUrl, { max: 1, onnotice: () => {} });
await admin.unsafe(`
  drop schema if exists ${SCHEMA} cascade;
  create schema ${SCHEMA};
  create table ${SCHEMA}.items (id int primary key, name text not null, team text not null, score int not null);
  insert into ${SCHEMA}.items
    select i, 'item ' || i, (array['red','blue','green','gold'])[1 + i % 4], (i * 37) % 100 from generate_series(1, ${ROWS}) i;
  create index on ${SCHEMA}.items (team, id);
  analyze ${SCHEMA}.items;
  grant usage on schema ${SCHEMA} to anon, authenticator;
  grant select on ${SCHEMA}.items to anon, authenticator;
`);

const config = defaultEngineConfig({ dbSchemas: [SCHEMA], dbAnonRole: "anon", dbPoolSize: POOL, jwtSecret: randomBytes(32).toString("hex") });
const sql = createEnginePool(authenticatorUrl(db.adminUrl, password), config);
const engine = await createEngine(config, { sql, log: () => {} });
const path = "/items?select=id,name,score&team=eq.red&score=gte.50&order=id&limit=20";

try {
  // The two paths must answer the same bytes, or the comparison means nothing.
  const viaEngineBody = await (await engine.fetch(new Request(`http://engine${path}`))).text();
  const directQuery = () => sql`
    select coalesce(json_agg(t), '[]')::text as body
      from (select id, name, score from ${sql(SCHEMA)}.items where team = ${"red"} and score >= ${50} order by id limit ${20}) t`;
  const [directRow] = await directQuery();
  if (directRow?.body !== viaEngineBody) throw new Error(`engine and SQL disagree:\n${viaEngineBody}\n${directRow?.body}`);

  const direct = await measure({ concurrency: CONCURRENCY }, async () => {
    const rows = await directQuery();
    return typeof rows[0]?.body === "string";
  });
  // The builder's statement alone (no transaction, role switch or GUCs): separates the cost of
  // the query shape from the cost of the request transaction around it.
  const built = buildReadSql(
    { text: `"${SCHEMA}"."items"`, values: [], qualifier: `"${SCHEMA}"."items"` },
    parseReadQuery(path.slice(path.indexOf("?") + 1)),
    { count: false, shape: "json" },
  );
  const builderOnly = await measure({ concurrency: CONCURRENCY }, async () => {
    const rows = await sql.unsafe(built.text, built.values as never[], { prepare: true });
    return rows[0]?.body === viaEngineBody;
  });
  const viaEngine = await measure({ concurrency: CONCURRENCY }, async () => {
    const res = await engine.fetch(new Request(`http://engine${path}`));
    await res.text();
    return res.status === 200;
  });
  const r = ratio(viaEngine, direct);
  const rows: BenchRow[] = [
    { group: "relation read", name: "direct SQL", concurrency: CONCURRENCY, ...direct },
    { group: "relation read", name: "builder SQL, no tx", concurrency: CONCURRENCY, ...builderOnly, note: `/ direct SQL = ${ratio(builderOnly, direct).toFixed(2)}` },
    { group: "relation read", name: "engine GET /items", concurrency: CONCURRENCY, ...viaEngine, note: `engine / direct SQL = ${r.toFixed(2)}` },
  ];
  console.log(`relation read benchmark: ${CONCURRENCY} concurrent callers, pool ${POOL}, ${ROWS} rows, ${path}`);
  console.log(formatTable(rows));
  console.log(
    `ratio engine/direct: throughput ${r.toFixed(2)}, p50 ${(viaEngine.p50 / direct.p50).toFixed(2)}, p99 ${(viaEngine.p99 / direct.p99).toFixed(2)}` +
      `  → engine adds ${((1 / r - 1) * 100).toFixed(0)}% per read (target < 20%)`,
  );
} finally {
  await engine.close();
  await admin.unsafe(`drop schema if exists ${SCHEMA} cascade`).catch(() => {});
  await admin.end();
  await sql.end();
  await db.stop();
}
