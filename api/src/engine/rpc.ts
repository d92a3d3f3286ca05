/**
 * `/rpc/<function>`: PostgREST's function calls. Arguments come from the query string (GET/HEAD)
 * or the body (POST: a JSON object, the first object of an array, a form, or the whole body
 * for a single unnamed json/jsonb/text/bytea parameter); the overload is chosen by argument
 * names; the result is shaped by the shared read builder (select, filters, order, limit) and
 * rendered by PostgreSQL's json_agg, inside the request's transaction.
 */
import type { Row } from "postgres";
import { ApiError } from "./errors";
import { commitRequested, notSingular, preferenceApplied, runForRow, type EngineRequest, type EngineRuntime } from "./context";
import { FuzzySet } from "./fuzzy";
import {
  buildReadSql, decodeQueryString, negotiateRead, parseReadQuery, rangeErrorBody, rangeOutcome,
  UnsafeCastError, type BodyShape, type ReadQuery, type ReadRow,
} from "./query";
import { checkStrictPreferences, decodeUtf8Body, parseJsonBounded, readBody } from "./request";
import { responseFromGucs } from "./response";
import type { Routine, RoutineParam } from "./schema-cache";
import { quoteIdent } from "./sql-ident";

type BodyKind = "json" | "form" | "text" | "octet" | "xml" | "none";

/** What the request supplies as arguments, before the function is known. */
interface ArgumentInput {
  /** Argument names (sorted as PostgREST reports them). */
  keys: string[];
  /** name → every value given (GET and form bodies can repeat a name). */
  repeated?: Map<string, string[]>;
  /** The raw JSON body (POST), exactly as sent. */
  rawJson?: string;
  jsonShape?: "object" | "array" | "other";
  /** The raw body for text/plain, xml or octet-stream calls. */
  rawBody?: Uint8Array;
  bodyKind: BodyKind;
  isPost: boolean;
}

const ALLOWED = ["GET", "HEAD", "POST"];

export async function handleRpc(rt: EngineRuntime, req: EngineRequest, functionName: string): Promise<Response> {
  if (req.method === "OPTIONS") return routineInfo(rt, req, functionName);
  if (!ALLOWED.includes(req.method)) {
    throw new ApiError(405, "PGRST101", `Cannot use the ${req.method} method on RPC`);
  }
  const isRead = req.method !== "POST";
  const parsedQuery = parseReadQuery(req.rawQuery, { rpcRead: true, rangeHeader: isRead ? req.request.headers.get("range") : null });
  checkStrictPreferences(req.prefer);
  const input = isRead ? readArguments(parsedQuery) : await bodyArguments(rt, req);

  const cache = rt.schemaCache();
  const overloads = cache.routinesNamed(req.schema, functionName);
  const routine = chooseRoutine(req, functionName, overloads, input, () => cache.similarRoutineName(req.schema, functionName));

  if (req.prefer.handling === "strict" && req.prefer.maxAffected !== undefined && !routine.returnsSet) {
    throw new ApiError(400, "PGRST128", "Function must return SETOF or TABLE when max-affected preference is used with handling=strict");
  }

  const media = negotiateRead(req.request.headers.get("accept"));
  const shape: BodyShape = req.method === "HEAD" || routine.returnKind === "void" ? "none" : media.shape;
  const rows = routine.returnsSet
    ? routine.returnKind === "composite" ? "records" : "scalars"
    : routine.returnKind === "composite" ? "single-record" : "single-scalar";
  const call = callSource(routine, input, req.prefer.params === "single-object");
  const shaped = routine.returnsSet ? capRows(parsedQuery, rt.config.dbMaxRows) : parsedQuery;
  let built;
  const scalarCall = rows === "single-scalar" && (shape === "json" || shape === "single") && req.prefer.count !== "exact" && req.prefer.count !== "estimated" &&
    isPlainRead(shaped) && shaped.range.lower === 0 && shaped.range.upper === null && input.jsonShape !== "array";
  // PostgREST counts a call's rows for count=exact and count=estimated (exactly: it explains only
  // table and view reads); count=planned leaves a call's total unknown.
  const counted = req.prefer.count === "exact" || req.prefer.count === "estimated";
  try {
    built = scalarCall
      ? scalarCallSql(routine, call)
      : buildReadSql(
          { text: `${call.args ? `${call.args}, LATERAL ` : ""}${call.call} ${call.alias}`, values: call.values, qualifier: "pgrst_call" },
          shaped,
          { count: counted, shape, rows },
        );
  } catch (e) {
    if (e instanceof UnsafeCastError) throw new ApiError(400, "PGRST100", `invalid cast: ${e.message}`);
    throw e;
  }

  const tx = commitRequested(rt.config, req.prefer);
  const { commit } = tx;
  const singular = media.shape === "single" && routine.returnsSet;
  const maxAffected = req.prefer.handling === "strict" ? req.prefer.maxAffected : undefined;
  const readOnly = isRead || routine.volatility !== "volatile";
  const refusal = (row: ReadRow): ApiError | undefined => {
    const pageTotal = Number(row.page_total);
    if (singular && pageTotal !== 1) return notSingular(pageTotal);
    if (maxAffected !== undefined && pageTotal > maxAffected) {
      return new ApiError(400, "PGRST124", "Query result exceeds max-affected preference constraint", `The query affects ${pageTotal} rows`);
    }
    return undefined;
  };
  const row = await runForRow(
    rt,
    req,
    { readOnly },
    // Plain calls are prepared once per connection; shaped ones (select/filters/order, whose
    // aliases make the SQL text open-ended) only up to the pool's bound.
    { text: built.text, values: built.values, prepare: isPlainRead(shaped) || rt.connections.preparable(built.text) },
    commit,
    (rows) => (scalarCall ? scalarRow(rows[0]!) : rows[0] as ReadRow),
    singular || maxAffected !== undefined ? refusal : undefined,
  );

  const total = row.total_result_set === null ? null : Number(row.total_result_set);
  const outcome = rangeOutcome(shaped.range, Number(row.page_total), total);
  // With several exposed schemas PostgREST names the one that served the call (default
  // included, GET and POST alike) wherever it sends a Content-Type: not on a void function's 204.
  const profile: Record<string, string> = rt.config.dbSchemas.length > 1 ? { "Content-Profile": req.schema } : {};
  const headers: Record<string, string> = { "Content-Range": outcome.contentRange, ...preferenceApplied(req.prefer, tx, true) };
  // A void function answers 204 with the range and preferences, and without a Content-Type.
  if (routine.returnKind === "void") return responseFromGucs(row, 204, null, headers);
  headers["Content-Type"] = media.contentType;
  Object.assign(headers, profile);
  // The 416 of an offset past the counted total is rendered from the result (no Proxy-Status).
  const body = req.method === "HEAD" ? null : outcome.error ? rangeErrorBody(outcome.error, rt.config.clientErrorVerbosity) : row.body ?? "";
  return responseFromGucs(row, outcome.status, body, headers);
}

/**
 * OPTIONS: PostgREST resolves the function as for a GET (the query string's names choose the
 * overload; none found is PGRST202) and answers with the methods its volatility allows:
 * `OPTIONS,POST` for a volatile function, `OPTIONS,GET,HEAD,POST` for a stable or immutable one.
 */
function routineInfo(rt: EngineRuntime, req: EngineRequest, functionName: string): Response {
  const parsedQuery = parseReadQuery(req.rawQuery, { rpcRead: true, rangeHeader: null });
  checkStrictPreferences(req.prefer);
  const cache = rt.schemaCache();
  const routine = chooseRoutine(req, functionName, cache.routinesNamed(req.schema, functionName), readArguments(parsedQuery),
    () => cache.similarRoutineName(req.schema, functionName));
  const allow = routine.volatility === "volatile" ? "OPTIONS,POST" : "OPTIONS,GET,HEAD,POST";
  return new Response(null, { status: 200, headers: { "Content-Length": "0", "Access-Control-Allow-Origin": "*", Allow: allow } });
}

function isPlainRead(q: ReadQuery): boolean {
  const star = q.select.length === 1 && q.select[0]!.kind === "field" && q.select[0]!.field.name === "*" &&
    q.select[0]!.alias === null && q.select[0]!.cast === null && q.select[0]!.field.jsonPath.length === 0;
  return star && q.where === null && q.order.length === 0;
}

/** PGRST_DB_MAX_ROWS caps the rows of a set-returning function, as for a table. */
function capRows(query: ReadQuery, maxRows: number | undefined): ReadQuery {
  if (maxRows === undefined) return query;
  const cap = query.range.lower + maxRows - 1;
  if (query.range.upper !== null && query.range.upper <= cap) return query;
  return { ...query, limit: maxRows, range: { lower: query.range.lower, upper: cap } };
}

/** GET/HEAD: query parameters without an operator are the arguments. */
function readArguments(query: ReadQuery): ArgumentInput {
  const repeated = new Map<string, string[]>();
  for (const [k, v] of query.args) {
    const list = repeated.get(k);
    if (list) list.push(v);
    else repeated.set(k, [v]);
  }
  return { keys: sortKeys([...repeated.keys()]), repeated, bodyKind: "none", isPost: false };
}

function sortKeys(keys: string[]): string[] {
  return [...new Set(keys)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function bodyKindOf(contentType: string | null): BodyKind | undefined {
  const mt = (contentType ?? "application/json").split(";")[0]!.trim().toLowerCase();
  switch (mt) {
    case "": case "application/json": case "*/*": return "json";
    case "application/x-www-form-urlencoded": return "form";
    case "text/plain": return "text";
    case "application/octet-stream": return "octet";
    case "text/xml": return "xml";
    default: return undefined;
  }
}

async function bodyArguments(rt: EngineRuntime, req: EngineRequest): Promise<ArgumentInput> {
  const contentType = req.request.headers.get("content-type");
  const kind = bodyKindOf(contentType);
  if (kind === undefined) {
    throw new ApiError(400, "PGRST102", `Content-Type not acceptable: ${contentType}`);
  }
  const bytes = await readBody(req.request, rt.config.maxBodyBytes);
  if (kind === "text" || kind === "octet" || kind === "xml") {
    if (kind !== "octet") decodeUtf8Body(bytes);
    return { keys: [], rawBody: bytes, bodyKind: kind, isPost: true };
  }
  const text = decodeUtf8Body(bytes);
  if (kind === "form") {
    const repeated = new Map<string, string[]>();
    for (const [k, v] of decodeQueryString(text)) {
      const list = repeated.get(k);
      if (list) list.push(v ?? "");
      else repeated.set(k, [v ?? ""]);
    }
    return { keys: sortKeys([...repeated.keys()]), repeated, bodyKind: "form", isPost: true };
  }
  if (text === "") return { keys: [], rawJson: "{}", jsonShape: "object", bodyKind: "json", isPost: true };
  const parsed = parseJsonBounded(text);
  if (Array.isArray(parsed)) {
    const first = parsed[0];
    if (first !== undefined && (first === null || typeof first !== "object" || Array.isArray(first))) {
      throw new ApiError(400, "PGRST102", "All object keys must match");
    }
    const firstKeys = first === undefined ? [] : Object.keys(first as object).sort();
    for (const el of parsed) {
      if (el === null || typeof el !== "object" || Array.isArray(el)) throw new ApiError(400, "PGRST102", "All object keys must match");
      const ks = Object.keys(el).sort();
      if (ks.length !== firstKeys.length || ks.some((k, i) => k !== firstKeys[i])) throw new ApiError(400, "PGRST102", "All object keys must match");
    }
    return { keys: sortKeys(firstKeys), rawJson: text, jsonShape: "array", bodyKind: "json", isPost: true };
  }
  if (parsed !== null && typeof parsed === "object") {
    return { keys: sortKeys(Object.keys(parsed)), rawJson: text, jsonShape: "object", bodyKind: "json", isPost: true };
  }
  return { keys: [], rawJson: text, jsonShape: "other", bodyKind: "json", isPost: true };
}

const SINGLE_PARAM_TYPES: Partial<Record<BodyKind, string[]>> = {
  json: ["json", "jsonb"], text: ["text"], octet: ["bytea"], xml: ["xml"],
};
const RAW_BODY_KINDS: BodyKind[] = ["text", "octet", "xml"];

function isSubset(a: Iterable<string>, b: Set<string>): boolean {
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** PostgREST's findProc: match by argument names, else a single unnamed parameter taking the body. */
function chooseRoutine(
  req: EngineRequest,
  name: string,
  overloads: Routine[],
  input: ArgumentInput,
  similarName: () => string | undefined,
): Routine {
  const keys = new Set(input.keys);
  const singleObject = req.prefer.params === "single-object";
  const rawBodyCall = input.isPost && RAW_BODY_KINDS.includes(input.bodyKind);
  const matchesParams = (r: Routine): boolean => {
    const params = r.params;
    if (singleObject) return params.length === 1 && ["json", "jsonb"].includes(params[0]!.typeName);
    if (params.length === 0) return keys.size === 0 && !rawBodyCall;
    const required = params.filter((p) => !p.hasDefault).map((p) => p.name);
    const optional = params.filter((p) => p.hasDefault).map((p) => p.name);
    if (rawBodyCall) return false;
    if (optional.length === 0) return keys.size === required.length && isSubset(required, keys);
    if (required.length === 0) return isSubset(keys, new Set(optional));
    return isSubset(required, keys) && isSubset(keys, new Set(params.map((p) => p.name)));
  };
  const singleUnnamed = (r: Routine): boolean =>
    input.isPost && r.params.length === 1 && r.params[0]!.name === "" &&
    (SINGLE_PARAM_TYPES[input.bodyKind] ?? []).includes(r.params[0]!.typeName);

  const matched = overloads.filter(matchesParams);
  const fallback = overloads.filter((r) => !matchesParams(r) && singleUnnamed(r));
  if (matched.length === 1) return matched[0]!;
  if (matched.length === 0 && fallback.length === 1) return fallback[0]!;
  if (matched.length + fallback.length > 1) {
    const candidates = matched.length > 1 ? matched : [...matched, ...fallback];
    throw new ApiError(
      300,
      "PGRST203",
      `Could not choose the best candidate function between: ${candidates
        .map((r) => `${r.schema}.${r.name}(${r.params.map((p) => `${p.name} => ${p.type}`).join(", ")})`)
        .join(", ")}`,
      null,
      "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
    );
  }
  throw noFunction(req.schema, name, input, overloads, similarName);
}

function noFunction(schema: string, name: string, input: ArgumentInput, overloads: Routine[], similarName: () => string | undefined): ApiError {
  const rawBodyCall = input.isPost && RAW_BODY_KINDS.includes(input.bodyKind);
  const fn = `${schema}.${name}`;
  const keys = input.keys;
  const listed = keys.length === 0 ? " without parameters" : `(${keys.join(", ")})`;
  const message = `Could not find the function ${fn}${rawBodyCall ? "" : listed} in the schema cache`;
  const withParams = keys.length === 0 ? " without parameters" : ` with parameter${keys.length > 1 ? "s" : ""} ${keys.join(", ")}`;
  let searched: string;
  if (input.isPost && input.bodyKind === "text") searched = " with a single unnamed text parameter";
  else if (input.isPost && input.bodyKind === "xml") searched = " with a single unnamed xml parameter";
  else if (input.isPost && input.bodyKind === "octet") searched = " with a single unnamed bytea parameter";
  else if (input.isPost && input.bodyKind === "json") searched = `${withParams} or with a single unnamed json/jsonb parameter`;
  else searched = withParams;
  const details = `Searched for the function ${fn}${searched}, but no matches were found in the schema cache.`;
  let hint: string | null = null;
  if (!rawBodyCall) {
    if (overloads.length === 0) {
      const similar = similarName();
      if (similar !== undefined) hint = `Perhaps you meant to call the function ${schema}.${similar}`;
    } else {
      const asText = (names: string[]) => `(${[...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).join(", ")})`;
      const similar = new FuzzySet(overloads.map((r) => asText(r.params.map((p) => p.name)))).getOne(asText(keys), 0.33);
      if (similar !== undefined) hint = `Perhaps you meant to call the function ${schema}.${name}${similar}`;
    }
  }
  return new ApiError(404, "PGRST202", message, details, hint);
}

interface CallSql {
  /** The FROM item producing the argument row (`pgrst_args`), when there are arguments to bind. */
  args?: string;
  /** The function call expression. */
  call: string;
  /** Its alias in FROM: composite columns as returned, a scalar as `pgrst_scalar`. */
  alias: string;
  values: unknown[];
}

/**
 * The plain call of a function returning one scalar, as one projection over the arguments: each
 * expression PostgreSQL compiles for every execution costs CPU on the hot path, so the constant
 * columns, the empty-GUC checks and the `null` body are left to `scalarRow`. The response GUCs
 * follow the call in the target list, which PostgreSQL evaluates in order, so they see what the
 * function set. to_json renders the value exactly as json_agg(…)->0 would; a json or jsonb value
 * is already its own rendering.
 */
function scalarCallSql(r: Routine, c: CallSql): { text: string; values: unknown[] } {
  const body = r.returnType === "json" || r.returnType === "jsonb" ? c.call : `to_json(${c.call})`;
  return {
    text:
      `SELECT ${body} AS body, current_setting('response.headers', true) AS response_headers,` +
      ` current_setting('response.status', true) AS response_status${c.args ? ` FROM ${c.args}` : ""}`,
    values: c.values,
  };
}

/** The columns the read builder's row has, for a scalar call's row. */
function scalarRow(row: Row): ReadRow {
  return {
    total_result_set: null,
    page_total: 1,
    body: row.body ?? "null",
    response_headers: row.response_headers || null,
    response_status: row.response_status || null,
  } as ReadRow;
}

/** How the function is called, with the argument values as bind parameters. */
function callSource(r: Routine, input: ArgumentInput, singleObject: boolean): CallSql {
  const fn = `${quoteIdent(r.schema)}.${quoteIdent(r.name)}`;
  const alias = r.returnKind === "composite" ? "pgrst_call" : "pgrst_call(pgrst_scalar)";
  const param0 = r.params[0];
  const wholeBody = input.isPost && param0 !== undefined && r.params.length === 1 &&
    (singleObject || (param0.name === "" && RAW_BODY_KINDS.concat("json").includes(input.bodyKind)));
  if (wholeBody) {
    const value = input.rawBody !== undefined
      ? input.bodyKind === "octet" ? Buffer.from(input.rawBody) : new TextDecoder().decode(input.rawBody)
      : input.rawJson ?? JSON.stringify(Object.fromEntries([...(input.repeated ?? new Map()).entries()].map(([k, v]) => [k, v[v.length - 1]])));
    return { call: `${fn}($1::${param0.type})`, alias, values: [value] };
  }
  const given = r.params.filter((p) => input.keys.includes(p.name));
  if (given.length === 0) return { call: `${fn}()`, alias, values: [] };
  const columns = given.map((p) => `${quoteIdent(p.name)} ${p.type}`).join(", ");
  const call = `${fn}(${given.map(namedArg).join(", ")})`;
  if (input.rawJson !== undefined && input.jsonShape !== "other") {
    const args = input.jsonShape === "array"
      ? `(SELECT * FROM json_to_recordset($1::json) AS pgrst_body(${columns}) LIMIT 1) pgrst_args`
      : `(SELECT * FROM json_to_record($1::json) AS pgrst_body(${columns})) pgrst_args`;
    return { args, call, alias, values: [input.rawJson] };
  }
  // Query-string and form arguments: text values; a variadic parameter takes every repetition.
  const object: Record<string, string | string[]> = {};
  for (const p of given) {
    const values = input.repeated?.get(p.name) ?? [];
    object[p.name] = p.variadic ? values : values[values.length - 1] ?? "";
  }
  return {
    args: `(SELECT * FROM json_to_record($1::json) AS pgrst_body(${columns})) pgrst_args`,
    call,
    alias,
    values: [JSON.stringify(object)],
  };
}

function namedArg(p: RoutineParam): string {
  return `${p.variadic ? "VARIADIC " : ""}${quoteIdent(p.name)} := pgrst_args.${quoteIdent(p.name)}`;
}
