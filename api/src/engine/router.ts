/**
 * Request dispatch, in PostgREST's order: JWT → schema cache → path and profile → handler.
 * `/rpc/<fn>` goes to rpc.ts; `/<relation>` to relation.ts's `handleRelation` when that module
 * exists (read-only table/view requests), after the unknown-relation check (PGRST205 with
 * PostgREST's "Perhaps you meant" hint). Deeper paths are PGRST125.
 */
import { ApiError } from "./errors";
import type { EngineRequest, EngineRuntime } from "./context";
import type { JwtAuthenticator } from "./jwt";
import { fromDatabaseError } from "./pg-errors";
import { checkQueryBounds, parsePrefer, requestSchema } from "./request";
import { handleRelation } from "./relation";
import { handleRpc } from "./rpc";

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ApiError(404, "PGRST125", "Invalid path specified in request URL");
  }
}

/**
 * PostgREST 16 adds `Vary: Accept, Prefer, Range` to every response it builds from a request's
 * result (OPTIONS and the inline 416 included), unless the function set a Vary of its own through
 * `response.headers`; error responses have none.
 */
const VARY = "Accept, Prefer, Range";

function withVary(response: Response): Response {
  if (!response.headers.has("vary")) response.headers.set("Vary", VARY);
  return response;
}

export async function route(
  rt: EngineRuntime,
  auth: Pick<JwtAuthenticator, "authenticate">,
  request: Request,
): Promise<Response> {
  const url = new URL(request.url);
  const method = request.method.toUpperCase();
  const authResult = await auth.authenticate(request.headers.get("authorization"));
  rt.schemaCache(); // refuses the request while there is no schema cache
  const segments = url.pathname.split("/").slice(1);
  if (segments.length > 0 && segments[segments.length - 1] === "") segments.pop();
  const schema = requestSchema(request.headers, method, rt.config.dbSchemas);
  const rawQuery = url.search.startsWith("?") ? url.search.slice(1) : url.search;
  checkQueryBounds(rawQuery);
  const req: EngineRequest = {
    request,
    url,
    method,
    path: url.pathname,
    rawQuery,
    schema,
    auth: authResult,
    prefer: parsePrefer(request.headers),
  };
  try {
    if (segments.length === 2 && segments[0] === "rpc") {
      return withVary(await handleRpc(rt, req, decodeSegment(segments[1]!)));
    }
    if (segments.length === 1) {
      return withVary(await handleRelation(rt, req, decodeSegment(segments[0]!)));
    }
    if (segments.length === 0) {
      throw new ApiError(404, "PGRST126", "Root endpoint metadata is disabled");
    }
    throw new ApiError(404, "PGRST125", "Invalid path specified in request URL");
  } catch (e) {
    throw fromDatabaseError(e, authResult.authed);
  }
}
