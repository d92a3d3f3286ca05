// The SQL builder on its own: values only ever travel as bind parameters, identifiers are quoted,
// and the statement has PostgREST's shape (pgrst_source CTE, optional count CTE, one result row).
// The statements are also run on the test database, so the shape is checked by PostgreSQL.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import {
  arrayLiteral, buildCountExplainSql, buildReadSql, parseReadQuery, plannedRows, quoteIdent, UnsafeCastError, type ReadSource,
} from "../../api/src/engine/query";
import { testStack } from "../support/stack";

const source: ReadSource = { text: '"qsql"."t"', values: [], qualifier: '"qsql"."t"' };
const build = (qs: string, opts: Partial<Parameters<typeof buildReadSql>[2]> = {}) =>
  buildReadSql(source, parseReadQuery(qs), { count: false, shape: "json", ...opts });

describe("parameters and identifiers", () => {
  test("every value is a bind parameter, in order", () => {
    const q = build("select=id&name=eq.x'y&id=in.(1,2)&or=(a.like.*z*,b.is.null)&limit=5&offset=2");
    expect(q.text).not.toContain("x'y");
    expect(q.text).toContain('"qsql"."t"."name" = $1');
    expect(q.text).toContain('"qsql"."t"."id" = ANY ($2)');
    expect(q.text).toContain('("qsql"."t"."a" like $3 OR "qsql"."t"."b" IS NULL)');
    expect(q.text).toContain("LIMIT $4 OFFSET $5");
    expect(q.values).toEqual(["x'y", '{"1","2"}', "%z%", "5", "2"]);
  });

  test("the source's own parameters come first", () => {
    const q = buildReadSql({ text: '"qsql"."f"($1) pgrst_call', values: [42], qualifier: "pgrst_call" }, parseReadQuery("id=gt.1&limit=5"), { count: true, shape: "json" });
    expect(q.values).toEqual([42, "1", "5", "0"]);
    expect(q.text).toContain('pgrst_call."id" > $2');
    expect(q.text).toContain("pgrst_source_count AS ( SELECT 1 FROM \"qsql\".\"f\"($1) pgrst_call WHERE pgrst_call.\"id\" > $2 )");
  });

  test("an unpaginated count is the page's own count, with no second pass (PostgREST 16)", () => {
    const q = buildReadSql({ text: '"qsql"."t"', values: [], qualifier: '"qsql"."t"' }, parseReadQuery("id=gt.1"), { count: true, shape: "json" });
    expect(q.text).not.toContain("pgrst_source_count");
    expect(q.text).toContain("SELECT pg_catalog.count(_postgrest_t) AS total_result_set");
  });

  test("count=estimated's bounded count stops at its limit", () => {
    const q = buildReadSql({ text: '"qsql"."t"', values: [], qualifier: '"qsql"."t"' }, parseReadQuery("limit=2"), { count: true, countLimit: 3, shape: "json" });
    expect(q.text).toContain('pgrst_source_count AS ( SELECT 1 FROM "qsql"."t" LIMIT $3 )');
    expect(q.values).toEqual(["2", "0", "3"]);
  });

  test("the planned count explains the filtered source without its page", () => {
    const source = { text: '"qsql"."t"', values: [], qualifier: '"qsql"."t"' };
    const q = buildCountExplainSql(source, parseReadQuery("id=gt.1&order=id&limit=2"), {});
    expect(q).toEqual({ text: 'EXPLAIN (FORMAT JSON) SELECT 1 FROM "qsql"."t" WHERE "qsql"."t"."id" > $1', values: ["1"] });
    expect(plannedRows('[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 673}}]')).toBe(673);
    expect(plannedRows("[]")).toBeNull();
  });

  test("identifiers are quoted as PostgREST quotes them", () => {
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(quoteIdent("a\0; drop")).toBe('"a"');
    const q = build('select="we\\"ird",x:"a b"&"c\\"d"=eq.1');
    expect(q.text).toContain('"qsql"."t"."we""ird"');
    expect(q.text).toContain('"qsql"."t"."a b" AS "x"');
    expect(q.text).toContain('"qsql"."t"."c""d" = $1');
  });

  test("in-list array literals escape quotes and backslashes", () => {
    expect(arrayLiteral(['a"b', "c\\d", "e,f"])).toBe('{"a\\"b","c\\\\d","e,f"}');
    expect(build("id=in.()").text).toContain("= ANY('{}')");
  });

  test("JSON paths: keys are parameters, indexes are cast to int", () => {
    const q = build("select=data->a->>0&data->>k=eq.v", { columns: new Map([["data", "jsonb"]]) });
    expect(q.text).toContain('"qsql"."t"."data"->$1->>$2::int AS "a"');
    expect(q.values.slice(0, 2)).toEqual(["a", "+0"]);
    const composite = build("select=pt->x", { columns: new Map([["pt", "point_2d"]]) });
    expect(composite.text).toContain('to_jsonb("qsql"."t"."pt")->$1 AS "x"');
  });

  test("casts are inlined only when they are plain type names", () => {
    expect(build("select=id::double precision").text).toContain('CAST( "qsql"."t"."id" AS double precision )');
    expect(() => build("select=id::$x$")).toThrow(UnsafeCastError);
  });
});

describe("statement shape against PostgreSQL", () => {
  let sql: postgres.Sql;
  beforeAll(async () => {
    // As the engine does: json comes back as the text PostgreSQL rendered.
    const jsonText = { to: 114, from: [114, 3802], serialize: (x: unknown) => x as string, parse: (x: string) => x };
    sql = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {}, types: { jsonText } as never });
    await sql.unsafe(`create schema if not exists qsql; drop table if exists qsql.t;
      create table qsql.t (id int, name text, a text, b text, data jsonb, "we""ird" int);
      insert into qsql.t values (1, 'one', 'za', null, '{"a":[7]}', 0), (2, 'two', 'q', 'x', null, 0), (3, 'three', 'zz', null, '{"k":"v"}', 0)`);
  });
  afterAll(async () => {
    await sql.unsafe("drop schema qsql cascade");
    await sql.end();
  });

  const run = async (qs: string, opts: Partial<Parameters<typeof buildReadSql>[2]> = {}) => {
    const q = build(qs, opts);
    const [row] = await sql.unsafe(q.text, q.values as never[]);
    return row!;
  };

  test("json body, counts and the response GUC columns", async () => {
    const row = await run("select=id,name&id=gte.2&order=id", { count: true });
    expect(row.body).toBe('[{"id":2,"name":"two"}, \n {"id":3,"name":"three"}]');
    expect(Number(row.total_result_set)).toBe(2);
    expect(Number(row.page_total)).toBe(2);
    expect(row.response_headers).toBeNull();
    expect(row.response_status).toBeNull();
  });

  test("paging keeps the count of the whole filtered set", async () => {
    const row = await run("select=id&order=id&limit=1&offset=1", { count: true });
    expect(row.body).toBe('[{"id":2}]');
    expect(Number(row.total_result_set)).toBe(3);
  });

  test("single object, CSV and headers-only bodies", async () => {
    expect((await run("select=id,name&id=eq.1", { shape: "single" })).body).toBe('{"id":1,"name":"one"}');
    expect((await run("select=id,name&id=eq.9", { shape: "single" })).body).toBe("null");
    expect((await run("select=id,name,b&order=id", { shape: "csv" })).body).toBe("id,name,b\n1,one,\n2,two,x\n3,three,");
    expect((await run("select=id", { shape: "none" })).body).toBe("");
  });

  test("trees, negation, like with * and JSON paths run as written", async () => {
    expect((await run("select=id&or=(a.like.z*,not.and(b.is.null,id.gt.1))&order=id")).body).toBe('[{"id":1}, \n {"id":2}, \n {"id":3}]');
    expect((await run("select=id&a=not.like.z*")).body).toBe('[{"id":2}]');
    expect((await run("select=id,data->a->0&data->a->>0=eq.7", { columns: new Map([["data", "jsonb"]]) })).body).toBe('[{"id":1,"a":7}]');
    expect((await run('select="we\\"ird"&id=eq.1')).body).toBe('[{"we\\"ird":0}]');
  });
});
