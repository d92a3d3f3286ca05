import { ApiError } from "../engine/errors";

export { ApiError };

/**
 * Where a code's meaning is defined. "gateway": the gateway's own (prefix AA). "postgrest": the
 * gateway answers in PostgREST's place for the very reason PostgREST would, so the code is
 * PostgREST's. "sql": the gateway answers in place of one of our SQL functions, with the code
 * that function raises for the same reason.
 */
export type ErrorSource = "gateway" | "postgrest" | "sql";

interface ErrorSpec {
  readonly status: number;
  /** `{name}` marks a value given at the call site; the type below makes it required there. */
  readonly message: string;
  readonly hint: string | null;
  readonly source: ErrorSource;
  /** For docs/reference/errors.md: what the code means, and when the gateway answers it. */
  readonly meaning: string;
  readonly when: string;
}

/**
 * The closed list of errors the gateway itself answers. AA0xx: an upstream (the engine or
 * PostgREST, the database, Redis, a sign-in provider) is unavailable; AA1xx: the request is not
 * one the gateway serves; AA3xx: authentication, sessions, sign-in flows; AA4xx: limits and
 * admission; AA5xx: internal. Errors relayed from the engine, PostgREST or SQL are not here:
 * they pass through with their own codes (see `relayedError`).
 */
export const GATEWAY_ERRORS = {
  AA001: {
    status: 503, message: "The database is unreachable", hint: null, source: "gateway",
    meaning: "The database does not answer, so no request is sent upstream.",
    when: "The breaker is open (a ping failed), or an upstream call timed out and the ping then failed. Retry-After: 1.",
  },
  AA002: {
    status: 503, message: "The upstream did not answer", hint: null, source: "gateway",
    meaning: "The engine or PostgREST gave no answer at all.",
    when: "The upstream request failed before any response (connection refused, reset, engine fault). Retry-After: 1.",
  },
  AA003: {
    status: 504, message: "The upstream did not answer in time", hint: null, source: "gateway",
    meaning: "The upstream did not answer within UPSTREAM_TIMEOUT_MS while the database still answers.",
    when: "The gateway's own deadline on an upstream call passed (headers or body).",
  },
  AA004: {
    status: 503, message: "The function catalogue could not be read", hint: null, source: "gateway",
    meaning: "The OpenAPI document needs the catalogue of exposed functions, which is not loaded.",
    when: "GET /docs/json while the database cannot be introspected. Retry-After: 1.",
  },
  AA005: {
    status: 503, message: "The session check failed", hint: null, source: "gateway",
    meaning: "api.session_active answered neither a result nor an error body.",
    when: "Checking a token's session, the upstream answered an unexpected status without a PostgREST error body (with one, that error is relayed).",
  },
  AA010: {
    status: 503, message: "the sign-in provider could not be reached", hint: null, source: "gateway",
    meaning: "An OpenID provider's discovery or token endpoint is unreachable.",
    when: "/auth/authorize or /auth/callback.",
  },
  AA011: {
    status: 503, message: "sign-in state cannot be kept right now", hint: "Retry in a moment.", source: "gateway",
    meaning: "The state of a started sign-in cannot be stored or read (Redis is unreachable).",
    when: "/auth/authorize or /auth/callback.",
  },
  AA101: {
    status: 405, message: "Cannot use the {method} method on a volatile function", hint: "Call it with POST.", source: "gateway",
    meaning: "A function that can change state is called with GET or HEAD; nothing runs. (PostgREST would run it read-only and fail only if it writes.)",
    when: "GET/HEAD of a volatile function or of an auth function that is POST only. Allow: POST.",
  },
  AA102: {
    status: 405, message: "Unsupported HTTP method: {method}",
    hint: "Tables and views are read-only through the API; write through a function (POST /rpc/...).", source: "gateway",
    meaning: "The API serves tables and views read-only, whatever the upstream supports.",
    when: "POST, PUT, PATCH or DELETE on /<relation>.",
  },
  AA103: {
    status: 400, message: "password is too weak", hint: "{feedback}", source: "gateway",
    meaning: "A new password is too easy to guess (zxcvbn score below 3 of 4); checked before any hash.",
    when: "sign_up, reset_password and change_password; details give the score, the hint zxcvbn's advice.",
  },
  AA301: {
    status: 401, message: "JWT session revoked", hint: "Sign in again.", source: "gateway",
    meaning: "The token is valid but its session (sid) was revoked, expired or belongs to someone else.",
    when: "Any call with a bearer token whose session is not active. WWW-Authenticate: Bearer error=\"invalid_token\".",
  },
  AA310: {
    status: 400, message: "unknown sign-in provider", hint: "Use one of the names in AUTH_OIDC_PROVIDERS.", source: "gateway",
    meaning: "The provider parameter names no configured OpenID provider.",
    when: "/auth/authorize.",
  },
  AA311: {
    status: 400, message: "redirect_to is not an allowed redirect target", hint: "Use a URL listed in AUTH_REDIRECT_ALLOWLIST.", source: "gateway",
    meaning: "redirect_to is missing or not allowed by AUTH_REDIRECT_ALLOWLIST.",
    when: "/auth/authorize.",
  },
  AA312: {
    status: 400, message: "code_challenge must be an S256 PKCE challenge",
    hint: "Send code_challenge=<base64url(sha256(verifier))> and code_challenge_method=S256.", source: "gateway",
    meaning: "The application's PKCE challenge is missing or not S256.",
    when: "/auth/authorize.",
  },
  AA313: {
    status: 400, message: "unknown or expired sign-in state", hint: "Start again at /auth/authorize.", source: "gateway",
    meaning: "The callback's state is unknown, already used or older than 10 minutes.",
    when: "/auth/callback.",
  },
  AA314: {
    status: 400, message: "the provider did not complete the sign-in", hint: "Start again at /auth/authorize.", source: "gateway",
    meaning: "The provider redirected back with an error; details carry its error and description.",
    when: "/auth/callback.",
  },
  AA315: {
    status: 401, message: "the provider's answer could not be verified", hint: "Start again at /auth/authorize.", source: "gateway",
    meaning: "The code exchange or the ID token failed verification (signature, nonce, issuer, audience, expiry).",
    when: "/auth/callback.",
  },
  AA316: {
    status: 401, message: "{reason}", hint: null, source: "gateway",
    meaning: "The verified ID token does not name an identity that can sign in (e.g. no tid/oid, issuer not its tenant's).",
    when: "/auth/callback.",
  },
  AA317: {
    status: 403, message: "{reason}", hint: null, source: "gateway",
    meaning: "The identity is verified but its organization may not sign in (AUTH_ENTRA_ALLOWED_TENANTS).",
    when: "/auth/callback.",
  },
  AA401: {
    status: 429, message: "Too many requests", hint: "Retry after {seconds} seconds.", source: "gateway",
    meaning: "A rate limit (RATE_LIMIT_*) is reached; details name the scope.",
    when: "Sign-in functions per client address and per account and address; /auth/authorize per address. Retry-After.",
  },
  AA402: {
    status: 503, message: "Too many sign-in requests in progress", hint: "Retry after {seconds} second(s).", source: "gateway",
    meaning: "Admission control: as many password hashes as allowed are already running, so this one is refused before its body is read.",
    when: "Functions that hash a password (sign_in, sign_up, ...). Retry-After.",
  },
  AA500: {
    status: 500, message: "Internal gateway error", hint: null, source: "gateway",
    meaning: "A fault in the gateway; the cause is logged, never sent.",
    when: "Anything unexpected.",
  },
  PGRST101: {
    status: 405, message: "Cannot use the {method} method on RPC", hint: null, source: "postgrest",
    meaning: "Functions are called with GET, HEAD or POST only.",
    when: "PUT, PATCH, DELETE (or another method) on /rpc/<fn>: PostgREST's own answer, given before anything is sent upstream.",
  },
  PGRST106: {
    status: 406, message: "Invalid schema: {schema}", hint: "Only the following schemas are exposed: {schemas}", source: "postgrest",
    meaning: "Accept-Profile / Content-Profile names a schema that is not exposed (PGRST_DB_SCHEMAS).",
    when: "Any /rpc or relation request; the gateway resolves the schema once to decide its policies.",
  },
  PGRST117: {
    status: 405, message: "Unsupported HTTP method: {method}", hint: null, source: "postgrest",
    meaning: "A method PostgREST supports on no resource.",
    when: "A method other than GET, HEAD, POST, PUT, PATCH, DELETE on /<relation>.",
  },
  PGRST125: {
    status: 404, message: "Invalid path specified in request URL", hint: null, source: "postgrest",
    meaning: "The path names neither /<relation> nor /rpc/<fn> (nor a route of the gateway's).",
    when: "Unknown routes, paths with more segments, undecodable or empty names.",
  },
  PGRST301: {
    status: 401, message: "{reason}", hint: null, source: "postgrest",
    meaning: "The bearer token cannot be decoded or its signature verified; the message is PostgREST's text (e.g. \"Expected 3 parts in JWT; got 2\").",
    when: "The gateway verifies tokens the way PostgREST does. WWW-Authenticate: Bearer error=\"invalid_token\".",
  },
  PGRST303: {
    status: 401, message: "{reason}", hint: null, source: "postgrest",
    meaning: "A token claim is invalid; the message is PostgREST's text (e.g. \"JWT expired\", \"JWT not in audience\").",
    when: "As PGRST301. WWW-Authenticate: Bearer error=\"invalid_token\".",
  },
  PT503: {
    status: 503, message: "multi-factor authentication is not configured",
    hint: "The operator enables it with MFA_ENCRYPTION_KEY (and MFA_ENABLED).", source: "sql",
    meaning: "MFA functions need MFA_ENCRYPTION_KEY; auth.mfa_require_key raises the same code and message.",
    when: "An MFA function is called while MFA is not enabled.",
  },
} as const satisfies Record<string, ErrorSpec>;

export type GatewayCode = keyof typeof GATEWAY_ERRORS;

type Placeholders<T> = T extends `${string}{${infer Name}}${infer Rest}` ? Name | Placeholders<Rest> : never;
type ParamsOf<C extends GatewayCode> =
  | Placeholders<(typeof GATEWAY_ERRORS)[C]["message"]>
  | Placeholders<(typeof GATEWAY_ERRORS)[C]["hint"]>;

interface Extras {
  details?: string | null;
  headers?: Record<string, string>;
}
/** The values a code's message and hint name, required exactly when it names some. */
export type GatewayErrorOptions<C extends GatewayCode> = [ParamsOf<C>] extends [never]
  ? Extras & { params?: undefined }
  : Extras & { params: Record<ParamsOf<C>, string> };

const fill = (template: string, params: Record<string, string> | undefined) =>
  template.replace(/\{(\w+)\}/g, (_, name: string) => params?.[name] ?? "");

/** The one constructor of the gateway's own errors: status, message and hint come from the list. */
export function gatewayError<C extends GatewayCode>(
  code: C,
  ...[options]: [ParamsOf<C>] extends [never] ? [GatewayErrorOptions<C>?] : [GatewayErrorOptions<C>]
): ApiError {
  const spec: ErrorSpec = GATEWAY_ERRORS[code];
  const params = options?.params as Record<string, string> | undefined;
  const hint = spec.hint === null ? null : fill(spec.hint, params);
  return new ApiError(spec.status, code, fill(spec.message, params), options?.details ?? null, hint, options?.headers ?? {});
}

/** An error the engine, PostgREST or SQL gave, passed on as it was (never one of the gateway's own). */
export function relayedError(
  status: number,
  error: { code: string; message: string; details?: string | null; hint?: string | null },
  headers: Record<string, string> = {},
): ApiError {
  return new ApiError(status, error.code, error.message, error.details ?? null, error.hint ?? null, headers);
}

const retryAfter = (seconds: number) => ({ "Retry-After": String(seconds) });

/** The gateway's answers with their headers, by what happened. */
export const gatewayErrors = {
  notFound: (path: string) => gatewayError("PGRST125", { details: `No route for ${path.slice(0, 200)}` }),
  rpcMethodNotAllowed: (method: string) => gatewayError("PGRST101", { params: { method } }),
  relationMethodNotAllowed: (method: string) =>
    gatewayError(["POST", "PUT", "PATCH", "DELETE"].includes(method) ? "AA102" : "PGRST117", { params: { method } }),
  // PostgREST answers 405 once such a call fails in its read-only transaction; here nothing runs.
  readOfVolatile: (method: string) => gatewayError("AA101", { params: { method }, headers: { Allow: "POST" } }),
  rateLimited: (seconds: number, scope: string) =>
    gatewayError("AA401", { params: { seconds: String(seconds) }, details: `Limit per ${scope} reached`, headers: retryAfter(seconds) }),
  overloaded: (seconds: number) => gatewayError("AA402", { params: { seconds: String(seconds) }, headers: retryAfter(seconds) }),
  databaseUnreachable: () => gatewayError("AA001", { headers: retryAfter(1) }),
  upstreamSilent: () => gatewayError("AA002", { headers: retryAfter(1) }),
  upstreamTimeout: () => gatewayError("AA003"),
  catalogueUnavailable: () => gatewayError("AA004", { headers: retryAfter(1) }),
  sessionCheckFailed: (status: number) => gatewayError("AA005", { details: `session_active answered ${status}` }),
  sessionRevoked: () =>
    gatewayError("AA301", {
      headers: { "WWW-Authenticate": 'Bearer error="invalid_token", error_description="JWT session revoked"' },
    }),
  mfaDisabled: () => gatewayError("PT503"),
  internal: () => gatewayError("AA500"),
};
