// The read grammar on its own: query strings → structure, and malformed parameters → the exact
// PGRST100 bodies PostgREST gives (positions and "unexpected … expecting …" texts are the ones
// PostgREST's own doctests pin).
import { describe, expect, test } from "bun:test";
import { ApiError } from "../../api/src/engine/errors";
import { parseReadQuery, resolveRange, type ReadQuery } from "../../api/src/engine/query";

function fails(qs: string, opts: Parameters<typeof parseReadQuery>[1] = {}): ApiError {
  try {
    parseReadQuery(qs, opts);
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error(`expected ${qs} to fail`);
}

function body(e: ApiError) {
  return { status: e.status, ...JSON.parse(e.body()) };
}

const field = (name: string) => ({ name, jsonPath: [] });

describe("select", () => {
  test("columns, aliases, casts and star", () => {
    const q = parseReadQuery("select=id,full:name,created_at::text,*");
    expect(q.select).toEqual([
      { kind: "field", field: field("id"), alias: null, cast: null, aggregate: null, aggregateCast: null },
      { kind: "field", field: field("name"), alias: "full", cast: null, aggregate: null, aggregateCast: null },
      { kind: "field", field: field("created_at"), alias: null, cast: "text", aggregate: null, aggregateCast: null },
      { kind: "field", field: field("*"), alias: null, cast: null, aggregate: null, aggregateCast: null },
    ]);
  });

  test("no select parameter means *", () => {
    expect(parseReadQuery("").select).toEqual([
      { kind: "field", field: field("*"), alias: null, cast: null, aggregate: null, aggregateCast: null },
    ]);
  });

  test("JSON paths with keys and signed indexes", () => {
    const q = parseReadQuery("select=data->a->>b,data->0,data->>-1");
    expect(q.select.map((s) => (s.kind === "field" ? s.field.jsonPath : null))).toEqual([
      [{ arrow: "->", operand: "a", isIndex: false }, { arrow: "->>", operand: "b", isIndex: false }],
      [{ arrow: "->", operand: "+0", isIndex: true }],
      [{ arrow: "->>", operand: "-1", isIndex: true }],
    ]);
  });

  test("quoted names and names with dashes and spaces", () => {
    const q = parseReadQuery('select="a,b",first-name, spaced name ');
    expect(q.select.map((s) => (s.kind === "field" ? s.field.name : ""))).toEqual(["a,b", "first-name", "spaced name"]);
  });

  test.each([
    ["id,clients(name[])", 16, `unexpected '[' expecting letter, digit, "-", "->>", "->", "::", ".", ")", "," or end of input`],
    ["data->>-78xy", 11, `unexpected 'x' expecting digit, "->", "::", ".", "," or end of input`],
    ["name!hint", 5, `unexpected '!' expecting letter, digit, "-", "->>", "->", "::", ".", ")", "," or end of input`],
    ["name::", 7, "unexpected end of input expecting letter or digit"],
  ])("select=%s → PGRST100 at column %d", (sel, column, details) => {
    expect(body(fails(`select=${encodeURIComponent(sel)}`))).toEqual({
      status: 400,
      code: "PGRST100",
      details,
      hint: null,
      message: `"failed to parse select parameter (${sel})" (line 1, column ${column})`,
    });
  });

  test("embedding, spread and aggregates are refused with PostgREST-shaped errors", () => {
    expect(body(fails("select=id,clients(name)"))).toMatchObject({ status: 400, code: "PGRST127", message: "Feature not implemented" });
    expect(fails("select=id,clients(name)").details).toContain("embedded engine");
    expect(body(fails("select=...clients(name)"))).toMatchObject({ status: 400, code: "PGRST127" });
    expect(body(fails("select=count()"))).toEqual({
      status: 400, code: "PGRST123", details: null, hint: null, message: "Use of aggregate functions is not allowed",
    });
    expect(body(fails("select=amount.sum()"))).toMatchObject({ code: "PGRST123" });
  });
});

describe("filters", () => {
  const op = (qs: string) => {
    const w = parseReadQuery(qs).where;
    if (w?.kind !== "filter") throw new Error("expected one filter");
    return w.filter;
  };

  test("every operator family", () => {
    expect(op("id=eq.1")).toEqual({ field: field("id"), negated: false, operation: { kind: "quant", op: "eq", quantifier: null, value: "1" } });
    expect(op("id=not.gte.5").negated).toBe(true);
    expect(op("name=like.*smith*").operation).toEqual({ kind: "quant", op: "like", quantifier: null, value: "*smith*" });
    expect(op("name=ilike(any).{a*,b*}").operation).toEqual({ kind: "quant", op: "ilike", quantifier: "any", value: "{a*,b*}" });
    expect(op("tags=cs.{a,b}").operation).toEqual({ kind: "simple", op: "cs", value: "{a,b}" });
    expect(op("id=neq.3").operation).toEqual({ kind: "simple", op: "neq", value: "3" });
    expect(op("x=is.NULL").operation).toEqual({ kind: "is", value: "null" });
    expect(op("x=is.not_null").operation).toEqual({ kind: "is", value: "not_null" });
    expect(op("x=is.unknown").operation).toEqual({ kind: "is", value: "unknown" });
    expect(op("x=isdistinct.3").operation).toEqual({ kind: "isdistinct", value: "3" });
    expect(op("doc=fts(english).cat").operation).toEqual({ kind: "fts", op: "fts", language: "english", value: "cat" });
  });

  test("in lists: quoting, escapes, commas and parentheses inside quotes", () => {
    expect(op(`name=in.(a,"b,c","d\\"e","f)g", h )`).operation).toEqual({ kind: "in", values: ["a", "b,c", 'd"e', "f)g", " h "] });
    expect(op("id=in.()").operation).toEqual({ kind: "in", values: [""] });
  });

  test("values keep dots, and + is a space", () => {
    expect(op("v=eq.a.b.c").operation).toMatchObject({ value: "a.b.c" });
    expect(op("v=eq.a+b").operation).toMatchObject({ value: "a b" });
    expect(op("v=eq.a%2Bb").operation).toMatchObject({ value: "a+b" });
  });

  test("and/or trees, nested, negated, with filters beside them", () => {
    const q = parseReadQuery("id=gt.0&or=(a.eq.1,and(b.lt.2,c.not.is.null),not.or(d.in.(1,2),e.eq.\"x,y\"))&not.and=(f.eq.1,g.eq.2)");
    expect(q.where).toEqual({
      kind: "and",
      negated: false,
      children: [
        { kind: "filter", filter: { field: field("id"), negated: false, operation: { kind: "quant", op: "gt", quantifier: null, value: "0" } } },
        {
          kind: "or",
          negated: false,
          children: [
            { kind: "filter", filter: { field: field("a"), negated: false, operation: { kind: "quant", op: "eq", quantifier: null, value: "1" } } },
            {
              kind: "and",
              negated: false,
              children: [
                { kind: "filter", filter: { field: field("b"), negated: false, operation: { kind: "quant", op: "lt", quantifier: null, value: "2" } } },
                { kind: "filter", filter: { field: field("c"), negated: true, operation: { kind: "is", value: "null" } } },
              ],
            },
            {
              kind: "or",
              negated: true,
              children: [
                { kind: "filter", filter: { field: field("d"), negated: false, operation: { kind: "in", values: ["1", "2"] } } },
                { kind: "filter", filter: { field: field("e"), negated: false, operation: { kind: "quant", op: "eq", quantifier: null, value: "x,y" } } },
              ],
            },
          ],
        },
        {
          kind: "and",
          negated: true,
          children: [
            { kind: "filter", filter: { field: field("f"), negated: false, operation: { kind: "quant", op: "eq", quantifier: null, value: "1" } } },
            { kind: "filter", filter: { field: field("g"), negated: false, operation: { kind: "quant", op: "eq", quantifier: null, value: "2" } } },
          ],
        },
      ],
    });
  });

  test.each([
    ["a.b=noop.0", "failed to parse filter (noop.0)", 1, `unexpected "o" expecting "not" or operator (eq, gt, ...)`],
    ["id=val", "failed to parse filter (val)", 1, `unexpected "v" expecting "not" or operator (eq, gt, ...)`],
    ["id=fts().value", "failed to parse filter (fts().value)", 5, `unexpected ")" expecting operator (eq, gt, ...)`],
    ["id=eq().value", "failed to parse filter (eq().value)", 4, `unexpected ")" expecting operator (eq, gt, ...)`],
    ["id=is().value", "failed to parse filter (is().value)", 3, `unexpected "(" expecting operator (eq, gt, ...)`],
    ["id=in().value", "failed to parse filter (in().value)", 3, `unexpected "(" expecting operator (eq, gt, ...)`],
    ["or=()", "failed to parse logic tree (())", 4, `unexpected ")" expecting field name (* or [a..z0..9_$]), negation operator (not) or logic operator (and, or)`],
    ["or=(id.in.1,2,id.eq.3)", "failed to parse logic tree ((id.in.1,2,id.eq.3))", 10, `unexpected "1" expecting "("`],
    ["or=)(", "failed to parse logic tree ()()", 3, `unexpected ")" expecting "("`],
    ["and=(ord(id.eq.1,id.eq.1),id.eq.2)", "failed to parse logic tree ((ord(id.eq.1,id.eq.1),id.eq.2))", 7, `unexpected "d" expecting "("`],
    ["or=(id.eq.1,not.xor(id.eq.2,id.eq.3))", "failed to parse logic tree ((id.eq.1,not.xor(id.eq.2,id.eq.3)))", 16, `unexpected "x" expecting logic operator (and, or)`],
  ])("%s → PGRST100", (qs, source, column, details) => {
    expect(body(fails(qs))).toEqual({ status: 400, code: "PGRST100", details, hint: null, message: `"${source}" (line 1, column ${column})` });
  });

  test("a filter on an embedded resource is PostgREST's PGRST108", () => {
    expect(body(fails("clients.id=eq.1"))).toEqual({
      status: 400,
      code: "PGRST108",
      details: null,
      hint: "Verify that 'clients' is included in the 'select' query parameter.",
      message: "'clients' is not an embedded resource in this request",
    });
  });

  test("RPC reads: values without an operator are arguments", () => {
    const q = parseReadQuery("a=1&b=two&id=gt.3", { rpcRead: true });
    expect(q.args).toEqual([["a", "1"], ["b", "two"]]);
    expect(q.where).toMatchObject({ kind: "filter", filter: { field: field("id") } });
    expect(parseReadQuery("a=1&id=eq.2", { ignore: new Set(["a"]) }).args).toEqual([]);
  });

  test("`;` separates parameters and invalid UTF-8 is a 400, not a crash", () => {
    expect(parseReadQuery("id=eq.1;select=id").select).toHaveLength(1);
    expect(body(fails("name=eq.%FF%FE"))).toMatchObject({ status: 400, code: "PGRST100" });
  });
});

describe("order", () => {
  test("directions, nulls and several terms", () => {
    expect(parseReadQuery("order=a,b.desc,c.asc.nullsfirst,d.nullslast,data->>k.desc").order).toEqual([
      { field: field("a"), direction: null, nulls: null },
      { field: field("b"), direction: "desc", nulls: null },
      { field: field("c"), direction: "asc", nulls: "first" },
      { field: field("d"), direction: null, nulls: "last" },
      { field: { name: "data", jsonPath: [{ arrow: "->>", operand: "k", isIndex: false }] }, direction: "desc", nulls: null },
    ]);
  });

  test.each([
    ["id.ac", 4, `unexpected "c" expecting "asc", "desc", "nullsfirst" or "nullslast"`],
    ["id.descc", 8, `unexpected 'c' expecting delimiter (.), "," or end of input`],
    ["id.nulsfist", 4, `unexpected "n" expecting "asc", "desc", "nullsfirst" or "nullslast"`],
    ["id.nullslasttt", 13, `unexpected 't' expecting "," or end of input`],
    ["id.smth34", 4, `unexpected "s" expecting "asc", "desc", "nullsfirst" or "nullslast"`],
    ["id.asc.nlsfst", 8, `unexpected "l" expecting "nullsfirst" or "nullslast"`],
    ["id.asc.nullslasttt", 17, `unexpected 't' expecting "," or end of input`],
    ["id.asc.smth34", 8, `unexpected "s" expecting "nullsfirst" or "nullslast"`],
  ])("order=%s → PGRST100", (v, column, details) => {
    expect(body(fails(`order=${v}`))).toEqual({
      status: 400, code: "PGRST100", details, hint: null, message: `"failed to parse order (${v})" (line 1, column ${column})`,
    });
  });
});

describe("ranges", () => {
  const r = (q: ReadQuery) => ({ limit: q.limit, offset: q.offset, range: q.range });

  test("limit and offset", () => {
    expect(r(parseReadQuery("limit=2&offset=1"))).toEqual({ limit: 2, offset: 1, range: { lower: 1, upper: 2 } });
    expect(r(parseReadQuery("limit=0"))).toEqual({ limit: 0, offset: 0, range: { lower: 0, upper: -1 } });
    expect(r(parseReadQuery("offset=3"))).toEqual({ limit: undefined, offset: 3, range: { lower: 3, upper: null } });
    expect(r(parseReadQuery("offset=-4"))).toEqual({ limit: undefined, offset: 0, range: { lower: 0, upper: null } });
    expect(r(parseReadQuery("limit=abc"))).toEqual({ limit: undefined, offset: 0, range: { lower: 0, upper: null } });
  });

  test("the Range header narrows the limit", () => {
    expect(r(parseReadQuery("limit=5", { rangeHeader: "1-2" }))).toEqual({ limit: 2, offset: 1, range: { lower: 1, upper: 2 } });
    expect(r(parseReadQuery("", { rangeHeader: "3-" }))).toEqual({ limit: undefined, offset: 3, range: { lower: 3, upper: null } });
    expect(r(parseReadQuery("", { rangeHeader: "items=0-1" }))).toEqual({ limit: undefined, offset: 0, range: { lower: 0, upper: null } });
  });

  test("unsatisfiable ranges are PGRST103 416", () => {
    expect(body(fails("limit=-1"))).toEqual({
      status: 416, code: "PGRST103", details: "Limit should be greater than or equal to zero.", hint: null, message: "Requested range not satisfiable",
    });
    expect(body(fails("", { rangeHeader: "5-2" }))).toEqual({
      status: 416,
      code: "PGRST103",
      details: "The lower boundary must be lower than or equal to the upper boundary in the Range header.",
      hint: null,
      message: "Requested range not satisfiable",
    });
    expect(() => resolveRange("0", "5", null)).toThrow(ApiError);
  });

  test("canonical query string is sorted and percent-encoded", () => {
    expect(parseReadQuery("select=id&id=eq.1&and=(a.eq.1)").canonical).toBe("and=%28a.eq.1%29&id=eq.1&select=id");
  });
});
