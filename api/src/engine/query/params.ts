/**
 * From a raw query string (and the Range header) to a ReadQuery, as PostgREST's QueryParams and
 * ApiRequest modules classify and validate parameters. Every client mistake becomes an ApiError
 * with PostgREST's code; nothing here touches the database.
 */
import { ApiError } from "../errors";
import { pColumns, pFieldForest, pLogicPath, pLogicTree, pOpExpr, pOrder, pSingleVal, pTreePath } from "./grammar";
import { alt, pure, run, showMessages, showPos, type Parser } from "./parsec";
import type { Condition, Filter, OrderTerm, ReadQuery, RowRange, SelectItem } from "./types";

export interface ParseOptions {
  /** Parameter names to leave alone (e.g. RPC arguments the caller already consumed). */
  ignore?: Set<string>;
  /** The request's Range header, if any. */
  rangeHeader?: string | null;
  /**
   * RPC GET: a parameter whose value is not an operator expression is a function argument
   * (returned in `args`) instead of a PGRST100 error, as PostgREST does for `/rpc/f?a=1`.
   */
  rpcRead?: boolean;
}

export type RawParams = Array<[string, string | null]>;
type OpExpr = { negated: boolean; operation: Filter["operation"] };

const filterOpExpr = pOpExpr(pSingleVal);
const rpcFilterValue = alt<OpExpr | null>(filterOpExpr, pure(null));

const RESERVED = new Set(["select", "columns", "on_conflict"]);
const RESERVED_EMBEDDABLE = new Set(["order", "limit", "offset", "and", "or"]);

export function queryParseError(sourceName: string, error: Parameters<typeof showMessages>[0]): ApiError {
  return new ApiError(400, "PGRST100", showPos(sourceName, error.pos), showMessages(error));
}

/** and/or trees deeper than this are refused: PostgreSQL would fail on them with a 500 (54001). */
export const MAX_LOGIC_DEPTH = 100;

function tooDeep(sourceName: string): ApiError {
  return new ApiError(400, "PGRST100", `"${sourceName}" (line 1, column 1)`, `nesting deeper than ${MAX_LOGIC_DEPTH} levels is not supported by the embedded engine`);
}

function parseWith<T>(p: Parser<T>, sourceName: string, input: string): T {
  let r;
  try {
    r = run(p, input);
  } catch (e) {
    // Pathological nesting exhausts the parser's stack before any depth check can run.
    if (e instanceof RangeError) throw tooDeep(sourceName);
    throw e;
  }
  if (!r.ok) throw queryParseError(sourceName, r.error);
  return r.value;
}

function depth(c: Condition): number {
  return c.kind === "filter" ? 0 : 1 + Math.max(0, ...c.children.map(depth));
}

/**
 * http-types' parseQueryReplacePlus: pairs split on `&` and `;`, `+` is a space, a `%` that does
 * not start a valid escape stays literal. PostgREST then decodes the bytes as UTF-8; invalid
 * UTF-8 is a client error here (PostgREST itself fails the request).
 */
export function decodeQueryString(raw: string): RawParams {
  const qs = raw.startsWith("?") ? raw.slice(1) : raw;
  if (qs === "") return [];
  const out: RawParams = [];
  for (const piece of qs.split(/[&;]/)) {
    if (piece === "") continue;
    const eq = piece.indexOf("=");
    const k = eq === -1 ? piece : piece.slice(0, eq);
    const v = eq === -1 ? null : piece.slice(eq + 1);
    out.push([urlDecode(k), v === null ? null : urlDecode(v)]);
  }
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function urlDecode(s: string): string {
  if (!/[%+]/.test(s) && !/[^\x00-\x7f]/.test(s)) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) bytes.push(0x20);
    else if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) bytes.push(c);
    else {
      // Non-ASCII in the raw URL: already text; re-encode so the whole value decodes uniformly.
      const cp = s.codePointAt(i)!;
      if (cp > 0xffff) i++;
      bytes.push(...new TextEncoder().encode(String.fromCodePoint(cp)));
    }
  }
  try {
    return utf8.decode(new Uint8Array(bytes));
  } catch {
    throw new ApiError(400, "PGRST100", "Invalid UTF-8 in the query string", `The query string parameter "${s.slice(0, 100)}" is not valid UTF-8 once percent-decoded.`);
  }
}

const lastSegment = (key: string) => key.slice(key.lastIndexOf(".") + 1);

/** Haskell's `readMaybe :: Integer` for the shapes clients send (surrounding spaces allowed). */
function readInteger(v: string): number | null {
  const m = /^\s*(-?\d+)\s*$/.exec(v);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

const ALL: RowRange = { lower: 0, upper: null };
const isEmpty = (r: RowRange) => r.upper !== null && r.upper < r.lower;
const EMPTY: RowRange = { lower: 1, upper: 0 };

function intersect(a: RowRange, b: RowRange): RowRange {
  if (isEmpty(a) || isEmpty(b)) return EMPTY;
  const upper = a.upper === null ? b.upper : b.upper === null ? a.upper : Math.min(a.upper, b.upper);
  return { lower: Math.max(a.lower, b.lower), upper };
}

function rangeFromHeader(header: string | null | undefined): RowRange {
  if (!header) return ALL;
  const m = /^([0-9]+)-([0-9]*)$/.exec(header);
  if (!m) return ALL;
  const lower = Number(m[1]);
  // Both sides are non-empty on their own, so PostgREST keeps `lower-upper` even when upper < lower.
  return { lower, upper: m[2] === "" ? null : Number(m[2]) };
}

const rangeLimit = (r: RowRange) => (r.upper === null ? null : 1 + r.upper - r.lower);

/** PostgREST's ApiRequest range rules: limit/offset params, the Range header, limit=0, PGRST103. */
export function resolveRange(limitValue: string | undefined, offsetValue: string | undefined, rangeHeader: string | null | undefined): RowRange {
  let limitRange: RowRange | undefined;
  const limitParsed = limitValue === undefined ? undefined : readInteger(limitValue);
  const offsetParsed = offsetValue === undefined ? undefined : readInteger(offsetValue);
  if (limitValue !== undefined) limitRange = limitParsed === null ? ALL : { lower: 0, upper: (limitParsed ?? 0) - 1 };
  if (offsetValue !== undefined) {
    const offsetRange: RowRange = offsetParsed === null ? ALL : { lower: offsetParsed!, upper: null };
    if (limitRange === undefined) limitRange = offsetRange;
    else {
      const l = rangeLimit(limitRange) ?? 0;
      const o = offsetRange.lower;
      limitRange = { lower: o, upper: o + l - 1 };
    }
  }
  const limitOnly = limitRange ?? ALL;
  const headerRange = rangeFromHeader(rangeHeader);
  const hasLimitZero = limitOnly.upper === -1;
  const top = hasLimitZero ? { lower: 0, upper: -1 } : intersect(headerRange, limitOnly);
  if (isEmpty(top) && !hasLimitZero) {
    throw new ApiError(
      416,
      "PGRST103",
      "Requested range not satisfiable",
      isEmpty(headerRange)
        ? "The lower boundary must be lower than or equal to the upper boundary in the Range header."
        : "Limit should be greater than or equal to zero.",
    );
  }
  return top;
}

/** Network.HTTP.Base.urlEncode: everything but unreserved ASCII is %XX (UTF-8 bytes, upper hex). */
function urlEncode(s: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(s)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function canonicalOf(params: RawParams): string {
  return [...params]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([k, v]) => `${urlEncode(k)}=${urlEncode(v ?? "")}`)
    .join("&");
}

function notEmbedded(resource: string): ApiError {
  return new ApiError(
    400,
    "PGRST108",
    `'${resource}' is not an embedded resource in this request`,
    null,
    `Verify that '${resource}' is included in the 'select' query parameter.`,
  );
}

export function notImplemented(what: string): ApiError {
  return new ApiError(
    400,
    "PGRST127",
    "Feature not implemented",
    `${what} is not supported by the embedded engine`,
    "Use a function (/rpc/...) for this read, or run the real PostgREST",
  );
}

function checkSelect(items: SelectItem[]): void {
  for (const item of items) {
    if (item.kind === "relation") throw notImplemented(`Resource embedding ('${item.name}(...)' in select)`);
    if (item.kind === "spread") throw notImplemented(`Spread embedding ('...${item.name}(...)' in select)`);
    if (item.aggregate !== null) throw new ApiError(400, "PGRST123", "Use of aggregate functions is not allowed");
  }
}

/**
 * Parse PostgREST's read parameters. `params` is the raw query string (preferred: invalid
 * UTF-8 and `;` separators are seen as PostgREST sees them) or already-decoded pairs.
 */
export function parseReadQuery(params: string | URLSearchParams | RawParams, opts: ParseOptions = {}): ReadQuery {
  if (typeof params !== "string") return parseUncached(params, opts);
  // Clients repeat the same query strings; parsing is pure, so the result (or the error) is reused.
  const key = `${opts.rpcRead ? 1 : 0}\u0000${opts.ignore ? [...opts.ignore].join("\u0001") : ""}\u0000${opts.rangeHeader ?? ""}\u0000${params}`;
  const hit = cache.get(key);
  if (hit !== undefined) {
    if (hit instanceof ApiError) throw hit;
    return hit;
  }
  let result: ReadQuery | ApiError;
  try {
    result = deepFreeze(parseUncached(params, opts));
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    result = e;
  }
  if (key.length <= MAX_CACHED_KEY) {
    if (cache.size >= MAX_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
    cache.set(key, result);
  }
  if (result instanceof ApiError) throw result;
  return result;
}

const MAX_CACHE_ENTRIES = 1000;
const MAX_CACHED_KEY = 4096;
const cache = new Map<string, ReadQuery | ApiError>();

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function parseUncached(params: string | URLSearchParams | RawParams, opts: ParseOptions): ReadQuery {
  const pairs: RawParams =
    typeof params === "string" ? decodeQueryString(params) : params instanceof URLSearchParams ? [...params.entries()] : params;
  const ignore = opts.ignore ?? new Set<string>();
  const all = pairs.filter(([k]) => !ignore.has(k));
  const nonEmpty = all.filter((p): p is [string, string] => p[1] !== null);
  const lookup = (name: string) => {
    const hit = all.find(([k]) => k === name);
    return hit ? hit[1] : null;
  };

  // PostgREST's order of evaluation decides which error a request with several mistakes gets.
  const orders = nonEmpty.filter(([k]) => lastSegment(k) === "order");
  const logic = nonEmpty.filter(([k]) => lastSegment(k) === "and" || lastSegment(k) === "or");
  const filters = nonEmpty.filter(([k]) => !RESERVED_EMBEDDABLE.has(lastSegment(k)) && !RESERVED.has(k));

  // Errors of the plan (embedding, aggregates) come after every parameter has parsed.
  const planErrors: ApiError[] = [];

  const order: OrderTerm[] = [];
  for (const [k, v] of orders) {
    const { path } = parseWith(pTreePath, `failed to parse tree path (${k})`, k);
    const terms = parseWith(pOrder, `failed to parse order (${v})`, v);
    if (path.length > 0) planErrors.push(notEmbedded(path[path.length - 1]!));
    for (const t of terms) {
      if ("relation" in t) planErrors.push(notEmbedded(t.relation));
      else order.push(t);
    }
  }

  const conditions: Condition[] = [];
  for (const [k, v] of logic) {
    const { path, op } = parseWith(pLogicPath, `failed to parse logic path (${k})`, k);
    const tree = parseWith(pLogicTree, `failed to parse logic tree (${v})`, op + v);
    if (depth(tree) > MAX_LOGIC_DEPTH) throw tooDeep(`failed to parse logic tree (${v})`);
    if (path.length > 0) planErrors.push(notEmbedded(path[path.length - 1]!));
    else conditions.push(tree);
  }

  const columns = lookup("columns");
  if (columns !== null) parseWith(pColumns, `failed to parse columns parameter (${columns})`, columns);

  const selectText = lookup("select") ?? "*";
  const select = parseWith(pFieldForest, `failed to parse select parameter (${selectText})`, selectText);

  const args: Array<[string, string]> = [];
  const rootFilters: Filter[] = [];
  const filterValue = opts.rpcRead ? rpcFilterValue : filterOpExpr;
  for (const [k, v] of filters) {
    const { path, field } = parseWith(pTreePath, `failed to parse tree path (${k})`, k);
    const expr = parseWith(filterValue, `failed to parse filter (${v})`, v);
    if (expr === null) args.push([field.name, v]);
    else if (path.length > 0) planErrors.push(notEmbedded(path[path.length - 1]!));
    else rootFilters.push({ field, ...expr });
  }

  const onConflict = lookup("on_conflict");
  if (onConflict !== null) parseWith(pColumns, `failed to parse on_conflict parameter (${onConflict})`, onConflict);

  for (const [k] of nonEmpty) {
    const last = lastSegment(k);
    if ((last === "limit" || last === "offset") && k !== last) {
      planErrors.push(notEmbedded(k.slice(0, k.lastIndexOf(".")).split(".").pop()!));
    }
  }

  checkSelect(select);
  if (planErrors.length > 0) throw planErrors[0]!;

  // Later limit/offset parameters win, as in PostgREST's HashMap.fromList.
  const limitValue = nonEmpty.findLast(([k]) => k === "limit")?.[1];
  const offsetValue = nonEmpty.findLast(([k]) => k === "offset")?.[1];
  const range = resolveRange(limitValue, offsetValue, opts.rangeHeader);
  const limit = rangeLimit(range);

  const where: Condition[] = [...rootFilters.map((filter): Condition => ({ kind: "filter", filter })), ...conditions];
  return {
    select,
    where: where.length === 0 ? null : where.length === 1 ? where[0]! : { kind: "and", negated: false, children: where },
    order,
    ...(limit === null ? {} : { limit }),
    offset: range.lower,
    range,
    args,
    canonical: canonicalOf(all),
  };
}
