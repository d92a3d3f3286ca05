// PostgREST 16's response headers on the engine's answers, in-process: Vary on results only,
// Preference-Applied of calls, a void call's Content-Range, and PGRST000's message.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { defaultEngineConfig } from "../../api/src/config";
import { createEngine, type Engine } from "../../api/src/engine/index";
import { testStack } from "../support/stack";
import { adminSql, get, post, readJson } from "./rpc-support";

const SCHEMA = `v16hdr_${process.pid}`;
const admin = adminSql();
let engine: Engine;

beforeAll(async () => {
  await admin.unsafe(`create schema ${SCHEMA}`);
  await admin.unsafe(`create table ${SCHEMA}.things (id integer primary key)`);
  await admin.unsafe(`insert into ${SCHEMA}.things select generate_series(1, 5)`);
  await admin.unsafe(`create function ${SCHEMA}.nothing() returns void language sql as $$ select $$`);
  await admin.unsafe(`create function ${SCHEMA}.some_things() returns setof ${SCHEMA}.things language sql stable as $$ select * from ${SCHEMA}.things order by id $$`);
  await admin.unsafe(`create function ${SCHEMA}.now_text() returns text language sql stable as $$ select to_char(timestamptz '2024-01-01 12:00+00', 'HH24 TZ') $$`);
  engine = await createEngine(defaultEngineConfig({ dbSchemas: [SCHEMA], dbTxEnd: "commit-allow-override" }), { databaseUrl: testStack().databaseUrl, log: () => {} });
});

afterAll(async () => {
  await engine.close();
  await admin.unsafe(`drop schema ${SCHEMA} cascade`);
  await admin.end();
});

test("results carry Vary: Accept, Prefer, Range; errors do not", async () => {
  const ok = await engine.fetch(get("/things"));
  expect(ok.headers.get("vary")).toBe("Accept, Prefer, Range");
  const options = await engine.fetch(new Request("http://engine/things", { method: "OPTIONS" }));
  expect(options.headers.get("vary")).toBe("Accept, Prefer, Range");
  const missing = await engine.fetch(get("/nothing_here"));
  expect(missing.status).toBe(404);
  expect(missing.headers.has("vary")).toBe(false);
});

test("a call's Preference-Applied names count, tx, handling, timezone and strict max-affected", async () => {
  const res = await engine.fetch(get("/rpc/some_things", { Prefer: "count=exact, tx=rollback, handling=strict, timezone=UTC, max-affected=10" }));
  expect(res.status).toBe(200);
  expect(res.headers.get("preference-applied")).toBe("count=exact, tx=rollback, handling=strict, timezone=UTC, max-affected=10");
  expect(res.headers.get("content-range")).toBe("0-4/5");
});

test("count=planned leaves a call's total unknown; count=estimated counts it", async () => {
  const planned = await engine.fetch(get("/rpc/some_things?limit=2", { Prefer: "count=planned" }));
  expect(planned.headers.get("content-range")).toBe("0-1/*");
  expect(planned.headers.get("preference-applied")).toBe("count=planned");
  const estimated = await engine.fetch(get("/rpc/some_things?limit=2", { Prefer: "count=estimated" }));
  expect(estimated.status).toBe(206);
  expect(estimated.headers.get("content-range")).toBe("0-1/5");
});

test("a void call's 204 has the range and the applied preferences, and no Content-Type", async () => {
  const res = await engine.fetch(post("/rpc/nothing", {}, { Prefer: "tx=rollback" }));
  expect(res.status).toBe(204);
  expect(res.headers.get("content-range")).toBe("0-0/*");
  expect(res.headers.get("preference-applied")).toBe("tx=rollback");
  expect(res.headers.has("content-type")).toBe(false);
});

test("Prefer: timezone applies to the call's transaction; an invalid zone is PostgreSQL's 400", async () => {
  const res = await readJson(await engine.fetch(get("/rpc/now_text", { Prefer: "timezone=America/New_York" })));
  expect(res.json).toBe("07 EST");
  const bad = await readJson(await engine.fetch(get("/rpc/now_text", { Prefer: "timezone=Nowhere/Atlantis" })));
  expect(bad).toMatchObject({ status: 400, json: { code: "22023", details: null, hint: null, message: 'invalid value for parameter "TimeZone": "Nowhere/Atlantis"' } });
});
