// GET/HEAD on tables and views through the engine, against a fixture schema of this suite:
// filters, trees, ordering, shaping, ranges and counts, media types, RLS per user, and the
// PostgREST-shaped refusals (unknown table, writes, embedding).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createEngine } from "../../api/src/engine";
import { defaultEngineConfig } from "../../api/src/config";
import { testStack } from "../support/stack";
import { JWT_SECRET, startRelationFixture, type RelationFixture } from "./relation-support";

let f: RelationFixture;
beforeAll(async () => {
  f = await startRelationFixture();
}, 30_000);
afterAll(async () => {
  await f?.stop();
});

async function read(path: string, headers: Record<string, string> = {}, method = "GET") {
  const res = await f.get(path, { method, headers });
  return { res, status: res.status, text: await res.text() };
}

const ids = (text: string) => (JSON.parse(text) as Array<{ id: number }>).map((r) => r.id);

describe("filters and ordering", () => {
  test("json_agg body bytes, Content-Type and Content-Range", async () => {
    const { res, status, text } = await read("/people?select=id,name&team=eq.red&order=id");
    expect(status).toBe(200);
    expect(text).toBe('[{"id":1,"name":"Ada"}, \n {"id":3,"name":"Carla"}]');
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(res.headers.get("content-range")).toBe("0-1/*");
    expect(res.headers.get("content-length")).toBe(String(Buffer.byteLength(text)));
  });

  test.each([
    ["id=gt.2&order=id", [3, 4, 5]],
    ["id=gte.2&id=lt.4&order=id", [2, 3]],
    ["score=neq.75&order=id", [1, 4]],
    ["id=lte.2&order=id.desc", [2, 1]],
    ["name=like.*ar*&order=id", [3, 5]],
    ["name=ilike.*D*&order=id", [1, 4]],
    ["score=is.null", [3]],
    ["team=not.is.null&order=id", [1, 2, 3, 4]],
    ["id=in.(1,3,5)&order=id", [1, 3, 5]],
    ["name=in.(\"O'Hara\",Ada)&order=id", [1, 5]],
    ["id=not.in.(1,2)&order=id", [3, 4, 5]],
    ["id=in.()", []],
    ["or=(team.eq.green,score.gt.80)&order=id", [1, 4]],
    ["or=(id.eq.1,and(team.eq.red,score.is.null))&order=id", [1, 3]],
    ["not.or=(team.eq.red,team.is.null)&order=id", [2, 4]],
    ["and=(score.gte.60,or(team.eq.blue,team.eq.green))&order=id", [2, 4]],
    ["id=gt.1&or=(id.eq.2,id.eq.5)&order=id", [2, 5]],
    ["data->>lang=eq.en&order=id", [1, 5]],
    ["data->n=gt.1&order=id", [2, 4, 5]],
    ["score=eq(any).{60,90}&order=id", [1, 4]],
    ["name=like(any).{A*,D*}&order=id", [1, 4]],
    ["born=lt.1900-01-01&order=born", [1, 4]],
    ["score=isdistinct.75&order=id", [1, 3, 4]],
    ["order=score.desc.nullslast,id", [1, 2, 5, 4, 3]],
    ["order=score.asc.nullsfirst,id.desc", [3, 4, 5, 2, 1]],
    ["order=team.nullsfirst,name.desc", [5, 2, 4, 3, 1]],
    ["order=data->>lang,id", [1, 5, 2, 4, 3]],
    ["name=fts.brian", [2]],
    ["name=fts(simple).carla&order=id", [3]],
    ["name=plfts.Dmitri", [4]],
    ["name=wfts(english).\"ada\" or brian&order=id", [1, 2]],
    ["name=not.phfts.ada&order=id", [2, 3, 4, 5]],
  ])("%s", async (qs, expected) => {
    const { status, text } = await read(`/people?select=id&${qs}`);
    expect(status).toBe(200);
    expect(ids(text)).toEqual(expected);
  });

  test("a value is data, never SQL", async () => {
    const { status, text } = await read(`/people?select=id&name=eq.${encodeURIComponent("x' or '1'='1")}`);
    expect(status).toBe(200);
    expect(text).toBe("[]");
  });

  test("a view reads like a table", async () => {
    const { status, text } = await read("/red_team?order=id");
    expect(status).toBe(200);
    expect(text).toBe('[{"id":1,"name":"Ada"}, \n {"id":3,"name":"Carla"}]');
  });
});

describe("shaping", () => {
  test("aliases, casts and JSON paths name their keys as PostgREST does", async () => {
    const { text } = await read("/people?select=who:name,score::text,data->>lang,data->tags->0,first_tag:data->tags->>0&id=eq.1");
    expect(JSON.parse(text)).toEqual([{ who: "Ada", score: "90", lang: "en", tags: "x", first_tag: "x" }]);
  });

  test("select=* and an empty table", async () => {
    const { text } = await read("/people?id=eq.3");
    expect(text).toBe('[{"id":3,"name":"Carla","team":"red","score":null,"data":null,"born":null}]');
    expect((await read("/empty_things")).text).toBe("[]");
  });

  test("unknown column → PostgreSQL's 42703 as PostgREST answers it", async () => {
    const { status, text } = await read("/people?select=id&nope=eq.1");
    expect(status).toBe(400);
    expect(JSON.parse(text)).toMatchObject({ code: "42703", message: "column people.nope does not exist" });
  });
});

describe("ranges and counts", () => {
  test("limit/offset and Content-Range", async () => {
    const { res, status, text } = await read("/people?select=id&order=id&limit=2&offset=1");
    expect(status).toBe(200);
    expect(ids(text)).toEqual([2, 3]);
    expect(res.headers.get("content-range")).toBe("1-2/*");
  });

  test("Range header, with an exact count → 206 Partial Content", async () => {
    const { res, status, text } = await read("/people?select=id&order=id", { Range: "0-1", Prefer: "count=exact" });
    expect(status).toBe(206);
    expect(ids(text)).toEqual([1, 2]);
    expect(res.headers.get("content-range")).toBe("0-1/5");
    expect(res.headers.get("preference-applied")).toBe("count=exact");
  });

  test("HEAD with count: headers, no body", async () => {
    const { res, status, text } = await read("/people?team=eq.red", { Prefer: "count=exact" }, "HEAD");
    expect(status).toBe(200);
    expect(text).toBe("");
    expect(res.headers.get("content-range")).toBe("0-1/2");
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
  });

  test("empty result with a count → */0", async () => {
    const { res, status } = await read("/people?id=gt.100", { Prefer: "count=exact" });
    expect(status).toBe(200);
    expect(res.headers.get("content-range")).toBe("*/0");
  });

  test("limit=0 → [] with */*", async () => {
    const { res, text } = await read("/people?limit=0");
    expect(text).toBe("[]");
    expect(res.headers.get("content-range")).toBe("*/*");
  });

  test("offset past the counted rows → 416 PGRST103, inline (no Proxy-Status)", async () => {
    const { res, status, text } = await read("/people?offset=100", { Prefer: "count=exact" });
    expect(status).toBe(416);
    expect(JSON.parse(text)).toEqual({
      code: "PGRST103",
      details: "An offset of 100 was requested, but there are only 5 rows.",
      hint: null,
      message: "Requested range not satisfiable",
    });
    expect(res.headers.get("content-range")).toBe("*/5");
    expect(res.headers.get("proxy-status")).toBeNull();
  });

  test("negative limit and an inverted Range → 416 PGRST103", async () => {
    expect(JSON.parse((await read("/people?limit=-1")).text).details).toBe("Limit should be greater than or equal to zero.");
    const inverted = await read("/people", { Range: "3-1" });
    expect(inverted.status).toBe(416);
    expect(JSON.parse(inverted.text).details).toBe("The lower boundary must be lower than or equal to the upper boundary in the Range header.");
  });
});

describe("media types", () => {
  test("application/vnd.pgrst.object+json: one row → the object", async () => {
    const { res, status, text } = await read("/people?select=id,name&id=eq.2", { Accept: "application/vnd.pgrst.object+json" });
    expect(status).toBe(200);
    expect(text).toBe('{"id":2,"name":"Brian"}');
    expect(res.headers.get("content-type")).toBe("application/vnd.pgrst.object+json; charset=utf-8");
  });

  test("application/vnd.pgrst.object+json: several rows or none → 406 PGRST116", async () => {
    const many = await read("/people?team=eq.red", { Accept: "application/vnd.pgrst.object+json" });
    expect(many.status).toBe(406);
    expect(JSON.parse(many.text)).toEqual({
      code: "PGRST116", details: "The result contains 2 rows", hint: null, message: "Cannot coerce the result to a single JSON object",
    });
    const none = await read("/people?id=eq.99", { Accept: "application/vnd.pgrst.object+json" });
    expect(JSON.parse(none.text).details).toBe("The result contains 0 rows");
  });

  test("nulls=stripped drops null members, array and object alike", async () => {
    const arr = await read("/people?select=id,score,team&id=in.(3,5)&order=id", { Accept: "application/vnd.pgrst.array+json;nulls=stripped" });
    expect(arr.status).toBe(200);
    expect(arr.res.headers.get("content-type")).toBe("application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8");
    expect(JSON.parse(arr.text)).toEqual([{ id: 3, team: "red" }, { id: 5, score: 75 }]);
    const obj = await read("/people?select=id,score&id=eq.3", { Accept: "application/vnd.pgrst.object+json;nulls=stripped" });
    expect(obj.text).toBe('{"id":3}');
    const plain = await read("/people?select=id,score&id=eq.3", { Accept: "application/vnd.pgrst.array+json" });
    expect(plain.res.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(plain.text).toBe('[{"id":3,"score":null}]');
  });

  test("text/csv", async () => {
    const { res, status, text } = await read("/people?select=id,name,score&id=in.(1,3,5)&order=id", { Accept: "text/csv" });
    expect(status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(text).toBe('id,name,score\n1,Ada,90\n3,Carla,\n5,O\'Hara,75');
  });

  test("an unavailable media type → 406 PGRST107", async () => {
    const { status, text } = await read("/people", { Accept: "text/html" });
    expect(status).toBe(406);
    expect(JSON.parse(text)).toMatchObject({ code: "PGRST107", message: "None of these media types are available: text/html" });
  });
});

describe("refusals", () => {
  test("unknown table → 404 PGRST205 with PostgREST's fuzzy hint", async () => {
    const near = await read("/peple");
    expect(near.status).toBe(404);
    expect(JSON.parse(near.text)).toEqual({
      code: "PGRST205", details: null, hint: `Perhaps you meant the table '${f.schema}.people'`, message: `Could not find the table '${f.schema}.peple' in the schema cache`,
    });
    expect(JSON.parse((await read("/zzzzzz")).text).hint).toBeNull();
  });

  test.each(["POST", "PATCH", "PUT", "DELETE"])("%s on a relation → 405, nothing written", async (method) => {
    const res = await f.get("/people?id=eq.1", { method, headers: { "Content-Type": "application/json" } });
    expect(res.status).toBe(405);
    const body = await res.json();
    expect(body).toMatchObject({ code: "PGRST127", message: "Feature not implemented" });
    expect(body.details).toContain(method);
    expect(res.headers.get("allow")).toBe("OPTIONS,GET,HEAD");
    const [row] = await f.admin.unsafe(`select count(*)::int as n from ${f.schema}.people`);
    expect(row!.n).toBe(5);
  });

  test("embedding → 400 PGRST127 naming the embedded engine", async () => {
    const { status, text } = await read("/people?select=id,notes(body)");
    expect(status).toBe(400);
    expect(JSON.parse(text)).toMatchObject({ code: "PGRST127", hint: "Use a function (/rpc/...) for this read, or run the real PostgREST" });
  });
});

describe("roles and row-level security", () => {
  test("each signed-in user sees only their own rows", async () => {
    const alice = await f.token({ role: "authenticated", sub: "alice" });
    const bob = await f.token({ role: "authenticated", sub: "bob" });
    const asAlice = await read("/notes?order=id", { Authorization: `Bearer ${alice}` });
    const asBob = await read("/notes?order=id", { Authorization: `Bearer ${bob}` });
    expect(asAlice.status).toBe(200);
    expect(asAlice.text).toBe('[{"id":1,"owner":"alice","body":"a1"}, \n {"id":3,"owner":"alice","body":"a2"}]');
    expect(asBob.text).toBe('[{"id":2,"owner":"bob","body":"b1"}]');
    // Filters cannot widen what the policy allows.
    expect((await read("/notes?owner=eq.carol", { Authorization: `Bearer ${alice}` })).text).toBe("[]");
    const counted = await read("/notes", { Authorization: `Bearer ${alice}`, Prefer: "count=exact" }, "HEAD");
    expect(counted.res.headers.get("content-range")).toBe("0-1/2");
  });

  test("anonymous without a grant → 401 42501 with WWW-Authenticate: Bearer", async () => {
    const { res, status, text } = await read("/notes");
    expect(status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe("Bearer");
    expect(JSON.parse(text)).toEqual({ code: "42501", details: null, hint: null, message: "permission denied for table notes" });
  });

  test("a signed-in role without a grant → 403", async () => {
    const token = await f.token({ role: "authenticated", sub: "alice" });
    const { status, text } = await read("/secrets", { Authorization: `Bearer ${token}` });
    expect(status).toBe(403);
    expect(JSON.parse(text)).toMatchObject({ code: "42501", message: "permission denied for table secrets" });
  });

  test("the transaction is read only", async () => {
    // A function with side effects reached through a read fails with 25006 → 405, as in PostgREST.
    await f.admin.unsafe(`
      create function ${f.schema}.bump() returns int language sql as $$ insert into ${f.schema}.secrets values (1) returning 1 $$;
      create view ${f.schema}.bumping as select ${f.schema}.bump() as n;
      grant select on ${f.schema}.bumping to anon; grant insert on ${f.schema}.secrets to anon;
      notify pgrst, 'reload schema';`);
    await f.engine.reloadSchemaCache();
    const { status, text } = await read("/bumping");
    expect(status).toBe(405);
    expect(JSON.parse(text).code).toBe("25006");
    const [row] = await f.admin.unsafe(`select count(*)::int as n from ${f.schema}.secrets`);
    expect(row!.n).toBe(0);
  });
});

describe("schemas", () => {
  test("with several exposed schemas: Content-Profile, and Accept-Profile picks the schema", async () => {
    const engine = await createEngine(
      defaultEngineConfig({ dbSchemas: [f.schema, "api"], dbAnonRole: "anon", jwtSecret: JWT_SECRET }),
      { databaseUrl: testStack().authenticatorUrl, log: () => {} },
    );
    try {
      const res = await engine.fetch(new Request("http://engine/people?select=id&id=eq.1"));
      expect(res.status).toBe(200);
      expect(res.headers.get("content-profile")).toBe(f.schema);
      expect(await res.text()).toBe('[{"id":1}]');
      const other = await engine.fetch(new Request("http://engine/people", { headers: { "Accept-Profile": "api" } }));
      expect(other.headers.get("proxy-status")).toBe("PostgREST; error=PGRST205");
      expect(other.status).toBe(404);
      expect((await other.json()).message).toBe("Could not find the table 'api.people' in the schema cache");
    } finally {
      await engine.close();
    }
  });
});

describe("db-max-rows", () => {
  test("caps every page, whatever the client asks", async () => {
    const engine = await createEngine(
      defaultEngineConfig({ dbSchemas: [f.schema], dbAnonRole: "anon", jwtSecret: JWT_SECRET, dbMaxRows: 2 }),
      { databaseUrl: testStack().authenticatorUrl, log: () => {} },
    );
    try {
      const all = await engine.fetch(new Request("http://engine/people?select=id&order=id", { headers: { Prefer: "count=exact" } }));
      expect(all.status).toBe(206);
      expect(all.headers.get("content-range")).toBe("0-1/5");
      expect(await all.text()).toBe('[{"id":1}, \n {"id":2}]');
      const paged = await engine.fetch(new Request("http://engine/people?select=id&order=id&offset=2&limit=10"));
      expect(await paged.text()).toBe('[{"id":3}, \n {"id":4}]');
      const small = await engine.fetch(new Request("http://engine/people?select=id&order=id&limit=1"));
      expect(await small.text()).toBe('[{"id":1}]');
    } finally {
      await engine.close();
    }
  });
});

describe("plan choice", () => {
  beforeAll(async () => {
    await f.admin.unsafe(`
      create view ${f.schema}.plan_mode as select current_setting('plan_cache_mode') as mode;
      grant select on ${f.schema}.plan_mode to anon;
      create function ${f.schema}.plan_mode_of_calls() returns text stable language sql as $$ select current_setting('plan_cache_mode') $$;
      grant execute on function ${f.schema}.plan_mode_of_calls() to anon;`);
    await f.engine.reloadSchemaCache();
  });

  test("table and view reads run on generic plans; function calls keep PostgreSQL's choice", async () => {
    expect((await read("/plan_mode")).text).toBe('[{"mode":"force_generic_plan"}]');
    expect((await read("/rpc/plan_mode_of_calls")).text).toBe('"auto"');
  });

  test("ENGINE_RELATION_GENERIC_PLANS=false leaves reads to PostgreSQL's choice too", async () => {
    const engine = await createEngine(
      defaultEngineConfig({ dbSchemas: [f.schema], dbAnonRole: "anon", jwtSecret: JWT_SECRET, relationGenericPlans: false }),
      { databaseUrl: testStack().authenticatorUrl, log: () => {} },
    );
    try {
      const res = await engine.fetch(new Request("http://engine/plan_mode"));
      expect(await res.text()).toBe('[{"mode":"auto"}]');
    } finally {
      await engine.close();
    }
  });
});
