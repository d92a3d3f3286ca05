/**
 * `GET`/`HEAD /<table or view>`: PostgREST's read-only relation requests, on the same grammar
 * and SQL builder as set-returning functions. The statement runs in a read-only transaction as
 * the request's role, so grants and row-level security decide what is seen (42501 → 401 for the
 * anonymous role, 403 otherwise, mapped by the engine's error path). Writes, embedding, spread
 * and aggregates are answered with PostgREST-shaped errors naming what the engine does not do.
 */
import { ApiError } from "./errors";
import { commitRequested, notSingular, runForRow, type EngineRequest, type EngineRuntime } from "./context";
import {
  buildReadSql, negotiateRead, parseReadQuery, qualified, rangeErrorResponse, rangeOutcome, UnsafeCastError,
  type ReadQuery, type ReadRow,
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
    return new Response(null, { status: 200, headers: { "Access-Control-Allow-Origin": "*", Allow: "OPTIONS,GET,HEAD" } });
  }
  if (WRITE_METHODS.has(req.method)) throw writesNotSupported(req.method, req.schema, name);
  if (!isRead || !parsed) throw new ApiError(405, "PGRST117", `Unsupported HTTP method: ${req.method}`);

  checkStrictPreferences(req.prefer);
  const query = capRows(parsed, rt.config.dbMaxRows);
  const media = negotiateRead(req.request.headers.get("accept"));
  // planned/estimated counts are answered with the exact count (documented divergence).
  const count = req.prefer.count !== undefined;
  const target = qualified(relation.schema, relation.name);

  let built;
  try {
    built = buildReadSql({ text: target, values: [], qualifier: target }, query, {
      count,
      shape: req.method === "HEAD" ? "none" : media.shape,
      stripNulls: media.stripNulls,
      columns: columnTypes(relation),
    });
  } catch (e) {
    if (e instanceof UnsafeCastError) throw badCast(e.message);
    throw e;
  }

  const singular = media.shape === "single";
  const { commit, applied } = commitRequested(rt.config, req.prefer);
  const row = await runForRow(
    rt,
    req,
    { readOnly: true, genericPlans: rt.config.relationGenericPlans },
    { text: built.text, values: built.values, prepare: rt.connections.preparable(built.text) },
    commit,
    (rows) => rows[0] as ReadRow,
    singular ? (r) => (Number(r.page_total) === 1 ? undefined : notSingular(Number(r.page_total))) : undefined,
  );

  const total = row.total_result_set === null ? null : Number(row.total_result_set);
  const outcome = rangeOutcome(query.range, Number(row.page_total), total);
  // With several exposed schemas PostgREST names the one it served (default included).
  const profile: Record<string, string> = rt.config.dbSchemas.length > 1 ? { "Content-Profile": req.schema } : {};
  if (outcome.error) {
    return rangeErrorResponse(outcome.error, { "Content-Type": media.contentType, ...profile, "Content-Range": outcome.contentRange }, rt.config.clientErrorVerbosity);
  }

  const headers: Record<string, string> = {
    "Content-Type": media.contentType,
    ...profile,
    "Content-Range": outcome.contentRange,
    "Content-Location": `/${encodeURI(name)}${query.canonical === "" ? "" : "?" + query.canonical}`,
  };
  // PostgREST's Preference-Applied for reads: count, tx (when overridable), handling, in this order.
  const appliedPrefs = [
    count ? `count=${req.prefer.count}` : null,
    applied ? `tx=${commit ? "commit" : "rollback"}` : null,
    req.prefer.handling ? `handling=${req.prefer.handling}` : null,
  ].filter(Boolean);
  if (appliedPrefs.length > 0) headers["Preference-Applied"] = appliedPrefs.join(", ");
  return responseFromGucs(row, outcome.status, req.method === "HEAD" ? null : row.body ?? "", headers);
}
