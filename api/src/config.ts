import { availableParallelism } from "node:os";
import { randomBytes } from "node:crypto";
import { loadOidcConfig, type OidcConfig } from "./gateway/oidc/config";

/**
 * The API's one configuration object. Parsed and validated once, at start, from the
 * environment; everything else receives it instead of reading `process.env`.
 * `.env.example` lists every variable read here.
 */
export interface ApiConfig {
  host: string;
  port: number;
  /** The real PostgREST (compose). Undefined: the embedded engine serves /rpc in-process. */
  postgrestUrl?: string;
  /** Used for /health, the function catalogue behind Swagger and caching, and by the embedded engine. */
  databaseUrl: string;
  /** Undefined: no Redis; cache, rate limits and session state live in this process only. */
  redisUrl?: string;
  /** Exposed schemas, PostgREST's PGRST_DB_SCHEMAS (the first is the default). */
  schemas: string[];
  jwt: {
    secret: string;
    /** True when no secret was configured and the embedded development default made one up. */
    generated: boolean;
    audience?: string;
    accessTokenTtlSeconds: number;
  };
  cache: {
    ttlSeconds: number;
  };
  sessions: {
    /** How long this process trusts its own answer about a session (revocation is seen within this). */
    localTtlMs: number;
    /** How long Redis keeps "active" for a session before the database is asked again. */
    redisActiveTtlSeconds: number;
  };
  rateLimit: {
    /** sign_in + sign_up attempts per client IP per window; 0 disables. */
    ipMax: number;
    ipWindowSeconds: number;
    /** Failed sign-ins per email per window (sliding); 0 disables. */
    emailMax: number;
    emailWindowSeconds: number;
  };
  admission: {
    /** Concurrent bcrypt requests (sign_in, sign_up) let through to the database. */
    signInConcurrency: number;
    /** How many more may wait for a slot, and for how long, before 503. */
    signInQueue: number;
    signInQueueTimeoutMs: number;
  };
  /** PostgREST's PGRST_DB_ANON_ROLE: functions it may execute are documented as public. */
  anonRole: string;
  corsOrigins: string[];
  /** Take the client IP from X-Forwarded-For (only behind a proxy you control). */
  trustProxy: boolean;
  logRequests: boolean;
  /** Upstream calls that take longer are answered with 504 instead of hanging. */
  upstreamTimeoutMs: number;
  /** Larger request bodies are refused with 413 before they are read into memory. */
  maxBodyBytes: number;
  /** OpenID Connect sign-in (/auth/authorize, /auth/callback): gateway/oidc/config.ts. */
  oidc: OidcConfig;
  /** Multi-factor authentication (the mfa_* functions): see loadMfaConfig. */
  mfa: MfaConfig;
}

export interface MfaConfig {
  enabled: boolean;
  /** MFA_ENCRYPTION_KEY: sent to the SQL functions that encrypt and decrypt TOTP secrets; never stored. */
  key: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
  }
}

export interface LoadConfigOptions {
  /**
   * The embedded development default (`bun run dev`): a missing JWT secret is generated
   * (tokens then last until the process stops) instead of stopping the start.
   */
  development?: boolean;
  /** Where the "generated a secret" notice goes. */
  log?: (line: string) => void;
}

const MIN_SECRET_LENGTH = 32;

/** Parses `env` into an ApiConfig, or throws ConfigError listing every problem at once. */
export function loadConfig(env: Record<string, string | undefined> = process.env, options: LoadConfigOptions = {}): ApiConfig {
  const problems: string[] = [];
  const read = (name: string) => {
    const value = env[name]?.trim();
    return value === "" ? undefined : value;
  };
  const int = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name} must be an integer between ${min} and ${max} (got "${raw}")`);
      return fallback;
    }
    return value;
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = read(name)?.toLowerCase();
    if (raw === undefined) return fallback;
    if (["1", "true", "yes", "on"].includes(raw)) return true;
    if (["0", "false", "no", "off"].includes(raw)) return false;
    problems.push(`${name} must be true or false (got "${raw}")`);
    return fallback;
  };
  const url = (name: string, protocols: string[]): string | undefined => {
    const raw = read(name);
    if (raw === undefined) return undefined;
    try {
      const parsed = new URL(raw);
      if (!protocols.includes(parsed.protocol)) problems.push(`${name} must be a ${protocols.join(" or ")} URL`);
    } catch {
      problems.push(`${name} is not a valid URL`);
    }
    return raw;
  };

  const databaseUrl = url("DATABASE_URL", ["postgres:", "postgresql:"]);
  if (!databaseUrl) problems.push("DATABASE_URL is required (the API checks Postgres health and reads the function catalogue)");

  let secret = read("PGRST_JWT_SECRET");
  let generated = false;
  if (!secret && options.development) {
    secret = randomBytes(32).toString("base64url");
    generated = true;
    (options.log ?? console.log)("PGRST_JWT_SECRET is not set: generated a random one for this run (tokens stop working on restart)");
  }
  if (!secret) {
    problems.push(`PGRST_JWT_SECRET is required: at least ${MIN_SECRET_LENGTH} characters, shared with PostgREST (e.g. \`openssl rand -base64 48\`)`);
  } else if (secret.length < MIN_SECRET_LENGTH) {
    problems.push(`PGRST_JWT_SECRET is too weak: ${secret.length} characters, at least ${MIN_SECRET_LENGTH} are required`);
  }

  const schemas = (read("PGRST_DB_SCHEMAS") ?? "api").split(",").map((s) => s.trim()).filter(Boolean);
  if (schemas.length === 0) problems.push("PGRST_DB_SCHEMAS must name at least one schema");

  const cores = Math.max(1, availableParallelism());
  const config: ApiConfig = {
    host: read("HOST") ?? "0.0.0.0",
    port: int("PORT", 8000, 0, 65535),
    postgrestUrl: url("POSTGREST_URL", ["http:", "https:"])?.replace(/\/+$/, ""),
    databaseUrl: databaseUrl ?? "",
    redisUrl: url("REDIS_URL", ["redis:", "rediss:"]),
    schemas,
    jwt: {
      secret: secret ?? "",
      generated,
      audience: read("PGRST_JWT_AUD"),
      accessTokenTtlSeconds: int("ACCESS_TOKEN_TTL", 900, 10, 86_400),
    },
    cache: { ttlSeconds: int("CACHE_TTL_SECONDS", 30, 0, 86_400) },
    sessions: {
      localTtlMs: int("SESSION_LOCAL_CACHE_MS", 500, 0, 1000),
      redisActiveTtlSeconds: int("SESSION_REDIS_TTL_SECONDS", 60, 1, 3600),
    },
    rateLimit: {
      ipMax: int("RATE_LIMIT_IP_MAX", 60, 0),
      ipWindowSeconds: int("RATE_LIMIT_IP_WINDOW_SECONDS", 60, 1, 86_400),
      emailMax: int("RATE_LIMIT_EMAIL_MAX", 10, 0),
      emailWindowSeconds: int("RATE_LIMIT_EMAIL_WINDOW_SECONDS", 300, 1, 86_400),
    },
    admission: {
      signInConcurrency: int("SIGN_IN_CONCURRENCY", cores, 1, 1024),
      signInQueue: int("SIGN_IN_QUEUE", cores, 0, 10_000),
      signInQueueTimeoutMs: int("SIGN_IN_QUEUE_TIMEOUT_MS", 1000, 0, 60_000),
    },
    anonRole: read("PGRST_DB_ANON_ROLE") ?? "anon",
    corsOrigins: (read("CORS_ORIGINS") ?? "*").split(",").map((s) => s.trim()).filter(Boolean),
    trustProxy: bool("TRUST_PROXY", false),
    logRequests: bool("LOG_REQUESTS", true),
    upstreamTimeoutMs: int("UPSTREAM_TIMEOUT_MS", 10_000, 100, 600_000),
    maxBodyBytes: int("MAX_BODY_BYTES", 1_048_576, 1024, 1_073_741_824),
    oidc: loadOidcConfig(read, bool, problems),
    mfa: loadMfaConfig(read, bool, problems, options),
  };
  if (problems.length) throw new ConfigError(problems);
  return config;
}

const MIN_MFA_KEY_LENGTH = 32;
const MIN_MFA_KEY_DISTINCT = 12;

/**
 * MFA is on when MFA_ENCRYPTION_KEY is set (or MFA_ENABLED=true); on, the key is required and
 * must not be weak (32+ characters, 12+ distinct ones). `MFA_ENABLED=true bun run dev` without a
 * key makes one up for the run (factors enrolled then stop working on restart) and says so.
 */
function loadMfaConfig(
  read: (name: string) => string | undefined,
  bool: (name: string, fallback: boolean) => boolean,
  problems: string[],
  options: LoadConfigOptions,
): MfaConfig {
  let key = read("MFA_ENCRYPTION_KEY");
  const enabled = bool("MFA_ENABLED", key !== undefined);
  if (!enabled) return { enabled, key: "" };
  if (!key && options.development) {
    key = randomBytes(32).toString("base64url");
    (options.log ?? console.log)("MFA_ENCRYPTION_KEY is not set: generated a random one for this run (factors enrolled now stop working on restart)");
  }
  if (!key) {
    problems.push(`MFA_ENCRYPTION_KEY is required when MFA_ENABLED is on: at least ${MIN_MFA_KEY_LENGTH} random characters (e.g. \`openssl rand -base64 48\`); or set MFA_ENABLED=false`);
  } else if (key.length < MIN_MFA_KEY_LENGTH || new Set(key).size < MIN_MFA_KEY_DISTINCT) {
    problems.push(`MFA_ENCRYPTION_KEY is too weak: at least ${MIN_MFA_KEY_LENGTH} characters with ${MIN_MFA_KEY_DISTINCT} or more distinct ones are required (e.g. \`openssl rand -base64 48\`)`);
  }
  return { enabled, key: key ?? "" };
}
