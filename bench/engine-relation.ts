/**
 * Relation-read overhead benchmark: a filtered, ordered, limited table read through the embedded
 * engine (`GET /items?select=…&team=eq.red&score=gte.50&order=id&limit=20`: anonymous request,
 * read-only transaction, role switch, request GUCs, query parse, json_agg body) and the same
 * query written by hand in SQL on the same pool, 32 concurrent callers each, in one run. A third
 * row runs the builder's statement alone on the pool, to separate the cost of the statement's
 * shape from the cost of the request transaction around it. The engine reads tables on generic
 * plans (ENGINE_RELATION_GENERIC_PLANS), where the hand-written SQL is planned anew on every call
 * (PostgreSQL's choice for `LIMIT $n`); a fourth row runs that SQL on generic plans (a pool of its
 * own), so the engine's cost can be read apart from what its plan choice saves.
 *
 *   bun run bench:relation                        # its own embedded PostgreSQL, thrown away after
 *   DATABASE_URL=postgres://… bun run bench:relation   # an existing migrated database (superuser URL)
 *   BENCH_DURATION_MS=10000 BENCH_CONCURRENCY=32 bun run bench:relation
 *
 * `relationReadGroup` is the same measurement as a `bun run bench` group (bench/run.ts).
 */
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { defaultEngineConfig } from "../api/src/config";
import { connectPostgres } from "../api/src/db/connection";
import { createEngine, createEnginePool } from "../api/src/engine/index";
import { buildReadSql, parseReadQuery } from "../api/src/engine/query";
import { startEmbeddedPostgres } from "../api/src/stack/embedded-postgres";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../api/src/stack/migrate";
import { formatTable, measure, ratio, type BenchRow } from "./lib";

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const POOL = Number(process.env.BENCH_POOL ?? 10);
const SCHEMA = "bench_relation";
const ROWS = 10_000;
const PATH = "/items?select=id,name,score&team=eq.red&score=gte.50&order=id&limit=20";

/** What the group needs from `bun run bench`'s context (a subset of bench/lib.ts BenchContext). */
export interface RelationBenchContext {
  databaseUrl: string;
  authenticatorUrl: string;
  durationMs?: number;
  warmupMs?: number;
  log?: (line: string) => void;
}

export async function relationReadGroup(ctx: RelationBenchContext): Promise<BenchRow[]> {
  const admin = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
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
  const sql = createEnginePool(ctx.authenticatorUrl, config);
  const engine = await createEngine(config, { sql, log: () => {} });
  // The engine reads tables on generic plans (relationGenericPlans): the same SQL on generic
  // plans too, to tell what the plan choice is worth from what the request transaction costs.
  const genericSql = connectPostgres(ctx.authenticatorUrl, {
    max: POOL,
    prepare: true,
    onnotice: () => {},
    connection: { plan_cache_mode: "force_generic_plan" },
  });
  const opts = { concurrency: CONCURRENCY, durationMs: ctx.durationMs, warmupMs: ctx.warmupMs };
  try {
    // The paths must answer the same bytes, or the comparison means nothing.
    const viaEngineBody = await (await engine.fetch(new Request(`http://engine${PATH}`))).text();
    const directQuery = (pool = sql) => pool`
      select coalesce(json_agg(t), '[]')::text as body
        from (select id, name, score from ${pool(SCHEMA)}.items where team = ${"red"} and score >= ${50} order by id limit ${20}) t`;
    const [directRow] = await directQuery();
    if (directRow?.body !== viaEngineBody) throw new Error(`engine and SQL disagree:\n${viaEngineBody}\n${directRow?.body}`);
    const target = `"${SCHEMA}"."items"`;
    const built = buildReadSql({ text: target, values: [], qualifier: target }, parseReadQuery(PATH.slice(PATH.indexOf("?") + 1)), {
      count: false,
      shape: "json",
    });

    ctx.log?.("relation read: direct SQL");
    const direct = await measure(opts, async () => typeof (await directQuery())[0]?.body === "string");
    ctx.log?.("relation read: direct SQL on generic plans");
    const directGeneric = await measure(opts, async () => typeof (await directQuery(genericSql))[0]?.body === "string");
    ctx.log?.("relation read: builder statement without the request transaction");
    const builderOnly = await measure(opts, async () => {
      const rows = await sql.unsafe(built.text, built.values as never[], { prepare: true });
      return rows[0]?.body === viaEngineBody;
    });
    ctx.log?.("relation read: engine");
    const viaEngine = await measure(opts, async () => {
      const res = await engine.fetch(new Request(`http://engine${PATH}`));
      await res.text();
      return res.status === 200;
    });
    const group = "relation read";
    return [
      { group, name: "direct SQL", concurrency: CONCURRENCY, ...direct },
      { group, name: "builder SQL, no tx", concurrency: CONCURRENCY, ...builderOnly, note: `/ direct SQL = ${ratio(builderOnly, direct).toFixed(2)}` },
      { group, name: "direct SQL, generic plans", concurrency: CONCURRENCY, ...directGeneric, note: `/ direct SQL = ${ratio(directGeneric, direct).toFixed(2)}` },
      {
        group, name: "engine GET /items", concurrency: CONCURRENCY, ...viaEngine,
        note: `engine / direct SQL = ${ratio(viaEngine, direct).toFixed(2)}; / generic-plan SQL = ${ratio(viaEngine, directGeneric).toFixed(2)}`,
      },
    ];
  } finally {
    await engine.close();
    await sql.end();
    await genericSql.end();
    await admin.unsafe(`drop schema if exists ${SCHEMA} cascade`).catch(() => {});
    await admin.end();
  }
}

if (import.meta.main) {
  const external = process.env.DATABASE_URL;
  const pg = external ? undefined : await startEmbeddedPostgres({ database: "autoaudit_bench_relation" });
  const adminUrl = external ?? pg!.url;
  try {
    if (pg) await dbmate(adminUrl, "up");
    const password = randomBytes(18).toString("base64url");
    await setAuthenticatorPassword(adminUrl, password);
    const rows = await relationReadGroup({ databaseUrl: adminUrl, authenticatorUrl: authenticatorUrl(adminUrl, password) });
    const [direct, , , viaEngine] = rows;
    const r = viaEngine!.reqPerSec / direct!.reqPerSec;
    console.log(`relation read benchmark: ${CONCURRENCY} concurrent callers, pool ${POOL}, ${ROWS} rows, ${PATH}`);
    console.log(formatTable(rows));
    console.log(
      `ratio engine/direct: throughput ${r.toFixed(2)}, p50 ${(viaEngine!.p50 / direct!.p50).toFixed(2)}, p99 ${(viaEngine!.p99 / direct!.p99).toFixed(2)}` +
        `  → engine adds ${((1 / r - 1) * 100).toFixed(0)}% per read (reported; the ratio target is retired)`,
    );
  } finally {
    await pg?.stop();
  }
}
