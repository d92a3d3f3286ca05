// Which functions the engine can call at all, and how it reports overloads, as PostgREST's
// schema cache does: functions it cannot call are left out (all parameters unnamed, unless a
// single json/jsonb/text/xml/bytea one; trigger functions), and overloads are kept in
// PostgREST's order, which is the order of PGRST203's candidates.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Engine } from "../../api/src/engine/index";
import { adminSql, get, post, productEngine, readJson } from "./rpc-support";

const admin = adminSql();
let engine: Engine;

beforeAll(async () => {
  await admin.unsafe(`
    drop schema if exists engine_callable cascade;
    create schema engine_callable;
    grant usage on schema engine_callable to anon;
    create function engine_callable.two_unnamed(int, int) returns int language sql immutable as 'select $1 + $2';
    create function engine_callable.one_unnamed_int(int) returns int language sql immutable as 'select $1';
    create function engine_callable.mixed(a int, int) returns int language sql immutable as 'select $1';
    create function engine_callable.raw_text(text) returns text language sql immutable as 'select $1';
    create function engine_callable.on_change() returns trigger language plpgsql as 'begin return new; end';
    -- Created text first, so the catalogue's order is not PostgREST's.
    create function engine_callable.amb(a text) returns text language sql immutable as 'select $1';
    create function engine_callable.amb(a int, b int default 2) returns text language sql immutable as 'select ($1 + $2)::text';
    create function engine_callable.amb(a int) returns text language sql immutable as 'select $1::text';
    create function engine_callable.body(jsonb) returns text language sql immutable as $$ select 'jsonb' $$;
    create function engine_callable.body(json) returns text language sql immutable as $$ select 'json' $$;
    create function engine_callable.body(int, int) returns text language sql immutable as $$ select 'ints' $$;
    create function engine_callable.bump() returns int language sql volatile as 'select 1';
    create function engine_callable.peek() returns int language sql stable as 'select 1';
    create function engine_callable.pure() returns int language sql immutable as 'select 1';
    create function engine_callable.by_args(x int) returns int language sql volatile as 'select 1';
    create function engine_callable.by_args(y text) returns int language sql stable as 'select 2';
    grant execute on all functions in schema engine_callable to anon;
    drop schema if exists engine_callable_b cascade;
    create schema engine_callable_b;
    grant usage on schema engine_callable_b to anon;
    create function engine_callable_b.pure() returns int language sql immutable as 'select 2';
    create function engine_callable_b.nothing() returns void language sql volatile as '';
    grant execute on all functions in schema engine_callable_b to anon;
  `);
  engine = await productEngine({ dbSchemas: ["engine_callable"] });
});

afterAll(async () => {
  await engine.close();
  await admin.unsafe("drop schema if exists engine_callable, engine_callable_b cascade");
  await admin.end();
});

const notFound = (name: string, details: string, hint: string | null = null) => ({
  code: "PGRST202",
  details,
  hint,
  message: `Could not find the function engine_callable.${name} without parameters in the schema cache`,
});

describe("functions PostgREST cannot call are not in the schema cache", () => {
  test("all parameters unnamed: left out, so no hint names their parameters", async () => {
    for (const name of ["two_unnamed", "one_unnamed_int"]) {
      const res = await readJson(await engine.fetch(get(`/rpc/${name}`)));
      expect(res.status).toBe(404);
      expect(res.json).toEqual(notFound(name, `Searched for the function engine_callable.${name} without parameters, but no matches were found in the schema cache.`));
    }
  });

  test("a trigger function is left out", async () => {
    const res = await readJson(await engine.fetch(get("/rpc/on_change")));
    expect(res.status).toBe(404);
    expect((res.json as { code: string }).code).toBe("PGRST202");
  });

  test("kept: some parameters named, or a single unnamed text/json parameter", async () => {
    const mixed = await readJson(await engine.fetch(get("/rpc/mixed?a=1")));
    expect(mixed.json).toMatchObject({ code: "PGRST202", hint: "Perhaps you meant to call the function engine_callable.mixed(, a)" });
    const text = await engine.fetch(new Request("http://engine/rpc/raw_text", { method: "POST", headers: { "Content-Type": "text/plain" }, body: "hi" }));
    expect([text.status, await text.text()]).toEqual([200, '"hi"']);
  });

  test("an uncallable overload does not take part in resolution", async () => {
    const res = await readJson(await engine.fetch(post("/rpc/body", { x: 1 })));
    expect(res.status).toBe(300);
    expect((res.json as { message: string }).message).toBe(
      "Could not choose the best candidate function between: engine_callable.body( => json), engine_callable.body( => jsonb)",
    );
  });
});

describe("PGRST203 lists the candidates in PostgREST's order", () => {
  test("fewer parameters first, then by parameter name and type", async () => {
    const res = await readJson(await engine.fetch(get("/rpc/amb?a=1")));
    expect(res.status).toBe(300);
    expect(res.json).toEqual({
      code: "PGRST203",
      details: null,
      hint: "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
      message:
        "Could not choose the best candidate function between: engine_callable.amb(a => integer), " +
        "engine_callable.amb(a => text), engine_callable.amb(a => integer, b => integer)",
    });
  });
});

describe("OPTIONS /rpc/<fn>: the methods the function's volatility allows", () => {
  const options = (path: string) => engine.fetch(new Request(`http://engine${path}`, { method: "OPTIONS" }));

  test("volatile: OPTIONS,POST; stable and immutable: OPTIONS,GET,HEAD,POST; no body", async () => {
    for (const [name, allow] of [["bump", "OPTIONS,POST"], ["peek", "OPTIONS,GET,HEAD,POST"], ["pure", "OPTIONS,GET,HEAD,POST"]]) {
      const res = await options(`/rpc/${name}`);
      expect([name, res.status, res.headers.get("allow"), res.headers.get("access-control-allow-origin"), await res.text()])
        .toEqual([name, 200, allow, "*", ""]);
    }
  });

  test("the overload is chosen by the query string's names, as for GET; none is PGRST202", async () => {
    expect((await options("/rpc/by_args?x=1")).headers.get("allow")).toBe("OPTIONS,POST");
    expect((await options("/rpc/by_args?y=1")).headers.get("allow")).toBe("OPTIONS,GET,HEAD,POST");
    const missing = await readJson(await options("/rpc/by_args"));
    expect(missing.status).toBe(404);
    expect((missing.json as { code: string }).code).toBe("PGRST202");
    expect((await options("/rpc/nothing_like_it")).status).toBe(404);
  });
});

describe("Content-Profile: with several exposed schemas, the one that served the call", () => {
  test("default and chosen schema, GET and POST; none on a void 204; none with one schema", async () => {
    const both = await productEngine({ dbSchemas: ["engine_callable", "engine_callable_b"] });
    try {
      const answer = async (r: Request) => {
        const res = await both.fetch(r);
        return [res.status, res.headers.get("content-profile"), await res.text()];
      };
      expect(await answer(get("/rpc/pure"))).toEqual([200, "engine_callable", "1"]);
      expect(await answer(get("/rpc/pure", { "Accept-Profile": "engine_callable_b" }))).toEqual([200, "engine_callable_b", "2"]);
      expect(await answer(post("/rpc/pure", {}))).toEqual([200, "engine_callable", "1"]);
      expect(await answer(post("/rpc/pure", {}, { "Content-Profile": "engine_callable_b" }))).toEqual([200, "engine_callable_b", "2"]);
      expect(await answer(post("/rpc/nothing", {}, { "Content-Profile": "engine_callable_b" }))).toEqual([204, null, ""]);
    } finally {
      await both.close();
    }
    expect((await engine.fetch(get("/rpc/pure"))).headers.get("content-profile")).toBeNull();
  });
});
