import { NEVER_CACHED } from "./cache-rules";
import type { CatalogArgument, CatalogFunction } from "./catalog";

type Schema = Record<string, unknown>;

/** JSON Schema of a PostgreSQL type as PostgREST renders it in JSON. */
export function jsonSchemaOf(pgType: string): Schema {
  if (pgType.endsWith("[]")) return { type: "array", items: jsonSchemaOf(pgType.slice(0, -2)) };
  const base = pgType.replace(/\(.*\)$/, "");
  switch (base) {
    case "smallint":
    case "integer":
      return { type: "integer", format: "int32" };
    case "bigint":
      return { type: "integer", format: "int64" };
    case "numeric":
    case "real":
    case "double precision":
      return { type: "number" };
    case "boolean":
      return { type: "boolean" };
    case "json":
    case "jsonb":
      return { description: `${base} value` };
    case "uuid":
      return { type: "string", format: "uuid" };
    case "date":
      return { type: "string", format: "date" };
    case "timestamp with time zone":
    case "timestamp without time zone":
      return { type: "string", format: "date-time" };
    default:
      return { type: "string", description: pgType };
  }
}

const ERROR_SCHEMA = {
  type: "object",
  description: "PostgREST's error shape, also used for the gateway's own errors.",
  required: ["code", "details", "hint", "message"],
  properties: {
    code: { type: "string", example: "PGRST301" },
    details: { type: "string", nullable: true },
    hint: { type: "string", nullable: true },
    message: { type: "string" },
  },
};

const TOKEN_SCHEMA = {
  type: "object",
  description: "A session: a short-lived access token (JWT) and a refresh token for issue_token.",
  required: ["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_at", "user"],
  properties: {
    access_token: { type: "string", description: "HS256 JWT: sub, role, sid, email, iat, exp, aud; aal (aal1 or aal2) and amr (the session's methods with their times), kept by issue_token" },
    token_type: { type: "string", enum: ["bearer"] },
    expires_in: { type: "integer", description: "seconds" },
    refresh_token: { type: "string" },
    refresh_expires_at: { type: "string", format: "date-time" },
    user: { $ref: "#/components/schemas/User" },
    aal: { type: "string", enum: ["aal1", "aal2"], description: "The session's assurance level" },
    mfa_required: { type: "boolean", description: "True: a second step is needed (mfa_challenge + mfa_verify, or mfa_use_recovery_code)" },
    factors: { type: "array", description: "The account's verified factors (id, factor_type, friendly_name)", items: { type: "object" } },
    recovery_codes: { type: "array", items: { type: "string" }, nullable: true, description: "mfa_verify_enrollment of the first factor: ten recovery codes, shown this once" },
  },
};

const USER_SCHEMA = {
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    email: { type: "string" },
    first_name: { type: "string" },
    last_name: { type: "string" },
    last_login_at: { type: "string", format: "date-time", nullable: true },
    created_at: { type: "string", format: "date-time" },
  },
};

/** Functions whose answer the gateway rewrites into the token shape. */
const TOKEN_FUNCTIONS = new Set(["sign_in", "issue_token", "exchange_auth_code", "mfa_verify", "mfa_verify_enrollment", "mfa_use_recovery_code"]);
/** Arguments the gateway fills in itself (MFA_ENCRYPTION_KEY): not the caller's to send. */
const GATEWAY_ARGUMENTS = new Set(["mfa_key"]);
const callerArgs = (args: CatalogArgument[]) => args.filter((a) => a.name !== "" && !GATEWAY_ARGUMENTS.has(a.name));
const MFA_STEP = new Set(["mfa_verify", "mfa_verify_enrollment", "mfa_use_recovery_code"]);
const RATE_LIMITED = new Set(["sign_in", "sign_up", "add_member"]);

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
});

function resultSchema(fn: CatalogFunction): Schema {
  if (fn.schema === "api" && TOKEN_FUNCTIONS.has(fn.name)) return { $ref: "#/components/schemas/Token" };
  const single = fn.returnType === "record" ? { type: "object" } : jsonSchemaOf(fn.returnType);
  return fn.returnsSet ? { type: "array", items: single } : single;
}

function argsSchema(args: CatalogArgument[]): Schema {
  const named = callerArgs(args);
  const required = named.filter((a) => !a.hasDefault).map((a) => a.name);
  return {
    type: "object",
    properties: Object.fromEntries(named.map((a) => [a.name, jsonSchemaOf(a.type)])),
    ...(required.length ? { required } : {}),
  };
}

function operation(fn: CatalogFunction, method: "get" | "post", defaultSchema: string): Schema {
  const responses: Record<string, unknown> = {};
  if (fn.returnType === "void") responses["204"] = { description: "Done (the function returns void)." };
  else responses["200"] = { description: "The function's result.", content: { "application/json": { schema: resultSchema(fn) } } };
  responses["400"] = errorResponse("Bad arguments or a client error raised by the function.");
  responses["401"] = errorResponse("Missing, invalid, expired or revoked token, or the function requires sign-in.");
  if (RATE_LIMITED.has(fn.name)) responses["429"] = errorResponse("Rate limit reached; see Retry-After.");
  if (fn.name.startsWith("mfa_") || fn.name === "set_tenant_require_mfa") {
    responses["403"] = errorResponse("The session is at aal1 where aal2 is needed: the message names the missing step.");
  }
  if (MFA_STEP.has(fn.name)) {
    responses["422"] = errorResponse("Wrong or already used code (counted against the factor and the account).");
    responses["429"] = errorResponse("Too many failed codes; see Retry-After.");
  }
  responses["404"] = errorResponse("Unknown function or argument names.");
  responses["503"] = errorResponse("Database unavailable or sign-in capacity exhausted; see Retry-After.");

  const parameters: Schema[] = [];
  if (method === "get") {
    for (const arg of callerArgs(fn.params)) {
      parameters.push({ name: arg.name, in: "query", required: !arg.hasDefault, schema: jsonSchemaOf(arg.type) });
    }
  }
  if (fn.schema !== defaultSchema) {
    parameters.push({
      name: method === "get" ? "Accept-Profile" : "Content-Profile",
      in: "header",
      required: true,
      schema: { type: "string", enum: [fn.schema] },
    });
  }
  return {
    operationId: `${method}_${fn.schema}_${fn.name}`,
    tags: [fn.schema],
    summary: fn.description ?? `${fn.schema}.${fn.name}`,
    description: `${fn.volatility.toUpperCase()} function ${fn.schema}.${fn.name}(${callerArgs(fn.params).map((a) => `${a.name} ${a.type}`).join(", ")}) returns ${fn.returnsSet ? "setof " : ""}${fn.returnType}.` +
      (method === "get" && !NEVER_CACHED.has(fn.name) ? " GET answers are cached per caller (X-Cache: HIT|MISS)." : ""),
    security: fn.anonymousExecute ? [{}, { bearerAuth: [] }] : [{ bearerAuth: [] }],
    ...(parameters.length ? { parameters } : {}),
    ...(method === "post"
      ? { requestBody: { required: callerArgs(fn.params).some((a) => !a.hasDefault), content: { "application/json": { schema: argsSchema(fn.params) } } } }
      : {}),
    responses,
  };
}

const query = (name: string, description: string, required = true, schema: Schema = { type: "string" }) => ({ name, in: "query", required, description, schema });

/** OpenID Connect sign-in (gateway/oidc/routes.ts): browser redirects, not JSON calls. */
const OIDC_PATHS: Record<string, Record<string, unknown>> = {
  "/auth/authorize": {
    get: {
      operationId: "auth_authorize",
      tags: ["auth"],
      summary: "Start an OpenID Connect sign-in (authorization code flow with PKCE): 302 to the provider.",
      description:
        "Open in the browser. The app keeps a PKCE verifier and sends its S256 challenge; after the provider's sign-in, /auth/callback " +
        "redirects to redirect_to with `code`, which the app exchanges once, within 60 seconds, with POST /rpc/exchange_auth_code and the verifier.",
      security: [{}],
      parameters: [
        query("provider", "A provider name of AUTH_OIDC_PROVIDERS."),
        query("redirect_to", "Where the browser is sent with the one-time code; must match AUTH_REDIRECT_ALLOWLIST."),
        query("code_challenge", "base64url(sha256(code_verifier)), 43 characters."),
        query("code_challenge_method", "Only S256.", true, { type: "string", enum: ["S256"] }),
      ],
      responses: {
        "302": { description: "To the provider's authorization endpoint (Location)." },
        "400": errorResponse("Unknown provider (AA310), redirect_to off the allowlist (AA311) or no S256 challenge (AA312)."),
        "503": errorResponse("The provider's discovery document could not be read."),
      },
    },
  },
  "/auth/callback": {
    get: {
      operationId: "auth_callback",
      tags: ["auth"],
      summary: "The redirect_uri registered with the providers: verifies the answer, then 302 to redirect_to?code=<one-time code>.",
      description:
        "openid-client verifies state, the code exchange (with PKCE), and the ID token: issuer, audience, signature against the provider's JWKS, nonce and expiry. " +
        "The identity then signs in, links to the account with the same verified email, or creates one.",
      security: [{}],
      parameters: [query("code", "From the provider."), query("state", "From the provider."), query("iss", "From the provider.", false)],
      responses: {
        "302": { description: "To redirect_to with `code` (single use, 60 seconds) for /rpc/exchange_auth_code." },
        "400": errorResponse("Missing, unknown or spent state (AA313), or the provider reported an error (AA314)."),
        "401": errorResponse("The provider's answer or ID token could not be verified (AA315), or names no identity that can sign in (AA316)."),
        "403": errorResponse("Tenant not allowed (AA317) or no verified email for a new identity (PT403)."),
        "409": errorResponse("An account with this email exists but cannot be linked (PT409)."),
      },
    },
  },
};

/** The OpenAPI 3 document for every exposed function, from the live catalogue. */
export function buildOpenApi(functions: CatalogFunction[], options: { defaultSchema: string; version: string }): Schema {
  const paths: Record<string, Record<string, unknown>> = {
    "/health": {
      get: {
        operationId: "health",
        summary: "Status of Postgres, Redis and the RPC upstream, with latencies.",
        security: [{}],
        responses: {
          "200": { description: "Every required part answers." },
          "503": { description: "A required part is down (named in the body)." },
        },
      },
    },
  };
  Object.assign(paths, OIDC_PATHS);
  for (const fn of functions) {
    const path = `/rpc/${fn.name}`;
    // One path per name: overloads and same-named functions of other schemas share it.
    if (paths[path]) continue;
    paths[path] = { post: operation(fn, "post", options.defaultSchema) };
    if (fn.volatility !== "volatile") paths[path].get = operation(fn, "get", options.defaultSchema);
  }
  return {
    openapi: "3.0.3",
    info: {
      title: "AutoAudit API",
      version: options.version,
      description:
        "Every exposed PostgreSQL function is callable at /rpc/<name> (POST with a JSON object; GET with query arguments for STABLE/IMMUTABLE ones). " +
        "sign_in and issue_token return an access token; send it as `Authorization: Bearer <token>`. Errors use PostgREST's shape.",
    },
    servers: [{ url: "/" }],
    paths,
    components: {
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
      schemas: { Error: ERROR_SCHEMA, Token: TOKEN_SCHEMA, User: USER_SCHEMA },
    },
  };
}
