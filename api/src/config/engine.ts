/**
 * Engine configuration, read from PostgREST's own environment names (PGRST_*), so one `.env`
 * drives the real PostgREST and the embedded engine alike.
 */
import { Type } from "@sinclair/typebox";
import { parseJsPath, type JsPath } from "../engine/jspath";
import { ConfigError, POSTGRES_PROTOCOLS, Shared, Var, readEnv, throwIfProblems, weakSecret, type Env } from "./env";

export type TxEnd = "commit" | "commit-allow-override" | "rollback" | "rollback-allow-override";

export interface EngineConfig {
  dbUri?: string;
  /** Exposed schemas, in order; the first is the default profile. */
  dbSchemas: string[];
  dbAnonRole?: string;
  /** Qualified name of a function run after the role switch in every request's transaction. */
  dbPreRequest?: string;
  dbExtraSearchPath: string[];
  dbTxEnd: TxEnd;
  dbMaxRows?: number;
  dbPoolSize: number;
  dbPoolAcquisitionTimeoutSeconds: number;
  jwtSecret?: string;
  jwtSecretIsBase64: boolean;
  jwtAud?: string;
  /** JSONPath (RFC 9535) into the claims, e.g. `$.role` or `$.postgrest.roles[1]`; the older `.role` is still read (deprecated). */
  jwtRoleClaimKey: string;
  clientErrorVerbosity: "verbose" | "minimal";
  serverHost: string;
  serverPort: number;
  /** Request bodies larger than this are refused with 413 before they are read to the end. */
  maxBodyBytes: number;
  /**
   * Table and view reads run on generic plans (plan_cache_mode = force_generic_plan for their
   * transaction). Their statements are prepared per connection, but with `LIMIT $n` PostgreSQL's
   * default (auto) estimates a generic plan so dear that it plans every execution anew, which
   * costs more than running a short paginated read. Off: PostgreSQL chooses, as under PostgREST.
   */
  relationGenericPlans: boolean;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export function defaultEngineConfig(overrides: Partial<EngineConfig> = {}): EngineConfig {
  return {
    dbSchemas: ["public"],
    dbExtraSearchPath: ["public"],
    dbTxEnd: "commit",
    dbPoolSize: 10,
    dbPoolAcquisitionTimeoutSeconds: 10,
    jwtSecretIsBase64: false,
    jwtRoleClaimKey: "$.role",
    clientErrorVerbosity: "verbose",
    serverHost: "127.0.0.1",
    serverPort: 3000,
    maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
    relationGenericPlans: true,
    ...overrides,
  };
}

/** PostgreSQL's system schemas, which db-schemas may not name. */
const INTERNAL_SCHEMAS = ["pg_catalog", "information_schema"];

const TX_ENDS = ["commit", "commit-allow-override", "rollback", "rollback-allow-override"] as const satisfies readonly TxEnd[];
const VERBOSITIES = ["verbose", "minimal"] as const;
const MIN_SECRET_BYTES = 32;

/** The variables the engine reads (`bun run rpc-engine`, and the API's embedded engine). */
export const EngineEnv = Type.Object({
  PGRST_DB_URI: Var.url({ protocols: POSTGRES_PROTOCOLS, description: "PostgreSQL, as the authenticator. Default: DATABASE_URL." }),
  DATABASE_URL: Shared.DATABASE_URL,
  PGRST_DB_SCHEMAS: Var.list({ default: ["public"], minItems: 1, description: "Exposed schemas, comma-separated; the first is the default profile. pg_catalog and information_schema are refused, as PostgREST 16 does. The API passes its own (default api) to its embedded engine." }),
  PGRST_DB_ANON_ROLE: Var.optionalString({ description: "Role of requests without a token. Unset: such requests are refused. The API passes its own (default anon)." }),
  PGRST_DB_PRE_REQUEST: Var.optionalString({ description: "Qualified name of a function run after the role switch in every request's transaction." }),
  PGRST_DB_EXTRA_SEARCH_PATH: Var.list({ default: ["public"], description: "Schemas added to every request's search_path, comma-separated." }),
  PGRST_DB_TX_END: Var.enum(TX_ENDS, { default: "commit", description: "How a request's transaction ends; the -allow-override forms let `Prefer: tx=` choose." }),
  PGRST_DB_MAX_ROWS: Var.optionalInteger({ minimum: 0, description: "Most rows a table or view read returns. Unset: no limit." }),
  PGRST_DB_POOL: Var.integer({ default: 10, minimum: 1, maximum: 10_000, description: "Connections carrying request transactions (the engine keeps one more for the schema cache)." }),
  PGRST_DB_POOL_ACQUISITION_TIMEOUT: Var.integer({ default: 10, minimum: 1, maximum: 3600, unit: "seconds", description: "How long a request waits for a connection, and the connect timeout." }),
  PGRST_JWT_SECRET: Var.optionalString({ secret: true, description: "HS256 secret (at least 32 characters) or a JWK / JWK set, shared with the API and PostgREST. The API passes its own to its embedded engine." }),
  PGRST_JWT_SECRET_IS_BASE64: Var.boolean({ default: false, description: "PGRST_JWT_SECRET is base64 (its decoded bytes are the key)." }),
  PGRST_JWT_AUD: Var.optionalString({ description: "The `aud` claim tokens must carry. Unset: not checked." }),
  PGRST_JWT_ROLE_CLAIM_KEY: Var.string({ default: "$.role", description: "Where the role is in the claims: an RFC 9535 JSONPath (`$.role`, `$.realm_access.roles[0]`). The older `.role` syntax is read and warned about at start (deprecated since PostgREST 16.2)." }),
  PGRST_CLIENT_ERROR_VERBOSITY: Var.enum(VERBOSITIES, { default: "verbose", description: "minimal leaves details and hint out of error bodies." }),
  PGRST_SERVER_HOST: Var.string({ default: "127.0.0.1", description: "Interface `bun run rpc-engine` listens on." }),
  PGRST_SERVER_PORT: Var.integer({ default: 3000, minimum: 0, maximum: 65_535, description: "Port `bun run rpc-engine` listens on (0: any free port)." }),
  ENGINE_MAX_BODY_BYTES: Var.integer({ default: DEFAULT_MAX_BODY_BYTES, minimum: 1, maximum: 1_073_741_824, unit: "bytes", description: "Larger request bodies get 413 from the engine." }),
  ENGINE_RELATION_GENERIC_PLANS: Var.boolean({ default: true, description: "Table and view reads on generic plans (no re-planning of `LIMIT $n` per request); false leaves the choice to PostgreSQL, as PostgREST does." }),
});

/** Whether a configured secret is a JWK or JWK set rather than a shared HMAC secret. */
export function secretIsJwk(secret: string): boolean {
  const trimmed = secret.trim();
  if (!trimmed.startsWith("{")) return false;
  try {
    const parsed = JSON.parse(trimmed);
    return typeof parsed === "object" && parsed !== null && ("keys" in parsed || "kty" in parsed);
  } catch {
    return false;
  }
}

/** What PostgREST would refuse at startup, one problem each (the secret's value never shown). */
export function engineConfigProblems(config: EngineConfig): string[] {
  const problems: string[] = [];
  if (config.dbSchemas.length === 0) problems.push("PGRST_DB_SCHEMAS must name at least one schema");
  // PostgREST 16 refuses to start with a system schema exposed.
  const internal = config.dbSchemas.filter((s) => INTERNAL_SCHEMAS.includes(s));
  if (internal.length > 0) {
    problems.push(
      `PGRST_DB_SCHEMAS must not expose ${internal.join(" or ")}: ${INTERNAL_SCHEMAS.join(" and ")} are PostgreSQL's own schemas, ` +
        `which PostgREST refuses in db-schemas (got ${JSON.stringify(config.dbSchemas.join(","))})`,
    );
  }
  if (!(TX_ENDS as readonly string[]).includes(config.dbTxEnd)) {
    problems.push(`PGRST_DB_TX_END must be one of ${TX_ENDS.join(", ")} (got ${JSON.stringify(config.dbTxEnd)})`);
  }
  if (config.jwtSecret !== undefined && !secretIsJwk(config.jwtSecret)) {
    const bytes = config.jwtSecretIsBase64 ? Buffer.from(config.jwtSecret, "base64").length : config.jwtSecret.length;
    if (bytes < MIN_SECRET_BYTES) problems.push(weakSecret("PGRST_JWT_SECRET", bytes, MIN_SECRET_BYTES, config.jwtSecretIsBase64 ? "bytes" : "characters"));
  }
  try {
    parseJsPath(config.jwtRoleClaimKey);
  } catch (error) {
    problems.push(`PGRST_JWT_ROLE_CLAIM_KEY: ${(error as Error).message}; expected a JSONPath such as $.role`);
  }
  if (!(VERBOSITIES as readonly string[]).includes(config.clientErrorVerbosity)) {
    problems.push(`PGRST_CLIENT_ERROR_VERBOSITY must be verbose or minimal (got ${JSON.stringify(config.clientErrorVerbosity)})`);
  }
  return problems;
}

/** Throws a ConfigError naming every setting PostgREST would refuse at startup. */
export function validateEngineConfig(config: EngineConfig): EngineConfig {
  throwIfProblems(engineConfigProblems(config));
  return config;
}

/** Reads the engine's variables into `problems` (not thrown, so a caller can add its own). */
export function readEngineConfig(env: Env, problems: string[]): EngineConfig {
  const v = readEnv(EngineEnv, env, problems);
  const config = defaultEngineConfig({
    dbUri: v.PGRST_DB_URI ?? v.DATABASE_URL,
    dbSchemas: v.PGRST_DB_SCHEMAS,
    dbAnonRole: v.PGRST_DB_ANON_ROLE,
    dbPreRequest: v.PGRST_DB_PRE_REQUEST,
    dbExtraSearchPath: v.PGRST_DB_EXTRA_SEARCH_PATH,
    dbTxEnd: v.PGRST_DB_TX_END,
    dbMaxRows: v.PGRST_DB_MAX_ROWS,
    dbPoolSize: v.PGRST_DB_POOL,
    dbPoolAcquisitionTimeoutSeconds: v.PGRST_DB_POOL_ACQUISITION_TIMEOUT,
    jwtSecret: v.PGRST_JWT_SECRET,
    jwtSecretIsBase64: v.PGRST_JWT_SECRET_IS_BASE64,
    jwtAud: v.PGRST_JWT_AUD,
    jwtRoleClaimKey: v.PGRST_JWT_ROLE_CLAIM_KEY,
    clientErrorVerbosity: v.PGRST_CLIENT_ERROR_VERBOSITY,
    serverHost: v.PGRST_SERVER_HOST,
    serverPort: v.PGRST_SERVER_PORT,
    maxBodyBytes: v.ENGINE_MAX_BODY_BYTES,
    relationGenericPlans: v.ENGINE_RELATION_GENERIC_PLANS,
  });
  problems.push(...engineConfigProblems(config));
  return config;
}

/** The engine's configuration from `env`, or a ConfigError listing every problem at once. */
export function engineConfigFromEnv(env: Env = process.env): EngineConfig {
  const problems: string[] = [];
  const config = readEngineConfig(env, problems);
  throwIfProblems(problems);
  return config;
}

export { ConfigError };
export type { JsPath };
