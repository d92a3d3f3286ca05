/**
 * The `prelude` query option our postgres.js patch adds (patches/postgres@3.4.9.patch): statements
 * sent before a query with no Sync between them, so they share its implicit transaction. On the
 * test stack's real server, on one reserved connection as the engine uses it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres, { type Row, type Sql } from "postgres";
import { testStack } from "../support/stack";

type Reserved = Sql & { release(): void };
type Prelude = Array<{ text: string; values: Array<string | null> }>;

let sql: Sql;
let conn: Reserved;

/**
 * `text` with the prelude, sent at once as the engine sends it (postgres.js would otherwise wait
 * for the first await). The option is the patch's, not in postgres.js's types.
 */
function withPrelude(text: string, values: unknown[], prelude: Prelude, prepare = true): Promise<Row[]> {
  return conn.unsafe(text, values as never[], { prepare, prelude } as { prepare: boolean }).execute();
}

const setX = (value: string): Prelude => [{ text: "select set_config('prelude_test.x', $1, true)", values: [value] }];
const readX = "select current_setting('prelude_test.x', true) as x";

beforeAll(async () => {
  sql = postgres(testStack().databaseUrl, { max: 2, onnotice: () => {} });
  await sql.unsafe(`
    drop schema if exists prelude_test cascade;
    create schema prelude_test;
    create table prelude_test.marks (label text not null);
  `);
  conn = (await sql.reserve()) as Reserved;
});

afterAll(async () => {
  conn.release();
  await sql.unsafe("drop schema if exists prelude_test cascade");
  await sql.end();
});

const marks = async (label: string) => (await sql`select count(*)::int as n from prelude_test.marks where label = ${label}`)[0]!.n as number;

describe("prelude statements", () => {
  test("share the query's transaction, and end with it", async () => {
    expect(await withPrelude(`${readX}, $1::int as n`, [1], setX("first"))).toEqual([{ x: "first", n: 1 }] as never);
    // A query without parameters (unsafe() would otherwise use the simple protocol), not prepared.
    expect(await withPrelude(readX, [], setX("second"), false)).toEqual([{ x: "second" }] as never);
    // Not prepared, with parameters: postgres.js describes it first, then binds it, in the same exchange.
    expect(await withPrelude(`${readX}, $1::int as n`, [3], setX("third"), false)).toEqual([{ x: "third", n: 3 }] as never);
    // The setting was local to that transaction: the next query does not see it.
    expect(await conn.unsafe(readX, [], { prepare: true })).toEqual([{ x: "" }] as never);
  });

  test("an error in a prelude statement fails the query, which never runs", async () => {
    const failing = withPrelude("insert into prelude_test.marks values ($1) returning label", ["after-bad-role"], [
      { text: "select set_config('role', $1, true)", values: ["prelude_no_such_role"] },
    ]);
    await expect(failing).rejects.toMatchObject({ code: "22023", message: 'role "prelude_no_such_role" does not exist' });
    expect(await marks("after-bad-role")).toBe(0);
    // The connection is usable at once, outside any transaction.
    expect(await withPrelude(readX, [], setX("recovered"))).toEqual([{ x: "recovered" }] as never);
  });

  test("an error in the query undoes what the prelude did", async () => {
    const failing = withPrelude("select 1 / $1::int as boom", [0], [
      { text: "insert into prelude_test.marks values ($1)", values: ["before-boom"] },
    ]);
    await expect(failing).rejects.toMatchObject({ code: "22012" });
    expect(await marks("before-boom")).toBe(0);
    const kept = await withPrelude("select $1::int as ok", [1], [{ text: "insert into prelude_test.marks values ($1)", values: ["before-ok"] }]);
    expect(kept).toEqual([{ ok: 1 }] as never);
    expect(await marks("before-ok")).toBe(1);
  });

  test("a prelude statement whose first parse was skipped is parsed again, and a query that met it missing is retried", async () => {
    // Never used on this connection: the first query includes its Parse, the server skips it
    // (the statement before it fails), and the second query, issued before the first failed,
    // counted on it already.
    const fresh = { text: "select set_config('prelude_test.y', $1, true)", values: ["y"] };
    const first = withPrelude("select 1 as one", [], [{ text: "select set_config('role', $1, true)", values: ["prelude_no_such_role"] }, fresh]);
    const second = withPrelude("select current_setting('prelude_test.y', true) as y", [], [fresh]);
    await expect(first).rejects.toMatchObject({ code: "22023" });
    expect(await second).toEqual([{ y: "y" }] as never);
  });

  test("many pipelined queries each get their own prelude's transaction", async () => {
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => withPrelude(`${readX}, $1::int as i`, [i], setX(`v${i}`))));
    expect(answers.map((rows) => rows[0])).toEqual(Array.from({ length: 40 }, (_, i) => ({ x: `v${i}`, i })) as never);
  });
});
