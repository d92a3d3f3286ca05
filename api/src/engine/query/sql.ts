/**
 * The one SQL builder for reads, relations and set-returning functions alike. It follows the
 * statement PostgREST sends (a `pgrst_source` CTE, an optional count CTE, and one aggregate row
 * with the body, the counts and the response GUCs), so bodies come out of PostgreSQL's own
 * json_agg / string_agg byte for byte. Every value is a bind parameter; identifiers are quoted.
 */
import type { Condition, Field, Filter, OrderTerm, ReadQuery, SelectItem } from "./types";

export interface SqlText {
  text: string;
  values: unknown[];
}

export interface ReadSource extends SqlText {
  /**
   * What columns are qualified with: `"test"."items"` for a relation (PostgreSQL then names the
   * relation as PostgREST's errors do), an alias such as `pgrst_call` for a function call.
   */
  qualifier: string;
}

/** How the rows become the body: PostgREST's media handlers. */
export type BodyShape =
  | "json" // array of row objects
  | "single" // application/vnd.pgrst.object+json: first row or null (caller checks page_total === 1)
  | "csv"
  | "none"; // HEAD: headers only

export interface BuildOptions {
  /** The total of the unpaginated result goes in total_result_set (exact and estimated counts). */
  count: boolean;
  /**
   * Count at most this many rows (count=estimated under db-max-rows counts up to max-rows + 1,
   * only to learn whether the planner's guess is needed).
   */
  countLimit?: number;
  shape: BodyShape;
  /**
   * Rows are `pgrst_scalar` values (a function returning a scalar or SETOF scalar); `single`
   * then means the function returns one scalar or one composite, not an array.
   */
  rows?: "records" | "scalars" | "single-record" | "single-scalar";
  /** Column name → type name, when known; decides to_jsonb for JSON paths and to_tsvector for fts. */
  columns?: ReadonlyMap<string, string>;
  /** `nulls=stripped` media types: json_strip_nulls over the JSON body. */
  stripNulls?: boolean;
}

/** The result row: the builder's SQL always yields exactly one. */
export interface ReadRow {
  total_result_set: string | number | bigint | null;
  page_total: string | number | bigint;
  body: string | null;
  response_headers: string | null;
  response_status: string | null;
}

/** PostgREST's escapeIdent: NUL ends the name, `"` doubles. */
export function quoteIdent(name: string): string {
  const nul = name.indexOf("\0");
  return '"' + (nul === -1 ? name : name.slice(0, nul)).replace(/"/g, '""') + '"';
}

export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** PostgREST's pgBuildArrayLiteral: a text array literal whose element types PostgreSQL infers. */
export function arrayLiteral(values: string[]): string {
  const esc = (v: string) => {
    const nul = v.indexOf("\0");
    const t = nul === -1 ? v : v.slice(0, nul);
    return '"' + t.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  };
  return "{" + values.map(esc).join(",") + "}";
}

const CAST_TYPE = /^[A-Za-z_][A-Za-z0-9_]*(?: +[A-Za-z_][A-Za-z0-9_]*)*$/;

/** Thrown for a cast the builder will not inline (PostgREST inlines it unquoted). */
export class UnsafeCastError extends Error {}

class Params {
  constructor(readonly values: unknown[]) {}
  add(v: unknown): string {
    this.values.push(v);
    return "$" + this.values.length;
  }
}

const QUANT_SQL = { eq: "=", gte: ">=", gt: ">", lte: "<=", lt: "<", like: "like", ilike: "ilike", match: "~", imatch: "~*" } as const;
const SIMPLE_SQL = { neq: "<>", cs: "@>", cd: "<@", ov: "&&", sl: "<<", sr: ">>", nxr: "&<", nxl: "&>", adj: "-|-" } as const;
const FTS_SQL = { fts: "to_tsquery", plfts: "plainto_tsquery", phfts: "phraseto_tsquery", wfts: "websearch_to_tsquery" } as const;
const IS_SQL = { null: "NULL", not_null: "NOT NULL", true: "TRUE", false: "FALSE", unknown: "UNKNOWN" } as const;

class Builder {
  constructor(
    private readonly q: string,
    private readonly p: Params,
    private readonly columns: ReadonlyMap<string, string> | undefined,
  ) {}

  column(name: string): string {
    return name === "*" ? `${this.q}.*` : `${this.q}.${quoteIdent(name)}`;
  }

  field(f: Field): string {
    if (f.jsonPath.length === 0) return this.column(f.name);
    const type = this.columns?.get(f.name);
    const base = type !== undefined && type !== "json" && type !== "jsonb" ? `to_jsonb(${this.column(f.name)})` : this.column(f.name);
    return base + f.jsonPath.map((s) => s.arrow + (s.isIndex ? `${this.p.add(s.operand)}::int` : this.p.add(s.operand))).join("");
  }

  selectItem(item: SelectItem): string {
    if (item.kind !== "field") throw new Error("embedding reaches the SQL builder"); // parse rejects it first
    let sql = this.field(item.field);
    if (item.cast !== null) {
      if (!CAST_TYPE.test(item.cast)) throw new UnsafeCastError(item.cast);
      sql = `CAST( ${sql} AS ${item.cast} )`;
    }
    const alias = item.alias ?? jsonPathAlias(item.field);
    return alias === null ? sql : `${sql} AS ${quoteIdent(alias)}`;
  }

  filter(f: Filter): string {
    const op = f.operation;
    let lhs = this.field(f.field);
    let rhs: string;
    switch (op.kind) {
      case "quant": {
        const v = op.op === "like" || op.op === "ilike" ? op.value.replace(/\*/g, "%") : op.value;
        const param = this.p.add(v);
        rhs = `${QUANT_SQL[op.op]} ${op.quantifier === null ? param : `${op.quantifier.toUpperCase()}(${param})`}`;
        break;
      }
      case "simple":
        rhs = `${SIMPLE_SQL[op.op]} ${this.p.add(op.value)}`;
        break;
      case "in":
        rhs = op.values.length === 1 && op.values[0] === "" ? "= ANY('{}')" : `= ANY (${this.p.add(arrayLiteral(op.values))})`;
        break;
      case "is":
        rhs = `IS ${IS_SQL[op.value]}`;
        break;
      case "isdistinct":
        rhs = `IS DISTINCT FROM ${this.p.add(op.value)}`;
        break;
      case "fts": {
        const lang = op.language === null ? "" : `${this.p.add(op.language)}, `;
        const type = this.columns?.get(f.field.name);
        if (type !== undefined && type !== "tsvector" && f.field.jsonPath.length === 0) lhs = `to_tsvector(${lang}${lhs})`;
        rhs = `@@ ${FTS_SQL[op.op]}(${lang}${this.p.add(op.value)})`;
        break;
      }
    }
    return `${f.negated ? "NOT " : ""}${lhs} ${rhs}`;
  }

  condition(c: Condition): string {
    if (c.kind === "filter") return this.filter(c.filter);
    const inner = c.children.map((x) => this.condition(x)).join(c.kind === "and" ? " AND " : " OR ");
    return `${c.negated ? "NOT " : ""}(${inner})`;
  }

  orderTerm(t: OrderTerm): string {
    const parts = [this.field(t.field)];
    if (t.direction) parts.push(t.direction.toUpperCase());
    if (t.nulls) parts.push(t.nulls === "first" ? "NULLS FIRST" : "NULLS LAST");
    return parts.join(" ");
  }
}

/** PostgREST names a JSON-path column after its last key (or the column, for a trailing index). */
function jsonPathAlias(f: Field): string | null {
  if (f.jsonPath.length === 0) return null;
  const last = f.jsonPath[f.jsonPath.length - 1]!;
  if (!last.isIndex) return last.operand;
  const lastKey = [...f.jsonPath].reverse().find((s) => !s.isIndex);
  return lastKey ? lastKey.operand : f.name;
}

function bodyExpression(shape: BodyShape, rows: NonNullable<BuildOptions["rows"]>, stripNulls: boolean): string {
  const scalar = rows === "scalars" || rows === "single-scalar";
  const agg = scalar ? "json_agg(_postgrest_t.pgrst_scalar)" : "json_agg(_postgrest_t)";
  const strip = (e: string) => (stripNulls ? `json_strip_nulls(${e})` : e);
  switch (shape) {
    case "none":
      return "''::text";
    case "single":
      return `coalesce(${strip(`${agg}->0`)}, 'null')`;
    case "csv":
      return (
        "(SELECT coalesce(string_agg(a.k, ','), '') FROM (SELECT json_object_keys(r)::text as k FROM " +
        "(SELECT row_to_json(hh) as r from pgrst_source as hh limit 1) s) a) || '\n' || " +
        "coalesce(string_agg(substring(_postgrest_t::text, 2, length(_postgrest_t::text) - 2), '\n'), '')"
      );
    case "json":
      return rows === "single-record" || rows === "single-scalar" ? `coalesce(${strip(`${agg}->0`)}, 'null')` : `coalesce(${strip(agg)}, '[]')`;
  }
}

/**
 * Build the read statement over `source`. The source's own placeholders ($1..$k) keep their
 * values; the builder's come after them.
 */
export function buildReadSql(source: ReadSource, query: ReadQuery, opts: BuildOptions): SqlText {
  // Parsed queries are cached and frozen, so a relation read (a source without values of its own)
  // builds the same statement every time: build it once per query, source and options.
  if (source.values.length > 0 || !Object.isFrozen(query)) return buildUncached(source, query, opts);
  let forQuery = memo.get(query);
  if (!forQuery) memo.set(query, (forQuery = new Map()));
  const key = `${source.text}\u0000${source.qualifier}\u0000${opts.count}\u0000${opts.countLimit ?? ""}\u0000${opts.shape}\u0000${opts.rows ?? ""}\u0000${opts.stripNulls ?? false}`;
  const hit = forQuery.get(key);
  if (hit && hit.columns === opts.columns) return hit.sql;
  const sql = buildUncached(source, query, opts);
  forQuery.set(key, { columns: opts.columns, sql: { text: sql.text, values: Object.freeze(sql.values) as unknown[] } });
  return sql;
}

const memo = new WeakMap<ReadQuery, Map<string, { columns: BuildOptions["columns"]; sql: SqlText }>>();

function buildUncached(source: ReadSource, query: ReadQuery, opts: BuildOptions): SqlText {
  const params = new Params([...source.values]);
  const b = new Builder(source.qualifier, params, opts.columns);

  const select = query.select.length === 0 ? "" : query.select.map((s) => b.selectItem(s)).join(", ");
  const where = query.where === null ? "" : ` WHERE ${b.condition(query.where)}`;
  const order = query.order.length === 0 ? "" : ` ORDER BY ${query.order.map((t) => b.orderTerm(t)).join(", ")}`;
  const ranged = query.range.lower !== 0 || query.range.upper !== null;
  const limitOffset = ranged
    ? ` LIMIT ${query.limit === undefined ? "ALL" : params.add(String(query.limit))} OFFSET ${params.add(String(query.offset))}`
    : "";

  const from = ` FROM ${source.text}`;
  let text = `WITH pgrst_source AS ( SELECT ${select}${from}${where}${order}${limitOffset} )`;
  // Without a range (nor db-max-rows, which sets one) the page is the whole result, so its count
  // is the total: PostgREST 16 counts once then.
  const separateCount = opts.count && ranged;
  if (separateCount) {
    const limit = opts.countLimit === undefined ? "" : ` LIMIT ${params.add(String(opts.countLimit))}`;
    text += ` , pgrst_source_count AS ( SELECT 1${from}${where}${limit} )`;
  }
  const total = separateCount ? "(SELECT pg_catalog.count(*) FROM pgrst_source_count)" : opts.count ? "pg_catalog.count(_postgrest_t)" : "null::bigint";
  text +=
    ` SELECT ${total} AS total_result_set,` +
    ` pg_catalog.count(_postgrest_t) AS page_total,` +
    ` ${bodyExpression(opts.shape, opts.rows ?? "records", opts.stripNulls ?? false)} AS body,` +
    ` nullif(current_setting('response.headers', true), '') AS response_headers,` +
    ` nullif(current_setting('response.status', true), '') AS response_status` +
    ` FROM ( SELECT * FROM pgrst_source ) _postgrest_t`;
  return { text, values: params.values };
}

/**
 * `EXPLAIN (FORMAT JSON)` of the count query (the source with its filters, no order, no page):
 * the planner's row estimate is count=planned's total, and count=estimated's past db-max-rows.
 */
export function buildCountExplainSql(source: ReadSource, query: ReadQuery, opts: Pick<BuildOptions, "columns">): SqlText {
  const params = new Params([...source.values]);
  const b = new Builder(source.qualifier, params, opts.columns);
  const where = query.where === null ? "" : ` WHERE ${b.condition(query.where)}`;
  return { text: `EXPLAIN (FORMAT JSON) SELECT 1 FROM ${source.text}${where}`, values: params.values };
}

/** The top plan's "Plan Rows" from an `EXPLAIN (FORMAT JSON)` result (json as text or parsed). */
export function plannedRows(plan: unknown): number | null {
  const parsed = typeof plan === "string" ? JSON.parse(plan) : plan;
  const rows = Array.isArray(parsed) ? parsed[0]?.Plan?.["Plan Rows"] : undefined;
  return typeof rows === "number" && Number.isFinite(rows) ? Math.round(rows) : null;
}
