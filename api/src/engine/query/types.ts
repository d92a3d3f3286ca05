/**
 * The parsed shape of PostgREST's read grammar (select, filters, logic trees, order, range).
 * One grammar serves relations and set-returning functions; the SQL builder consumes only this.
 */

/** One step of a JSON path: `->key`, `->>key`, `->0`, `->>-1`. */
export interface JsonStep {
  arrow: "->" | "->>";
  /** The key, or the index with its sign (`+0`, `-1`) as PostgREST keeps it. */
  operand: string;
  isIndex: boolean;
}

export interface Field {
  name: string;
  jsonPath: JsonStep[];
}

export type AggregateName = "sum" | "avg" | "count" | "max" | "min";

export type SelectItem =
  | {
      kind: "field";
      /** `*` is a field named "*" without a JSON path. */
      field: Field;
      alias: string | null;
      cast: string | null;
      aggregate: AggregateName | null;
      aggregateCast: string | null;
    }
  | { kind: "relation"; name: string; alias: string | null; hint: string | null; joinType: "left" | "inner" | null; children: SelectItem[] }
  | { kind: "spread"; name: string; hint: string | null; joinType: "left" | "inner" | null; children: SelectItem[] };

export type QuantOperator = "eq" | "gte" | "gt" | "lte" | "lt" | "like" | "ilike" | "match" | "imatch";
export type SimpleOperator = "neq" | "cs" | "cd" | "ov" | "sl" | "sr" | "nxr" | "nxl" | "adj";
export type FtsOperator = "fts" | "plfts" | "phfts" | "wfts";
export type IsValue = "null" | "not_null" | "true" | "false" | "unknown";

export type Operation =
  | { kind: "quant"; op: QuantOperator; quantifier: "any" | "all" | null; value: string }
  | { kind: "simple"; op: SimpleOperator; value: string }
  | { kind: "in"; values: string[] }
  | { kind: "is"; value: IsValue }
  | { kind: "isdistinct"; value: string }
  | { kind: "fts"; op: FtsOperator; language: string | null; value: string };

export interface Filter {
  field: Field;
  negated: boolean;
  operation: Operation;
}

export type Condition =
  | { kind: "filter"; filter: Filter }
  | { kind: "and" | "or"; negated: boolean; children: Condition[] };

export interface OrderTerm {
  field: Field;
  direction: "asc" | "desc" | null;
  nulls: "first" | "last" | null;
}

/** A range of row positions, PostgREST's NonnegRange: `upper` null means unbounded. */
export interface RowRange {
  lower: number;
  upper: number | null;
}

export interface ReadQuery {
  select: SelectItem[];
  /** All root filters and and/or trees, AND-ed, in query-string order; null when none. */
  where: Condition | null;
  order: OrderTerm[];
  /** Rows to return; undefined = all. 0 is a valid limit (PostgREST's limit=0). */
  limit?: number;
  offset: number;
  /** The top-level range the Content-Range header and the 416 check are computed from. */
  range: RowRange;
  /** For RPC reads: query parameters without an operator, in order (function arguments). */
  args: Array<[string, string]>;
  /** PostgREST's canonical query string (keys sorted), for Content-Location. */
  canonical: string;
}
