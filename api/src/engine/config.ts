/**
 * Engine configuration, read from PostgREST's own environment names (PGRST_*), so one `.env`
 * drives the real PostgREST and the embedded engine alike.
 */
import { parseJsPath, type JsPath } from "./jspath";

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

const TX_ENDS: TxEnd[] = ["commit", "commit-allow-override", "rollback", "rollback-allow-override"];

function list(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function int(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value.trim())) throw new Error(`${name} must be a whole number, got ${JSON.stringify(value)}`);
  const n = Number(value.trim());
  if (n < min) throw new Error(`${name} must be at least ${min}, got ${n}`);
  return n;
}

/** A boolean setting (true/yes/on/1, false/no/off/0); undefined when unset; anything else throws. */
export function bool(name: string, value: string | undefined): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  const v = value.trim().toLowerCase();
  if (["true", "yes", "on", "1"].includes(v)) return true;
  if (["false", "no", "off", "0"].includes(v)) return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(value)}`);
}

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

/** Throws a clear Error for settings PostgREST would refuse at startup. */
export function validateEngineConfig(config: EngineConfig): EngineConfig {
  if (config.dbSchemas.length === 0) throw new Error("PGRST_DB_SCHEMAS must name at least one schema");
  // PostgREST 16 refuses to start with a system schema exposed.
  const internal = config.dbSchemas.filter((s) => INTERNAL_SCHEMAS.includes(s));
  if (internal.length > 0) {
    throw new Error(
      `PGRST_DB_SCHEMAS must not expose ${internal.join(" or ")}: ${INTERNAL_SCHEMAS.join(" and ")} are PostgreSQL's own schemas, ` +
        `which PostgREST refuses in db-schemas (got ${JSON.stringify(config.dbSchemas.join(","))})`,
    );
  }
  if (!TX_ENDS.includes(config.dbTxEnd)) {
    throw new Error(`PGRST_DB_TX_END must be one of ${TX_ENDS.join(", ")}, got ${JSON.stringify(config.dbTxEnd)}`);
  }
  if (config.jwtSecret !== undefined && !secretIsJwk(config.jwtSecret)) {
    const bytes = config.jwtSecretIsBase64 ? Buffer.from(config.jwtSecret, "base64").length : config.jwtSecret.length;
    if (bytes < 32) throw new Error("The JWT secret must be at least 32 characters long.");
  }
  parseJsPath(config.jwtRoleClaimKey); // throws on a malformed role claim key
  if (config.clientErrorVerbosity !== "verbose" && config.clientErrorVerbosity !== "minimal") {
    throw new Error(`PGRST_CLIENT_ERROR_VERBOSITY must be verbose or minimal, got ${JSON.stringify(config.clientErrorVerbosity)}`);
  }
  return config;
}

export function engineConfigFromEnv(env: Record<string, string | undefined>): EngineConfig {
  const txEnd = (nonEmpty(env.PGRST_DB_TX_END) ?? "commit") as TxEnd;
  const verbosity = (nonEmpty(env.PGRST_CLIENT_ERROR_VERBOSITY) ?? "verbose") as EngineConfig["clientErrorVerbosity"];
  const config = defaultEngineConfig({
    dbUri: nonEmpty(env.PGRST_DB_URI) ?? nonEmpty(env.DATABASE_URL),
    dbSchemas: list(env.PGRST_DB_SCHEMAS) ?? ["public"],
    dbAnonRole: nonEmpty(env.PGRST_DB_ANON_ROLE),
    dbPreRequest: nonEmpty(env.PGRST_DB_PRE_REQUEST),
    dbExtraSearchPath: list(env.PGRST_DB_EXTRA_SEARCH_PATH) ?? ["public"],
    dbTxEnd: txEnd,
    dbMaxRows: int("PGRST_DB_MAX_ROWS", env.PGRST_DB_MAX_ROWS, 0),
    dbPoolSize: int("PGRST_DB_POOL", env.PGRST_DB_POOL, 1) ?? 10,
    dbPoolAcquisitionTimeoutSeconds: int("PGRST_DB_POOL_ACQUISITION_TIMEOUT", env.PGRST_DB_POOL_ACQUISITION_TIMEOUT, 1) ?? 10,
    jwtSecret: nonEmpty(env.PGRST_JWT_SECRET),
    jwtSecretIsBase64: bool("PGRST_JWT_SECRET_IS_BASE64", env.PGRST_JWT_SECRET_IS_BASE64) ?? false,
    jwtAud: nonEmpty(env.PGRST_JWT_AUD),
    jwtRoleClaimKey: nonEmpty(env.PGRST_JWT_ROLE_CLAIM_KEY) ?? "$.role",
    clientErrorVerbosity: verbosity,
    serverHost: nonEmpty(env.PGRST_SERVER_HOST) ?? "127.0.0.1",
    serverPort: int("PGRST_SERVER_PORT", env.PGRST_SERVER_PORT, 0) ?? 3000,
    maxBodyBytes: int("ENGINE_MAX_BODY_BYTES", env.ENGINE_MAX_BODY_BYTES, 1) ?? DEFAULT_MAX_BODY_BYTES,
    relationGenericPlans: bool("ENGINE_RELATION_GENERIC_PLANS", env.ENGINE_RELATION_GENERIC_PLANS) ?? true,
  });
  return validateEngineConfig(config);
}

export type { JsPath };
