/**
 * Turning database and connection failures into PostgREST's responses: its SQLSTATE → HTTP
 * table, `RAISE SQLSTATE 'PGRST'` full-control errors, `PTxxx` custom statuses, and the
 * rendering (Proxy-Status, minimal verbosity, reason phrase) every engine error goes through.
 */
import { ApiError } from "./errors";

/** An ApiError that may carry a custom reason phrase (RAISE SQLSTATE 'PGRST' with status_text). */
export class EngineError extends ApiError {
  statusText?: string;
}

interface PgLikeError {
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
  errno?: string;
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EHOSTUNREACH", "ETIMEDOUT", "EPIPE", "EAI_AGAIN",
  "CONNECT_TIMEOUT", "CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "ConnectionRefused",
  "ConnectionClosed", "ERR_SOCKET_CLOSED",
]);

export function isConnectionError(e: unknown): boolean {
  if (!e || typeof e !== "object") return false;
  const err = e as PgLikeError & { name?: string };
  if (err.code && CONNECTION_CODES.has(err.code)) return true;
  if (err.errno && CONNECTION_CODES.has(err.errno)) return true;
  return false;
}

/** PostgREST's status for a SQLSTATE; `authed` is whether the request runs as a role other than the anonymous one. */
export function statusForSqlState(code: string, message: string, authed: boolean): number {
  if (code.startsWith("08")) return 503;
  if (code.startsWith("09")) return 500;
  if (code.startsWith("0L") || code.startsWith("0P")) return 403;
  switch (code) {
    case "23503": case "23505": return 409;
    case "25006": return 405;
    case "21000": return message.endsWith("requires a WHERE clause") ? 400 : 500;
    case "22023": return message.startsWith("role") && message.endsWith("does not exist") ? 401 : 400;
    case "53400": return 500;
    case "57P01": return 503;
    case "P0001": return 400;
    case "42883": return message.startsWith("function xmlagg(") ? 406 : 404;
    case "42P01": return 404;
    case "42P17": return 500;
    case "42501": return authed ? 403 : 401;
  }
  const two = code.slice(0, 2);
  if (["25", "2D", "38", "39", "3B", "40", "54", "55", "57", "58", "F0", "HV", "XX"].includes(two)) return 500;
  if (two === "28") return 403;
  if (two === "53") return 503;
  if (two === "P0") return 500;
  if (two === "PT") {
    const n = /^\d{3}$/.test(code.slice(2)) ? Number(code.slice(2)) : NaN;
    return n >= 100 && n <= 999 ? n : 500;
  }
  return 400;
}

function pgrstParseError(details: string, hint: string): EngineError {
  return new EngineError(500, "PGRST121", `Could not parse JSON in the "RAISE SQLSTATE 'PGRST'" error`, details, hint);
}

const MESSAGE_HINT = "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', 'hint'.";
const DETAIL_HINT = "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: 'status_text'.";

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** `RAISE SQLSTATE 'PGRST' USING MESSAGE = '{json}', DETAIL = '{json}'`: the function controls the whole response. */
function raisePgrst(message: string, detail: string | undefined): EngineError {
  const msg = parseJsonObject(message);
  if (!msg || typeof msg.code !== "string" || typeof msg.message !== "string") {
    return pgrstParseError(`Invalid JSON value for MESSAGE: '${message}'`, MESSAGE_HINT);
  }
  if (detail === undefined || detail === null) return pgrstParseError("DETAIL is missing in the RAISE statement", DETAIL_HINT);
  const det = parseJsonObject(detail);
  if (!det || typeof det.status !== "number" || !det.headers || typeof det.headers !== "object" || Array.isArray(det.headers)) {
    return pgrstParseError(`Invalid JSON value for DETAIL: '${detail}'`, DETAIL_HINT);
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(det.headers as Record<string, unknown>)) headers[k] = typeof v === "string" ? v : JSON.stringify(v);
  const err = new EngineError(
    det.status,
    msg.code,
    msg.message,
    typeof msg.details === "string" ? msg.details : null,
    typeof msg.hint === "string" ? msg.hint : null,
    headers,
  );
  if (typeof det.status_text === "string") err.statusText = det.status_text;
  return err;
}

/** Any failure from the database layer → the ApiError PostgREST would answer with. */
export function fromDatabaseError(e: unknown, authed: boolean): ApiError {
  if (e instanceof ApiError) return e;
  if (isConnectionError(e)) {
    // PostgREST puts libpq's text in details; the driver's (addresses, socket paths) is kept
    // from clients: no internal error text reaches them. Since 14.13 the message no longer
    // says "Retrying the connection." (the retry is logged instead).
    return new ApiError(503, "PGRST000", "Database connection error.", null);
  }
  const err = e as PgLikeError;
  if (err && typeof err.code === "string" && /^[0-9A-Z]{5}$/.test(err.code) && typeof err.message === "string") {
    if (err.code === "PGRST") return raisePgrst(err.message, err.detail);
    const status = statusForSqlState(err.code, err.message, authed);
    const headers: Record<string, string> = status === 401 ? { "WWW-Authenticate": "Bearer" } : {};
    return new ApiError(status, err.code, err.message, err.detail ?? null, err.hint ?? null, headers);
  }
  return internalError(e);
}

/** Something the engine did not expect. Logged by the caller; the client sees no stack trace. */
export function internalError(_e: unknown): ApiError {
  return new ApiError(500, "PGRSTX00", "Internal server error", null, null);
}

/** PostgREST's error response: JSON body (code/message only under minimal verbosity), Proxy-Status. */
export function renderError(err: ApiError, verbosity: "verbose" | "minimal", extraHeaders: Record<string, string> = {}): Response {
  const body = verbosity === "minimal"
    ? JSON.stringify({ code: err.code, message: err.message })
    : err.body();
  const init: ResponseInit = {
    status: err.status,
    headers: {
      "Content-Type": "application/json; charset=utf-8",
      "Content-Length": String(Buffer.byteLength(body)),
      "Proxy-Status": `PostgREST; error=${err.code}`,
      ...err.headers,
      ...extraHeaders,
    },
  };
  if (err instanceof EngineError && err.statusText) init.statusText = err.statusText;
  return new Response(body, init);
}
