import { ApiError } from "../engine/errors";

export { ApiError };

/** The gateway's own answers, in PostgREST's error shape so clients handle one format. */
export const gatewayErrors = {
  invalidJson: () => new ApiError(400, "PGRST102", "Empty or invalid json"),
  notFound: (path: string) =>
    new ApiError(404, "PGRST125", `Invalid path specified in request URL`, null, `No route for ${path.slice(0, 200)}`),
  methodNotAllowed: (method: string) => new ApiError(405, "PGRST117", `Unsupported HTTP method: ${method}`),
  // PostgREST answers 405 once such a call fails in its read-only transaction; here nothing runs.
  readOfVolatile: (method: string) =>
    new ApiError(405, "PGRST101", `Cannot use the ${method} method on a volatile function`, null, "Call it with POST.", { Allow: "POST" }),
  rateLimited: (retryAfter: number, scope: string) =>
    new ApiError(429, "PGRST429", "Too many requests", `Limit per ${scope} reached`, `Retry after ${retryAfter} seconds.`, {
      "Retry-After": String(retryAfter),
    }),
  overloaded: (retryAfter: number) =>
    new ApiError(503, "PGRST503", "Too many sign-in requests in progress", null, `Retry after ${retryAfter} second(s).`, {
      "Retry-After": String(retryAfter),
    }),
  upstreamUnavailable: (detail: string) =>
    new ApiError(503, "PGRST001", "Database client error. Retrying the connection.", detail, null, { "Retry-After": "1" }),
  upstreamTimeout: () => new ApiError(504, "PGRST003", "Timed out acquiring connection from connection pool.", null, null),
  sessionRevoked: () =>
    new ApiError(401, "PGRST303", "JWT session revoked", null, "Sign in again.", {
      "WWW-Authenticate": 'Bearer error="invalid_token", error_description="JWT session revoked"',
    }),
  internal: () => new ApiError(500, "PGRST000", "Internal gateway error", null, null),
};
