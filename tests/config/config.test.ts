// The configuration module (api/src/config/): every process's environment, read through one
// schema each; every problem named at once, secrets never repeated, defaults applied.
import { describe, expect, test } from "bun:test";
import {
  ConfigError, engineConfigFromEnv, loadAccountSettings, loadAuditPruneConfig, loadConfig, loadDevConfig, loadMailerConfig,
  loadWorkerConfig, type Env,
} from "../../api/src/config";
import { createEngine } from "../../api/src/engine";
import { closedPort } from "../support/ports";

const SECRET = "s3cret-jwt-value-that-is-long-enough-0123456789";
const API = { DATABASE_URL: "postgres://authenticator:pw@127.0.0.1:5432/autoaudit", PGRST_JWT_SECRET: SECRET };

function problemsOf(load: () => unknown): string[] {
  try {
    load();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe("each kind of bad value is one clear problem naming the variable, the value and the form", () => {
  const cases: [string, Env, string][] = [
    ["integer: not a number", { PORT: "eighty" }, 'PORT must be a whole number between 0 and 65535 (got "eighty")'],
    ["integer: a fraction", { ACCESS_TOKEN_TTL: "1.5" }, 'ACCESS_TOKEN_TTL must be a whole number of seconds between 10 and 86400 (got "1.5")'],
    ["integer: out of range", { SESSION_LOCAL_CACHE_MS: "5000" }, 'SESSION_LOCAL_CACHE_MS must be a whole number of milliseconds between 0 and 1000 (got "5000")'],
    ["integer: below the minimum", { RATE_LIMIT_IP_MAX: "-1" }, 'RATE_LIMIT_IP_MAX must be a whole number between 0 and 1000000000 (got "-1")'],
    ["boolean", { TRUST_PROXY: "maybe" }, 'TRUST_PROXY must be true or false (also 1/0, yes/no, on/off) (got "maybe")'],
    ["URL: wrong protocol", { REDIS_URL: "http://cache:6379" }, 'REDIS_URL must be a redis or rediss URL (got "http://cache:6379")'],
    ["URL: not a URL", { POSTGREST_URL: "postgrest" }, "POSTGREST_URL must be a http or https URL (got a value of 9 characters)"],
    ["list: empty", { PGRST_DB_SCHEMAS: " , " }, 'PGRST_DB_SCHEMAS must be a comma-separated list of at least 1 (got ",")'],
    ["enum", { PGRST_DB_TX_END: "sometimes" }, 'PGRST_DB_TX_END must be one of commit, commit-allow-override, rollback, rollback-allow-override (got "sometimes")'],
    ["pattern", { AUTH_OIDC_CALLBACK_URL: "https://api.example/callback" }, 'AUTH_OIDC_CALLBACK_URL must be text matching ^https?://[^/]+/auth/callback$ (got "https://api.example/callback")'],
  ];
  for (const [kind, env, problem] of cases) {
    test(kind, () => expect(problemsOf(() => loadConfig({ ...API, ...env }))).toEqual([problem]));
  }
});

describe("reporting", () => {
  test("several problems, of the API and of its embedded engine, are reported together", () => {
    const found = problemsOf(() => loadConfig({ ...API, PORT: "x", TRUST_PROXY: "2", PGRST_DB_POOL: "0", PGRST_JWT_ROLE_CLAIM_KEY: "role[" }));
    expect(found.map((p) => p.split(" ")[0])).toEqual(["PORT", "TRUST_PROXY", "PGRST_DB_POOL", "PGRST_JWT_ROLE_CLAIM_KEY:"]);
    const error = (() => { try { loadConfig({ ...API, PORT: "x", TRUST_PROXY: "2" }); } catch (e) { return e as Error; } })()!;
    expect(error.message).toBe('invalid configuration:\n  - PORT must be a whole number between 0 and 65535 (got "x")\n  - TRUST_PROXY must be true or false (also 1/0, yes/no, on/off) (got "2")');
  });

  test("a real PostgREST (POSTGREST_URL) leaves the engine's variables to it", () => {
    const config = loadConfig({ ...API, POSTGREST_URL: "http://postgrest:3000/", PGRST_DB_POOL: "0" });
    expect(config.postgrestUrl).toBe("http://postgrest:3000");
    expect(config.engine).toBeUndefined();
  });

  test("secrets and URL passwords are never echoed", () => {
    const weakJwt = "hunter2-jwt";
    const weakMfa = "hunter2-mfa-key";
    const text = problemsOf(() => loadConfig({
      DATABASE_URL: "mysql://user:topsecretpw@db/x", REDIS_URL: "redis//:topsecretpw@cache", PGRST_JWT_SECRET: weakJwt, MFA_ENCRYPTION_KEY: weakMfa,
    })).join("\n");
    expect(text).toContain("PGRST_JWT_SECRET is too weak: 11 characters, at least 32 are required");
    expect(text).toContain("MFA_ENCRYPTION_KEY is too weak");
    expect(text).toContain('DATABASE_URL must be a postgres or postgresql URL (got "mysql://user:***@db/x")');
    expect(text).toContain("REDIS_URL must be a redis or rediss URL (got a value of");
    for (const secret of [weakJwt, weakMfa, "topsecretpw"]) expect(text).not.toContain(secret);
    const worker = problemsOf(() => loadWorkerConfig({ SCAN_WORKER_DATABASE_URL: "http://u:topsecretpw@h/x" })).join("\n");
    expect(worker).not.toContain("topsecretpw");
    expect(worker).toContain("REDIS_URL is required");
  });

  test("missing required values name the variable and how to get one", () => {
    expect(problemsOf(() => loadConfig({}))).toEqual([
      "DATABASE_URL is required (the API checks Postgres health and reads the function catalogue)",
      "PGRST_JWT_SECRET is required: at least 32 characters, shared with PostgREST (e.g. `openssl rand -base64 48`)",
    ]);
  });
});

describe("defaults", () => {
  test("the API: values from the schema, trimmed, empty = unset", () => {
    const config = loadConfig({ ...API, PORT: "", HOST: "  ", CORS_ORIGINS: " https://a.example , https://b.example ", TRUST_PROXY: " YES " });
    expect(config.port).toBe(8000);
    expect(config.host).toBe("0.0.0.0");
    expect(config.corsOrigins).toEqual(["https://a.example", "https://b.example"]);
    expect(config.trustProxy).toBe(true);
    expect(config.cache.ttlSeconds).toBe(30);
    expect(config.rateLimit).toEqual({ ipMax: 60, ipWindowSeconds: 60, emailMax: 10, emailWindowSeconds: 300 });
    expect(config.oidc).toMatchObject({ providers: [], redirectAllowlist: [], linkByEmail: true, devProvider: false });
    expect(config.mfa).toEqual({ enabled: false, key: "" });
  });

  test("the API's embedded engine takes the API's secret, schemas, anonymous role and audience", () => {
    const config = loadConfig({ ...API, PGRST_JWT_AUD: "aud-1", PGRST_DB_POOL: "7", PGRST_JWT_SECRET_IS_BASE64: "true" });
    expect(config.engine).toMatchObject({
      dbUri: API.DATABASE_URL, dbSchemas: ["api"], dbAnonRole: "anon", jwtSecret: SECRET, jwtSecretIsBase64: false, jwtAud: "aud-1", dbPoolSize: 7,
    });
  });

  test("the engine on its own: PostgREST's defaults", () => {
    expect(engineConfigFromEnv({})).toMatchObject({
      dbSchemas: ["public"], dbExtraSearchPath: ["public"], dbTxEnd: "commit", dbPoolSize: 10, jwtRoleClaimKey: "$.role", serverHost: "127.0.0.1", serverPort: 3000,
    });
  });

  test("the worker, the mailer, the audit retention, the account settings and the dev stack", () => {
    const worker = loadWorkerConfig({ DATABASE_URL: API.DATABASE_URL, REDIS_URL: "redis://127.0.0.1:6379", SCAN_JOB_CLAIM_IDLE_MS: "1000" });
    expect(worker).toMatchObject({ dbRole: "scan_worker", handler: "simulated", stream: "autoaudit:scan-jobs", claimIdleMs: 1000, heartbeatMs: 250, relay: true });
    expect(worker.audit).toEqual({ retentionDays: undefined, pruneDatabaseUrl: API.DATABASE_URL });
    // An empty role is a value: stay the URL's role.
    expect(loadWorkerConfig({ DATABASE_URL: API.DATABASE_URL, REDIS_URL: "redis://r", SCAN_WORKER_DB_ROLE: "" }).dbRole).toBe("");
    expect(problemsOf(() => loadWorkerConfig({ DATABASE_URL: API.DATABASE_URL, REDIS_URL: "redis://r", SCAN_JOB_CLAIM_IDLE_MS: "1000", SCAN_JOB_HEARTBEAT_MS: "2000" })))
      .toEqual(['SCAN_JOB_HEARTBEAT_MS must be at most SCAN_JOB_CLAIM_IDLE_MS (1000) (got "2000")']);

    const mailer = loadMailerConfig({ MAILER_DATABASE_URL: API.DATABASE_URL, SMTP_URL: "smtp://maildev:1025" });
    expect(mailer).toMatchObject({ dbRole: "mailer", pollMs: 1000, leaseMs: 60_000, retryBaseMs: 5000, retryMaxMs: 3_600_000 });
    expect(mailer.mail).toEqual({ smtpUrl: "smtp://maildev:1025", from: "AutoAudit <no-reply@autoaudit.local>", publicAppUrl: "http://localhost:3000" });
    expect(problemsOf(() => loadMailerConfig({}))).toHaveLength(2);

    expect(loadAuditPruneConfig({ DATABASE_URL: API.DATABASE_URL })).toEqual({ retentionDays: undefined, databaseUrl: API.DATABASE_URL });
    expect(problemsOf(() => loadAuditPruneConfig({ AUDIT_RETENTION_DAYS: "0" }))).toEqual([
      'AUDIT_RETENTION_DAYS must be a whole number of days between 1 and 36500 (got "0")',
    ]);

    expect(loadAccountSettings({ SESSION_MAX_DAYS: "30", AUTH_REQUIRE_VERIFIED_EMAIL: "on" })).toMatchObject({
      session_max_days: "30", require_verified_email: "true", session_inactivity_days: null,
    });
    expect(problemsOf(() => loadAccountSettings({ SESSION_MAX_DAYS: "-1", AUTH_REQUIRE_VERIFIED_EMAIL: "sure" }))).toHaveLength(2);

    expect(loadDevConfig({})).toMatchObject({ port: 8000, oidcDevProvider: false, tcp: false, externalServersIgnored: false });
    expect(problemsOf(() => loadDevConfig({ AUTHENTICATOR_PASSWORD: "short-pw" }))).toEqual(["AUTHENTICATOR_PASSWORD must be at least 16 characters long (got a value of 8 characters)"]);
  });
});

describe("the safe failures", () => {
  test("the development default generates the JWT secret and the MFA key, and says so", () => {
    const lines: string[] = [];
    const config = loadConfig({ DATABASE_URL: API.DATABASE_URL, MFA_ENABLED: "on" }, { development: true, log: (l) => lines.push(l) });
    expect(config.jwt.generated).toBe(true);
    expect(config.engine?.jwtSecret).toBe(config.jwt.secret);
    expect(config.mfa.key.length).toBeGreaterThanOrEqual(32);
    expect(lines.map((l) => l.split(":")[0])).toEqual(["PGRST_JWT_SECRET is not set", "MFA_ENCRYPTION_KEY is not set"]);
  });

  test("the engine refuses a weak secret and system schemas, without the secret in the message", () => {
    const found = problemsOf(() => engineConfigFromEnv({ PGRST_JWT_SECRET: "short-engine-secret", PGRST_DB_SCHEMAS: "api,pg_catalog" }));
    expect(found).toHaveLength(2);
    expect(found[0]).toStartWith("PGRST_DB_SCHEMAS must not expose pg_catalog");
    expect(found[1]).toBe("PGRST_JWT_SECRET is too weak: 19 characters, at least 32 are required");
    expect(problemsOf(() => loadConfig({ ...API, PGRST_DB_SCHEMAS: "information_schema" }))[0]).toStartWith("PGRST_DB_SCHEMAS must not expose information_schema");
  });
});

describe("jwt-role-claim-key", () => {
  test("`$.role` and the deprecated `.role` are both read; the older syntax is warned about once at start", async () => {
    expect(engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: "$.role" }).jwtRoleClaimKey).toBe("$.role");
    const legacy = engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: ".role" });
    expect(legacy.jwtRoleClaimKey).toBe(".role");
    expect(problemsOf(() => engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: "$.role[x" }))[0]).toContain("PGRST_JWT_ROLE_CLAIM_KEY: failed to parse role-claim-key value");

    const port = await closedPort();
    const warnings = async (key: string) => {
      const lines: string[] = [];
      const config = engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: key, PGRST_DB_URI: `postgres://authenticator:x@127.0.0.1:${port}/nowhere`, PGRST_DB_POOL_ACQUISITION_TIMEOUT: "1" });
      const engine = await createEngine(config, { log: (l) => lines.push(l) });
      await engine.close();
      return lines.filter((l) => l.includes("jwt-role-claim-key"));
    };
    expect(await warnings("$.role")).toEqual([]);
    const [warning, ...more] = await warnings(".role");
    expect(more).toEqual([]);
    expect(warning).toContain("deprecated");
    expect(warning).toContain("$.role");
  });
});

