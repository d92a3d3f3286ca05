/**
 * What every route handler gets: the running engine (configuration, pool, schema cache,
 * authenticator) and the request as PostgREST reads it (schema, auth result, preferences).
 * The relation handler (relation.ts) and the RPC handler (rpc.ts) share this pipeline.
 */
import type { Sql } from "postgres";
import type { EngineConfig } from "../config/engine";
import { ApiError } from "./errors";
import type { AuthResult } from "./jwt";
import type { Preferences } from "./request";
import { headersForGuc, parseCookies } from "./request";
import type { SchemaCache } from "./schema-cache";
import { runStatementsInRequestTransaction, type RequestConnections, type RequestSettings, type Statement, type TransactionEnd } from "./transaction";
import type { Row } from "postgres";
import type { ReadRow } from "./query";

export interface EngineRuntime {
  readonly config: EngineConfig;
  readonly sql: Sql;
  /** The request connections (see RequestConnections); every request transaction gets one of its own. */
  readonly connections: RequestConnections;
  /** The loaded schema cache; throws PGRST002 (503) while none could be loaded yet. */
  schemaCache(): SchemaCache;
  log(line: string): void;
}

export interface EngineRequest {
  readonly request: Request;
  readonly url: URL;
  /** Upper-case HTTP method. */
  readonly method: string;
  /** The path as received (percent-encoded), e.g. `/rpc/sayhello`. */
  readonly path: string;
  /** The raw query string without `?`, as PostgREST parses it. */
  readonly rawQuery: string;
  /** The exposed schema this request targets (Accept-Profile / Content-Profile or the first). */
  readonly schema: string;
  readonly auth: AuthResult;
  readonly prefer: Preferences;
}

export function noSchemaCache(): ApiError {
  return new ApiError(503, "PGRST002", "Could not query the database for the schema cache. Retrying.");
}

/** The GUCs PostgREST sets for the request: role, claims, method, path, headers, cookies, search_path. */
export function requestSettings(rt: EngineRuntime, req: EngineRequest): RequestSettings {
  return {
    role: req.auth.role,
    claims: req.auth.claims,
    method: req.method,
    path: req.path,
    headers: headersForGuc(req.request.headers),
    cookies: parseCookies(req.request.headers.get("cookie")),
    searchPath: [req.schema, ...rt.config.dbExtraSearchPath.filter((s) => s !== req.schema)],
    timezone: req.prefer.timezone,
  };
}

/** Whether the transaction commits, from PGRST_DB_TX_END and (where allowed) Prefer: tx=. */
export function commitRequested(config: EngineConfig, prefer: Preferences): { commit: boolean; applied: boolean } {
  const base = config.dbTxEnd.startsWith("commit");
  if (config.dbTxEnd.endsWith("allow-override") && prefer.tx !== undefined) {
    return { commit: prefer.tx === "commit", applied: true };
  }
  return { commit: base, applied: false };
}

/**
 * PostgREST's Preference-Applied for reads and calls: count, tx (when overridable), handling,
 * timezone, and for calls max-affected under handling=strict, in this order.
 */
export function preferenceApplied(
  prefer: Preferences,
  tx: { commit: boolean; applied: boolean },
  call: boolean,
): Record<string, string> {
  const values = [
    prefer.count !== undefined ? `count=${prefer.count}` : null,
    tx.applied ? `tx=${tx.commit ? "commit" : "rollback"}` : null,
    prefer.handling !== undefined ? `handling=${prefer.handling}` : null,
    prefer.timezone !== undefined ? `timezone=${prefer.timezone}` : null,
    call && prefer.handling === "strict" && prefer.maxAffected !== undefined ? `max-affected=${prefer.maxAffected}` : null,
  ].filter((v): v is string => v !== null);
  return values.length === 0 ? {} : { "Preference-Applied": values.join(", ") };
}

/** How a request's transaction runs its statement. */
export interface RequestAccess {
  readOnly: boolean;
  /** On a generic plan (EngineConfig.relationGenericPlans). */
  genericPlans?: boolean;
}

/** The request's transaction with everything PostgREST does around the caller's statements. */
export function runRequest(
  rt: EngineRuntime,
  req: EngineRequest,
  access: RequestAccess,
  statements: Statement[],
  end: TransactionEnd<Row[]>,
): Promise<Row[][]> {
  const { readOnly, genericPlans } = access;
  return runStatementsInRequestTransaction(
    rt.connections,
    requestSettings(rt, req),
    { readOnly, genericPlans, preRequest: rt.config.dbPreRequest, acquisitionTimeoutSeconds: rt.config.dbPoolAcquisitionTimeoutSeconds },
    statements,
    end,
  );
}

/** PostgREST's 406 for `Accept: application/vnd.pgrst.object+json` when the result is not one row. */
export function notSingular(pageTotal: number): ApiError {
  return new ApiError(406, "PGRST116", "Cannot coerce the result to a single JSON object", `The result contains ${pageTotal} rows`);
}

/**
 * Runs the request's statement and returns its one row (turned into a ReadRow by `read`).
 * `refusal` says why a row cannot be answered (a singular response with other than one row, a
 * max-affected overrun): such a request's transaction is rolled back, then the refusal thrown.
 * The row is read and judged once, whether or not the verdict decided the end of the transaction.
 */
export async function runForRow(
  rt: EngineRuntime,
  req: EngineRequest,
  access: RequestAccess,
  main: Statement,
  commit: boolean,
  read: (rows: Row[]) => ReadRow,
  refusal?: (row: ReadRow) => ApiError | undefined,
): Promise<ReadRow> {
  return (await runForRowThen(rt, req, access, main, [], commit, read, refusal)).row;
}

/** runForRow, with statements that run after the main one in the same transaction (their rows too). */
export async function runForRowThen(
  rt: EngineRuntime,
  req: EngineRequest,
  access: RequestAccess,
  main: Statement,
  after: Statement[],
  commit: boolean,
  read: (rows: Row[]) => ReadRow,
  refusal?: (row: ReadRow) => ApiError | undefined,
): Promise<{ row: ReadRow; after: Row[][] }> {
  let judged: { row: ReadRow; refused: ApiError | undefined } | undefined;
  const judge = (rows: Row[]) => {
    const row = read(rows);
    return (judged = { row, refused: refusal?.(row) });
  };
  const results = await runRequest(rt, req, access, [main, ...after], refusal ? (r) => commit && judge(r).refused === undefined : commit);
  const { row, refused } = judged ?? judge(results[0]!);
  if (refused) throw refused;
  return { row, after: results.slice(1) };
}
