// Hostile query strings against a table read: quotes, `;`, comments, unbalanced parentheses,
// unknown operators, huge in-lists, deep and/or nesting, invalid UTF-8 and bad percent-encoding.
// Each malformed one gets a 400 with PostgREST's code (never a 500); SQL-looking values that are
// well-formed are plain data. The fixture's rows and catalog are unchanged afterwards.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { fixtureChecksum, startRelationFixture, type RelationFixture } from "./relation-support";

let f: RelationFixture;
let before: string;
beforeAll(async () => {
  f = await startRelationFixture();
  before = await fixtureChecksum(f);
}, 30_000);
afterAll(async () => {
  await f?.stop();
});

const SQLISH = [
  "'", "''", "\"", "';--", "'; drop table people; --", "1; drop table people", "1 or 1=1", "1' or '1'='1",
  "1/*", "*/1", "1--", "$$", "$x$drop$x$", "\\", "1)", "(1", "1; select pg_sleep(5)", "1 union select 1",
  "`id`", "null; delete from notes",
];

/** Malformed parameters: every one must be a 400 with PGRST100 (grammar) or a PostgreSQL code. */
function malformed(): string[] {
  const out: string[] = [];
  const enc = encodeURIComponent;
  // Unknown or broken operators.
  for (const op of ["eqq", "equals", "gtt", "lik", "in", "is", "not", "not.not", "drop", ";", "--", "/*", "'", "\"", "(", ")", "", " ", "eq(any", "eq(some)", "fts(", "isdistinctt", "is.maybe", "is.nul", "is.'null'"]) {
    out.push(`id=${enc(op)}.1`);
  }
  for (const v of ["eqq", "val", "", ".", "..", "not.", "not.eq", "in.", "in.(", "in.1,2", "is.", "eq", "1", "'1'", "%27", "%3B"]) {
    out.push(`id=${v}`);
  }
  // SQL-looking values on an integer column: PostgreSQL refuses them (22P02), they are never SQL.
  for (const v of SQLISH) {
    out.push(`id=eq.${enc(v)}`, `id=gt.${enc(v)}`, `id=in.(1,x${enc(v.replace(/[,)]/g, ""))})`, `score=neq.${enc(v)}`);
  }
  // Unbalanced parentheses and broken trees.
  for (const t of [
    "(id.eq.1", "id.eq.1)", "((id.eq.1)", "(id.eq.1,", "(,)", "()", ")(", "(id.eq.1,,id.eq.2)", "(id.eq.1;id.eq.2)",
    "(id.eq.1,or(id.eq.2)", "(id.eq.1,and(id.eq.2,)", "(id.eqq.1)", "(id.1)", "(id)", "(not.or(id.eq.1)x(", "(xor(id.eq.1))",
    "(id.eq.1,id.in.(1,2)", "(\"id.eq.1)", "(id.eq.'1';--)", "(id.eq.1/*,id.eq.2*/)",
  ]) {
    out.push(`or=${enc(t)}`, `and=${enc(t)}`, `not.or=${enc(t)}`);
  }
  // Deep nesting (past the parser's depth limit) and huge in-lists with a bad element.
  for (const n of [101, 200, 1000, 5000, 20000]) {
    out.push(`or=(${"or(".repeat(n)}id.eq.1${")".repeat(n)})`);
    out.push(`or=(${"and(".repeat(n)}id.eq.1`);
  }
  for (const n of [1000, 10000, 50000]) {
    out.push(`id=in.(${Array.from({ length: n }, (_, i) => i).join(",")},x)`);
    out.push(`id=in.(${"1,".repeat(n)}`);
  }
  // Broken select, order and column names.
  for (const s of ["id,", "id,,name", "id::", "id::text;drop", "id::$$", "id::int or true", "id(", "a:b:c", "\"unterminated", "id->", "id->>", "nope", "id,nope", "*,*(", "id;drop table people", "count(*)", "name.sum()", "id,people(id)", "...people(id)"]) {
    out.push(`select=${enc(s)}`);
  }
  for (const o of ["id.up", "id.desc.first", "id.asc.desc", "id;drop", "id.desc;", "(select 1)", "nope", "id,nope.desc", "id.", ".id", "id..desc", "id.nullsfirst.asc", "people(id)"]) {
    out.push(`order=${enc(o)}`);
  }
  // Quotes, semicolons and comments in keys.
  for (const k of ["\"id", "nope", ";", "--", "/*", "' or 1=1", "id--", "x\"y", "\"a\\\"b\"", "people.id", "a.b.c", "id->", "id->>"]) {
    out.push(`${enc(k)}=eq.1`);
  }
  // Invalid UTF-8 and bad percent-encoding.
  for (const bytes of ["%FF", "%C3%28", "%E2%82", "%F0%28%8C%BC", "%ED%A0%80", "%C0%AF", "%80", "%FE%FF"]) {
    out.push(`name=eq.${bytes}`, `${bytes}=eq.1`, `select=${bytes}`, `order=${bytes}`, `or=(name.eq.${bytes})`);
  }
  for (const bad of ["%", "%4", "%zz", "%%", "%G1", "%-1"]) {
    out.push(`id=eq.${bad}`, `id=${bad}.1`);
  }
  return out;
}

const cases = malformed();

describe("hostile query strings", () => {
  test("there are at least 200 of them", () => {
    expect(cases.length).toBeGreaterThanOrEqual(200);
  });

  test("each malformed one is a 400 with PostgREST's code, never a 500", async () => {
    const wrong: string[] = [];
    const codes = new Map<string, number>();
    // Eight at a time: quicker, and the engine sees concurrent hostile requests too.
    const answers: Array<{ qs: string; res: Response; text: string }> = [];
    for (let i = 0; i < cases.length; i += 8) {
      answers.push(
        ...(await Promise.all(
          cases.slice(i, i + 8).map(async (qs) => {
            const res = await f.get(`/people?${qs}`);
            return { qs, res, text: await res.text() };
          }),
        )),
      );
    }
    for (const { qs, res, text } of answers) {
      let body: { code?: unknown; message?: unknown; details?: unknown; hint?: unknown } = {};
      try {
        body = JSON.parse(text);
      } catch {
        /* reported below */
      }
      const keys = Object.keys(body).join(",");
      const codeOk = typeof body.code === "string" && /^(PGRST\d{3}|[0-9A-Z]{5})$/.test(body.code);
      if (res.status !== 400 || !codeOk || keys !== "code,details,hint,message" || typeof body.message !== "string") {
        wrong.push(`${res.status} ${qs.slice(0, 120)} → ${text.slice(0, 160)}`);
      } else {
        codes.set(body.code as string, (codes.get(body.code as string) ?? 0) + 1);
      }
      expect(text).not.toContain("    at "); // no stack trace, whatever happens
    }
    expect(wrong).toEqual([]);
    // The grammar catches most of them before PostgreSQL sees anything.
    expect(codes.get("PGRST100")).toBeGreaterThan(100);
  }, 60_000);

  test("well-formed SQL-looking values and names are data: 200, nothing happens", async () => {
    for (const v of SQLISH) {
      const e = encodeURIComponent(v);
      for (const qs of [`name=eq.${e}`, `name=like.*${e}*`, `name=in.(${e.replace(/%2C/gi, "")},x)`, `or=(name.eq.${e.replace(/%2C|%29/gi, "")},id.eq.0)`, `data->>k${encodeURIComponent(v.replace(/[-:.,>()"]/g, ""))}=eq.1`]) {
        const res = await f.get(`/people?select=id&${qs}`);
        const text = await res.text();
        if (res.status !== 200) throw new Error(`${qs} → ${res.status} ${text}`);
        if (!qs.startsWith("name=like")) expect(text).toBe("[]");
      }
    }
    // A huge well-formed in-list is one bind parameter.
    const huge = await f.get(`/people?select=id&id=in.(${Array.from({ length: 20000 }, (_, i) => i + 10).join(",")})`);
    expect(huge.status).toBe(200);
    expect(await huge.text()).toBe("[]");
  }, 60_000);

  test("as in PostgREST, what follows a complete parameter is ignored, not executed", async () => {
    const same = async (a: string, b: string) => {
      const [x, y] = await Promise.all([f.get(`/people?${a}`), f.get(`/people?${b}`)]);
      expect(x.status).toBe(200);
      expect(await x.text()).toBe(await y.text());
    };
    await same("select=id)%3B%20drop%20table%20people", "select=id");
    await same("select=id::int)%3Bdrop%20table%20people%3B--", "select=id::int");
    await same("id%22--=eq.1", "id=eq.1");
    await same("id%3B=eq.1", "id=eq.1");
    await same("or=(id.eq.1,id.eq.2))%3B--", "or=(id.eq.1,id.eq.2)");
    await same("score=is.null%3Bdrop", "score=is.null");
    await same("select=,id", "select=");
  });

  test("the database is unchanged", async () => {
    expect(await fixtureChecksum(f)).toBe(before);
  });
});
