import { Elysia } from "elysia";
import type { Cors } from "./cors";
import { securityHeaders } from "./security-headers";

/** What the HTTP server knows of a request and the Request does not (server.ts hands it in). */
export interface RequestInfo {
  /**
   * The peer address as the server saw it (X-Forwarded-For is used only with TRUST_PROXY),
   * asked for only by the requests that use it (sign-in limits, the log line).
   */
  clientIp?: () => string | undefined;
}

/** One request's own state, in Elysia's context as `notes`: read by the routes, written to the log line. */
export interface RequestNotes {
  /** The id this request is answered with (X-Request-Id), sent upstream so the database records it. */
  requestId: string;
  /** The caller's address (computed on demand). */
  clientIp: () => string | undefined;
  cache?: "HIT" | "MISS" | "BYPASS";
}

export interface RequestContextOptions {
  cors: Cors;
  trustProxy: boolean;
  logRequests: boolean;
  log: (event: Record<string, unknown>) => void;
}

const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/;

/**
 * The request envelope as one Elysia plugin, its hooks global so they wrap every route: `derive`
 * makes the request's notes (id, client address), `onBeforeHandle` answers CORS preflights,
 * `mapResponse` (which also sees onError's answers) stamps the id, security and CORS headers
 * and writes the access log line. The app routes every path (a catch-all answers 404), so no
 * request passes outside these hooks.
 */
export function requestContext(options: RequestContextOptions) {
  const { cors, log } = options;
  // Elysia's handle() takes a Request only: the server's facts about it travel here, are read
  // once by derive, and go with the Request.
  const infoOf = new WeakMap<Request, RequestInfo>();

  const plugin = new Elysia({ name: "request-context" })
    .derive({ as: "global" }, ({ request }) => {
      const started = performance.now();
      const incoming = request.headers.get("x-request-id");
      const info = infoOf.get(request);
      const notes: RequestNotes = {
        requestId: incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID(),
        clientIp: () => clientIp(request, info, options.trustProxy),
      };
      return { notes, started };
    })
    .onBeforeHandle({ as: "global" }, ({ request }) => cors.preflight(request))
    .mapResponse({ as: "global" }, ({ request, responseValue, notes, started }) => {
      if (!(responseValue instanceof Response)) return;
      let response = responseValue;
      try {
        response.headers.set("X-Request-Id", notes.requestId);
      } catch {
        // Responses built by fetch have immutable headers.
        response = new Response(response.body, response);
        response.headers.set("X-Request-Id", notes.requestId);
      }
      securityHeaders(response.headers);
      cors.decorate(request, response.headers);
      if (options.logRequests) {
        const ip = notes.clientIp();
        log({
          event: "request",
          method: request.method,
          path: request.url.slice(request.url.indexOf("/", 8)).split("?")[0],
          status: response.status,
          duration_ms: Math.round((performance.now() - started) * 100) / 100,
          request_id: notes.requestId,
          ...(notes.cache ? { cache: notes.cache } : {}),
          ...(ip ? { client_ip: ip } : {}),
        });
      }
      return response;
    });

  return {
    plugin,
    /** The request, with what the server knows of it, ready for the app's handle(). */
    enter(request: Request, info: RequestInfo): Request {
      infoOf.set(request, info);
      return request;
    },
  };
}

function clientIp(request: Request, info: RequestInfo | undefined, trustProxy: boolean): string | undefined {
  if (trustProxy) {
    // The last entry is the one our proxy appended; earlier ones are whatever the client sent.
    const forwarded = request.headers.get("x-forwarded-for")?.split(",").at(-1)?.trim();
    if (forwarded) return forwarded;
  }
  return info?.clientIp?.();
}
