import { availableParallelism } from "node:os";
import { randomBytes } from "node:crypto";
import { Type } from "@sinclair/typebox";
import { engineConfigProblems, readEngineConfig, type EngineConfig } from "./engine";
import { ConfigError, Shared, Var, read, readEnv, throwIfProblems, weakSecret, type Env } from "./env";
import { loadOidcConfig, type OidcConfig } from "./oidc";

/**
 * The API's one configuration object. Parsed and validated once, at start, from the
 * environment; everything else receives it instead of reading `process.env`.
 * `.env.example` lists every variable read here; docs/reference/configuration.md describes them
 * (generated from ApiEnv by `bun run docs:config`).
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
    /** Failed sign-ins per email and client address per window (opened by the first attempt); 0 disables. */
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
  /** OpenID Connect sign-in (/auth/authorize, /auth/callback): config/oidc.ts. */
  oidc: OidcConfig;
  /** Multi-factor authentication (the mfa_* functions): see loadMfaConfig. */
  mfa: MfaConfig;
  /** How often this process links committed audit events into their chains (audit.seal); 0: never. */
  auditSealIntervalMs: number;
  /**
   * The embedded engine's configuration (PGRST_*, with the API's secret, schemas, anonymous role
   * and audience), parsed with the rest; undefined when POSTGREST_URL names a real PostgREST.
   */
  engine?: EngineConfig;
}

export interface MfaConfig {
  enabled: boolean;
  /** MFA_ENCRYPTION_KEY: sent to the SQL functions that encrypt and decrypt TOTP secrets; never stored. */
  key: string;
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
const MIN_MFA_KEY_LENGTH = 32;
const MIN_MFA_KEY_DISTINCT = 12;
const cores = () => Math.max(1, availableParallelism());

/** The variables the API reads (`bun run start`, `bun run dev`, compose's api). */
export const ApiEnv = Type.Object({
  HOST: Var.string({ default: "0.0.0.0", description: "Interface the API listens on (`bun run dev`: 127.0.0.1)." }),
  PORT: Var.integer({ default: 8000, minimum: 0, maximum: 65_535, description: "Port the API listens on (0: any free port)." }),
  POSTGREST_URL: Var.url({ protocols: ["http:", "https:"], description: "The real PostgREST (e.g. http://postgrest:3000). Unset: the embedded engine serves /rpc in the API's process." }),
  DATABASE_URL: { ...Shared.DATABASE_URL, description: "PostgreSQL as the authenticator: /health, the function catalogue, the embedded engine (required)." },
  REDIS_URL: Shared.REDIS_URL,
  PGRST_DB_SCHEMAS: Var.list({ default: ["api"], minItems: 1, description: "Exposed schemas, comma-separated (the first is the default), shared with PostgREST and the embedded engine." }),
  PGRST_DB_ANON_ROLE: Var.string({ default: "anon", description: "Role of requests without a token, shared with PostgREST: the functions it may execute are documented as public." }),
  PGRST_JWT_SECRET: Var.optionalString({ secret: true, description: `HS256 secret the API signs access tokens with and PostgREST verifies them with; at least ${MIN_SECRET_LENGTH} characters (\`openssl rand -base64 48\`). Required, except that \`bun run dev\` generates one for the run.` }),
  PGRST_JWT_AUD: Var.optionalString({ description: "The `aud` claim the API puts in access tokens and PostgREST requires." }),
  ACCESS_TOKEN_TTL: Var.integer({ default: 900, minimum: 10, maximum: 86_400, unit: "seconds", description: "How long an access token lives." }),
  CACHE_TTL_SECONDS: Var.integer({ default: 30, minimum: 0, maximum: 86_400, unit: "seconds", description: "GET /rpc answers of STABLE/IMMUTABLE functions are cached this long; 0 disables the cache." }),
  SESSION_LOCAL_CACHE_MS: Var.integer({ default: 500, minimum: 0, maximum: 1000, unit: "milliseconds", description: "How long one API process trusts its own answer about a session (revocation is seen within this)." }),
  SESSION_REDIS_TTL_SECONDS: Var.integer({ default: 60, minimum: 1, maximum: 3600, unit: "seconds", description: "How long Redis keeps \"session active\" before the database is asked again." }),
  RATE_LIMIT_IP_MAX: Var.integer({ default: 60, minimum: 0, maximum: 1_000_000_000, description: "sign_in + sign_up attempts per client address per window; 0 disables." }),
  RATE_LIMIT_IP_WINDOW_SECONDS: Var.integer({ default: 60, minimum: 1, maximum: 86_400, unit: "seconds", description: "The window of RATE_LIMIT_IP_MAX." }),
  RATE_LIMIT_EMAIL_MAX: Var.integer({ default: 10, minimum: 0, maximum: 1_000_000_000, description: "Failed sign-ins (and sign-up attempts) per email and client address per window (opened by the first attempt); 0 disables." }),
  RATE_LIMIT_EMAIL_WINDOW_SECONDS: Var.integer({ default: 300, minimum: 1, maximum: 86_400, unit: "seconds", description: "The window of RATE_LIMIT_EMAIL_MAX." }),
  SIGN_IN_CONCURRENCY: Var.optionalInteger({ minimum: 1, maximum: 1024, defaultText: "CPU cores (`bun run dev`: cores − 1)", description: "Concurrent bcrypt requests (sign_in, sign_up) let through to the database." }),
  SIGN_IN_QUEUE: Var.optionalInteger({ minimum: 0, maximum: 10_000, defaultText: "CPU cores", description: "How many more may wait for a slot; beyond that, 503." }),
  SIGN_IN_QUEUE_TIMEOUT_MS: Var.integer({ default: 1000, minimum: 0, maximum: 60_000, unit: "milliseconds", description: "A waiter not started by then gets 503 with Retry-After." }),
  CORS_ORIGINS: Var.list({ default: ["*"], description: "Allowed browser origins, comma-separated; * for any." }),
  TRUST_PROXY: Var.boolean({ default: false, description: "Take the client address from the last X-Forwarded-For entry (only behind a proxy you control)." }),
  LOG_REQUESTS: Var.boolean({ default: true, description: "One JSON line per request on stdout." }),
  UPSTREAM_TIMEOUT_MS: Var.integer({ default: 10_000, minimum: 100, maximum: 600_000, unit: "milliseconds", description: "PostgREST/engine calls slower than this are answered with 504." }),
  MAX_BODY_BYTES: Var.integer({ default: 1_048_576, minimum: 1024, maximum: 1_073_741_824, unit: "bytes", description: "Larger request bodies are refused with 413 before they are read into memory." }),
  AUTH_OIDC_PROVIDERS: Var.optionalString({ description: "OpenID Connect providers, a JSON array (see api/src/config/oidc.ts). Each provider's client secret comes from the variable its `client_secret_env` names, default AUTH_OIDC_<NAME>_CLIENT_SECRET." }),
  AUTH_REDIRECT_ALLOWLIST: Var.list({ default: [], description: "Allowed redirect_to targets after an OpenID sign-in, comma-separated: exact http(s) URLs, or prefixes ending with *." }),
  AUTH_OIDC_CALLBACK_URL: Var.optionalString({ pattern: "^https?://[^/]+/auth/callback$", description: "The redirect_uri registered with the providers: this API's public origin followed by /auth/callback. Default: the request's origin + /auth/callback." }),
  AUTH_OIDC_LINK_BY_EMAIL: Var.boolean({ default: true, description: "Link a new identity to the account with the same verified email." }),
  AUTH_OIDC_DEV_PROVIDER: Var.boolean({ default: false, description: "`bun run dev` starts a local OpenID provider named \"dev\" (any login name, no password)." }),
  MFA_ENCRYPTION_KEY: Var.optionalString({ secret: true, description: `The key TOTP secrets and recovery-code digests are encrypted with, in SQL; never stored. At least ${MIN_MFA_KEY_LENGTH} characters with ${MIN_MFA_KEY_DISTINCT} distinct ones (\`openssl rand -base64 48\`). Changing it makes every enrolled factor unusable.` }),
  AUDIT_SEAL_INTERVAL_MS: Var.integer({ default: 100, minimum: 0, maximum: 60_000, unit: "milliseconds", description: "How often the API links committed audit events into their hash chains (audit.seal; one sealer at a time across processes). Until then an event is protected by its own content hash. 0: this process does not seal (another API process, or audit:verify and audit:export, do)." }),
  MFA_ENABLED: Var.optionalBoolean({ defaultText: "on when MFA_ENCRYPTION_KEY is set", description: "Turns the mfa_* functions on or off; on requires MFA_ENCRYPTION_KEY (`bun run dev` generates one for the run)." }),
});

/** Parses `env` into an ApiConfig, or throws ConfigError listing every problem at once. */
export function loadConfig(env: Env = process.env, options: LoadConfigOptions = {}): ApiConfig {
  const problems: string[] = [];
  const v = readEnv(ApiEnv, env, problems);
  const log = options.log ?? console.log;

  if (!v.DATABASE_URL && !problems.some((p) => p.startsWith("DATABASE_URL "))) {
    problems.push("DATABASE_URL is required (the API checks Postgres health and reads the function catalogue)");
  }

  let secret = v.PGRST_JWT_SECRET;
  let generated = false;
  if (!secret && options.development) {
    secret = randomBytes(32).toString("base64url");
    generated = true;
    log("PGRST_JWT_SECRET is not set: generated a random one for this run (tokens stop working on restart)");
  }
  if (!secret) {
    problems.push(`PGRST_JWT_SECRET is required: at least ${MIN_SECRET_LENGTH} characters, shared with PostgREST (e.g. \`openssl rand -base64 48\`)`);
  } else if (secret.length < MIN_SECRET_LENGTH) {
    problems.push(weakSecret("PGRST_JWT_SECRET", secret.length, MIN_SECRET_LENGTH));
  }

  const oidc = loadOidcConfig(
    (name) => read(env, name),
    (name, fallback) => (v as Record<string, unknown>)[name] as boolean | undefined ?? fallback,
    problems,
  );
  const mfa = loadMfaConfig(v.MFA_ENCRYPTION_KEY, v.MFA_ENABLED, problems, options);

  const postgrestUrl = v.POSTGREST_URL?.replace(/\/+$/, "");
  const config: ApiConfig = {
    host: v.HOST,
    port: v.PORT,
    postgrestUrl,
    databaseUrl: v.DATABASE_URL ?? "",
    redisUrl: v.REDIS_URL,
    schemas: v.PGRST_DB_SCHEMAS,
    jwt: { secret: secret ?? "", generated, audience: v.PGRST_JWT_AUD, accessTokenTtlSeconds: v.ACCESS_TOKEN_TTL },
    cache: { ttlSeconds: v.CACHE_TTL_SECONDS },
    sessions: { localTtlMs: v.SESSION_LOCAL_CACHE_MS, redisActiveTtlSeconds: v.SESSION_REDIS_TTL_SECONDS },
    rateLimit: {
      ipMax: v.RATE_LIMIT_IP_MAX,
      ipWindowSeconds: v.RATE_LIMIT_IP_WINDOW_SECONDS,
      emailMax: v.RATE_LIMIT_EMAIL_MAX,
      emailWindowSeconds: v.RATE_LIMIT_EMAIL_WINDOW_SECONDS,
    },
    admission: {
      signInConcurrency: v.SIGN_IN_CONCURRENCY ?? cores(),
      signInQueue: v.SIGN_IN_QUEUE ?? cores(),
      signInQueueTimeoutMs: v.SIGN_IN_QUEUE_TIMEOUT_MS,
    },
    anonRole: v.PGRST_DB_ANON_ROLE,
    corsOrigins: v.CORS_ORIGINS,
    trustProxy: v.TRUST_PROXY,
    logRequests: v.LOG_REQUESTS,
    upstreamTimeoutMs: v.UPSTREAM_TIMEOUT_MS,
    maxBodyBytes: v.MAX_BODY_BYTES,
    oidc,
    mfa,
    auditSealIntervalMs: v.AUDIT_SEAL_INTERVAL_MS,
  };
  if (!postgrestUrl) config.engine = embeddedEngineConfig(config, env, problems);
  throwIfProblems(problems);
  return config;
}

/**
 * The embedded engine reads the same PGRST_* variables, but always with the API's own secret,
 * schemas, anonymous role and audience, so a generated development secret is the one both sides
 * use. The variables the API owns are left out of the engine's reading, so a bad value is
 * reported once, in the API's words.
 */
function embeddedEngineConfig(config: ApiConfig, env: Env, problems: string[]): EngineConfig {
  const engineEnv: Env = {
    ...env,
    PGRST_JWT_SECRET: undefined,
    PGRST_JWT_SECRET_IS_BASE64: undefined,
    PGRST_DB_SCHEMAS: undefined,
    PGRST_DB_ANON_ROLE: undefined,
    DATABASE_URL: config.databaseUrl || undefined,
  };
  const engine = readEngineConfig(engineEnv, problems);
  engine.dbSchemas = config.schemas;
  engine.dbAnonRole = config.anonRole;
  engine.jwtSecret = config.jwt.secret || undefined;
  // The API's secret is text; the engine's key must be the one the gateway verifies with.
  engine.jwtSecretIsBase64 = false;
  if (config.jwt.audience) engine.jwtAud = config.jwt.audience;
  // Again with the API's values (pg_catalog among its schemas …); repeats are reported once.
  problems.push(...engineConfigProblems(engine));
  return engine;
}

/**
 * MFA is on when MFA_ENCRYPTION_KEY is set (or MFA_ENABLED=true); on, the key is required and
 * must not be weak (32+ characters, 12+ distinct ones). `MFA_ENABLED=true bun run dev` without a
 * key makes one up for the run (factors enrolled then stop working on restart) and says so.
 */
function loadMfaConfig(configuredKey: string | undefined, configuredEnabled: boolean | undefined, problems: string[], options: LoadConfigOptions): MfaConfig {
  let key = configuredKey;
  const enabled = configuredEnabled ?? key !== undefined;
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

export { ConfigError };
