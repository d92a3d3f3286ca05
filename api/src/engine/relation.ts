/**
 * `GET`/`HEAD /<table or view>`: PostgREST's read-only relation requests, on the same grammar
 * and SQL builder as set-returning functions. The statement runs in a read-only transaction as
 * the request's role, so grants and row-level security decide what is seen (42501 → 401 for the
 * anonymous role, 403 otherwise, mapped by the engine's error path). Writes, embedding, spread
 * and aggregates are answered with PostgREST-shaped errors naming what the engine does not do.
 */
import { ApiError } from "./errors";
import { commitRequested, notSingular, preferenceApplied, runForRowThen, type EngineRequest, type EngineRuntime } from "./context";
import {
  buildCountExplainSql, buildReadSql, negotiateRead, parseReadQuery, plannedRows, qualified, rangeErrorBody, rangeOutcome,
  UnsafeCastError, type ReadQuery, type ReadRow,
} from "./query";
import { checkStrictPreferences } from "./request";
import { responseFromGucs } from "./response";
import type { Relation, SchemaCache } from "./schema-cache";

/** The methods PostgREST serves on a relation that this engine does not. */
const WRITE_METHODS = new Set(["POST", "PATCH", "PUT", "DELETE"]);

export function tableNotFound(cache: SchemaCache, schema: string, name: string): ApiError {
  const similar = cache.similarRelationName(schema, name);
  return new ApiError(
    404,
    "PGRST205",
    `Could not find the table '${schema}.${name}' in the schema cache`,
    null,
    similar === undefined ? null : `Perhaps you meant the table '${schema}.${similar}'`,
  );
}

export function writesNotSupported(method: string, schema: string, name: string): ApiError {
  return new ApiError(
    405,
    "PGRST127",
    "Feature not implemented",
    `The embedded engine serves only GET and HEAD on tables and views; ${method} on '${schema}.${name}' is not available`,
    "Write through a function (POST /rpc/...), or run the real PostgREST",
    { Allow: "OPTIONS,GET,HEAD" },
  );
}

function badCast(cast: string): ApiError {
  return new ApiError(400, "PGRST100", `failed to parse select parameter cast (${cast})`, "A cast names a type with letters, digits, underscores and spaces only");
}

/** PostgREST's db-max-rows: the page never exceeds it, whatever the client asked. */
function capRows(query: ReadQuery, maxRows: number | undefined): ReadQuery {
  if (maxRows === undefined) return query;
  const cap = query.range.lower + maxRows - 1;
  if (query.range.upper !== null && query.range.upper <= cap) return query;
  return { ...query, limit: maxRows, range: { lower: query.range.lower, upper: cap } };
}

const columnTypeCache = new WeakMap<Relation, Map<string, string>>();

function columnTypes(relation: Relation): Map<string, string> {
  let types = columnTypeCache.get(relation);
  if (!types) {
    types = new Map(relation.columns.map((c) => [c.name, c.type]));
    columnTypeCache.set(relation, types);
  }
  return types;
}

export async function handleRelation(rt: EngineRuntime, req: EngineRequest, name: string): Promise<Response> {
  const isRead = req.method === "GET" || req.method === "HEAD";
  // PostgREST parses the query string before it plans against the schema cache.
  const parsed = isRead ? parseReadQuery(req.rawQuery, { rangeHeader: req.request.headers.get("range") }) : undefined;

  const cache = rt.schemaCache();
  const relation = cache.relation(req.schema, name);
  if (!relation) throw tableNotFound(cache, req.schema, name);

  if (req.method === "OPTIONS") {
    return new Response(null, { status: 200, headers: { "Content-Length": "0", "Access-Control-Allow-Origin": "*", Allow: "OPTIONS,GET,HEAD" } });
  }
  if (WRITE_METHODS.has(req.method)) throw writesNotSupported(req.method, req.schema, name);
  if (!isRead || !parsed) throw new ApiError(405, "PGRST117", `Unsupported HTTP method: ${req.method}`);

  checkStrictPreferences(req.prefer);
  const query = capRows(parsed, rt.config.dbMaxRows);
  const media = negotiateRead(req.request.headers.get("accept"));
  // PostgREST's counts: exact counts every row; planned takes the planner's estimate (EXPLAIN of
  // the count query); estimated counts exactly up to db-max-rows + 1 and, past max-rows (or with
  // no max-rows at all), answers the larger of that count and the estimate.
  const countMode = req.prefer.count;
  const exactCount = countMode === "exact" || countMode === "estimated";
  const explain = countMode === "planned" || countMode === "estimated";
  const target = qualified(relation.schema, relation.name);
  const source = { text: target, values: [], qualifier: target };

  let built;
  let explainSql;
  try {
    built = buildReadSql(source, query, {
      count: exactCount,
      countLimit: countMode === "estimated" && rt.config.dbMaxRows !== undefined ? rt.config.dbMaxRows + 1 : undefined,
      shape: req.method === "HEAD" ? "none" : media.shape,
      stripNulls: media.stripNulls,
      columns: columnTypes(relation),
    });
    if (explain) explainSql = buildCountExplainSql(source, query, { columns: columnTypes(relation) });
  } catch (e) {
    if (e instanceof UnsafeCastError) throw badCast(e.message);
    throw e;
  }

  const singular = media.shape === "single";
  const tx = commitRequested(rt.config, req.prefer);
  const { row, after } = await runForRowThen(
    rt,
    req,
    { readOnly: true, genericPlans: rt.config.relationGenericPlans },
    { text: built.text, values: built.values, prepare: rt.connections.preparable(built.text) },
    explainSql ? [{ text: explainSql.text, values: explainSql.values, prepare: false }] : [],
    tx.commit,
    (rows) => rows[0] as ReadRow,
    singular ? (r) => (Number(r.page_total) === 1 ? undefined : notSingular(Number(r.page_total))) : undefined,
  );

  const counted = row.total_result_set === null ? null : Number(row.total_result_set);
  const planned = explainSql ? plannedRows(Object.values(after[0]?.[0] ?? {})[0]) : null;
  let total = counted;
  if (countMode === "planned") total = planned;
  else if (countMode === "estimated" && counted !== null && planned !== null &&
    (rt.config.dbMaxRows === undefined || counted > rt.config.dbMaxRows)) total = Math.max(counted, planned);
  const outcome = rangeOutcome(query.range, Number(row.page_total), total);
  // With several exposed schemas PostgREST names the one it served (default included).
  const profile: Record<string, string> = rt.config.dbSchemas.length > 1 ? { "Content-Profile": req.schema } : {};
  const headers: Record<string, string> = {
    "Content-Range": outcome.contentRange,
    "Content-Location": `/${encodeURI(name)}${query.canonical === "" ? "" : "?" + query.canonical}`,
    "Content-Type": media.contentType,
    ...profile,
    ...preferenceApplied(req.prefer, tx, false),
  };
  // The 416 of an offset past the counted total is rendered from the result, with the read's
  // headers (and no Proxy-Status), as PostgREST does.
  const body = req.method === "HEAD" ? null : outcome.error ? rangeErrorBody(outcome.error, rt.config.clientErrorVerbosity) : row.body ?? "";
  return responseFromGucs(row, outcome.status, body, headers);
}
