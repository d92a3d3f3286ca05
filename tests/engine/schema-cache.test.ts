// The schema cache: functions and relations are introspected once and picked up again on
// PostgREST's `NOTIFY pgrst, 'reload schema'`, without restarting the engine.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Engine } from "../../api/src/engine/index";
import { adminSql, get, productEngine, readJson } from "./rpc-support";

const admin = adminSql();
let engine: Engine;

beforeAll(async () => {
  await admin.unsafe(`
    drop schema if exists engine_reload cascade;
    create schema engine_reload;
    grant usage on schema engine_reload to anon;
    create table engine_reload.projects (id int primary key, name text);
    grant select on engine_reload.projects to anon;
  `);
  engine = await productEngine({ dbSchemas: ["engine_reload"] });
});

afterAll(async () => {
  await engine.close();
  await admin.unsafe("drop schema if exists engine_reload cascade");
  await admin.end();
});

/** Polls until the engine answers `status` (the NOTIFY is asynchronous); fails after ~10 s. */
async function eventually(path: string, status: number): Promise<Response> {
  let last: Response | undefined;
  for (let i = 0; i < 200; i++) {
    last = await engine.fetch(get(path));
    if (last.status === status) return last;
    await Bun.sleep(50);
  }
  throw new Error(`${path} still answers ${last?.status} (${await last?.text()})`);
}

test("a function created after start is found after NOTIFY pgrst, 'reload schema'", async () => {
  const before = await readJson(await engine.fetch(get("/rpc/answer")));
  expect(before.status).toBe(404);
  expect(before.json).toMatchObject({ code: "PGRST202", message: "Could not find the function engine_reload.answer without parameters in the schema cache" });

  await admin.unsafe(`
    create function engine_reload.answer() returns int language sql immutable as 'select 42';
    grant execute on function engine_reload.answer() to anon;
  `);
  // Without the notification the cache is unchanged: PostgREST does not introspect per request.
  expect((await engine.fetch(get("/rpc/answer"))).status).toBe(404);

  await admin.unsafe(`notify pgrst, 'reload schema'`);
  const after = await eventually("/rpc/answer", 200);
  expect(await after.text()).toBe("42");
});

test("relations are in the cache too: the unknown-table hint follows a reload", async () => {
  const unknown = await readJson(await engine.fetch(get("/projectz")));
  expect(unknown.status).toBe(404);
  expect(unknown.json).toEqual({
    code: "PGRST205", details: null, hint: "Perhaps you meant the table 'engine_reload.projects'",
    message: "Could not find the table 'engine_reload.projectz' in the schema cache",
  });

  await admin.unsafe(`create table engine_reload.projectz (id int); grant select on engine_reload.projectz to anon; notify pgrst`);
  const found = await eventually("/projectz", 200);
  expect(await found.text()).toBe("[]");
});

test("reloadSchemaCache() picks up a dropped function at once", async () => {
  await admin.unsafe(`create function engine_reload.gone() returns int language sql as 'select 1'; grant execute on function engine_reload.gone() to anon`);
  await engine.reloadSchemaCache();
  expect((await engine.fetch(new Request("http://engine/rpc/gone", { method: "POST", body: "{}" }))).status).toBe(200);
  await admin.unsafe(`drop function engine_reload.gone()`);
  await engine.reloadSchemaCache();
  expect((await engine.fetch(new Request("http://engine/rpc/gone", { method: "POST", body: "{}" }))).status).toBe(404);
});
