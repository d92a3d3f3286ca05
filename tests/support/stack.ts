import { randomBytes } from "node:crypto";
import { startEmbeddedPostgres, type RunningPostgres } from "../../api/src/stack/embedded-postgres";
import { withSocketDir } from "../../api/src/db/connection";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../../api/src/stack/migrate";
import { startRedisServer, type RunningRedis } from "../../api/src/stack/redis-server";
import postgres from "postgres";
import { startMailDev, type RunningMailDev } from "../../api/src/stack/maildev";
import { Mailer } from "../../api/src/mail/mailer";

/** Cheap bcrypt in tests; one test proves the production default is 12. */
export const TEST_BCRYPT_COST = 4;

export interface TestStack {
  /** Superuser URL of the migrated database. */
  databaseUrl: string;
  /** The same database as the authenticator (what PostgREST and the engine use). */
  authenticatorUrl: string;
  redisUrl: string;
  /** The embedded cluster, when this run started one (undefined with DATABASE_URL). */
  postgres?: RunningPostgres;
  /** The redis-server this run started (undefined with REDIS_URL). */
  redis?: RunningRedis;
  /** True when the suites run against a stack someone else started (DATABASE_URL / API_URL). */
  external: boolean;
  /** Base URL of the API under test: API_URL, or the engine + API this run started on a free port. */
  apiUrl: string;
  /** The JWT secret that API verifies with (from PGRST_JWT_SECRET with API_URL; may then be unknown). */
  jwtSecret?: string;
  /** PGRST_JWT_AUD of that API, if it checks an audience. */
  jwtAudience?: string;
  /** MFA_ENCRYPTION_KEY of that API (from the environment with API_URL; may then be unknown). */
  mfaKey?: string;
  /** Environment to start further API instances on the same database and Redis (undefined with API_URL). */
  apiEnv?: Record<string, string>;
  /** The mail catcher the mailer sends to (its REST API: GET `${maildev.webUrl}/api/email`). */
  maildev: RunningMailDev;
  /** The mailer of this run (tests stop and start it). */
  mailer: Mailer;
  /** The link base in the mails. */
  publicAppUrl: string;
  stop(): Promise<void>;
}

let current: TestStack | undefined;

/** The stack the preload started. Test files call this; it never starts a second one. */
export function testStack(): TestStack {
  if (!current) throw new Error("the test stack is not running: is tests/support/preload.ts preloaded (bunfig.toml)?");
  return current;
}

export async function startTestStack(): Promise<TestStack> {
  if (current) return current;
  const externalDb = process.env.DATABASE_URL;
  requireExternalSecrets(externalDb);
  const pg = externalDb ? undefined : await startEmbeddedPostgres({ database: "autoaudit_test" });
  let redis: RunningRedis | undefined;
  let maildev: RunningMailDev | undefined;
  let mailer: Mailer | undefined;
  let mailerSql: postgres.Sql | undefined;
  try {
    const databaseUrl = externalDb ?? pg!.url;
    const password = process.env.AUTHENTICATOR_PASSWORD ?? randomBytes(24).toString("base64url");

    if (!externalDb) {
      await dbmate(databaseUrl, "up");
      await setAuthenticatorPassword(databaseUrl, password);
      const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
      await admin.unsafe(`alter database autoaudit_test set autoaudit.bcrypt_cost = ${TEST_BCRYPT_COST}`);
      await admin.end();
    }

    const externalRedis = process.env.REDIS_URL;
    redis = externalRedis ? undefined : await startRedisServer();

    // Like `bun run dev`: the embedded server is reached through its Unix socket.
    const appUrl = pg ? withSocketDir(authenticatorUrl(databaseUrl, password), pg.dataDir) : authenticatorUrl(databaseUrl, password);
    const redisUrl = externalRedis ?? redis!.url;

    // The real mail path: outbox → mailer → SMTP → MailDev, with short backoffs.
    maildev = await startMailDev();
    const publicAppUrl = "http://app.autoaudit.test";
    mailerSql = postgres(databaseUrl, { max: 2, onnotice: () => {}, connection: { role: "mailer" } });
    mailer = new Mailer({
      sql: mailerSql, smtpUrl: maildev.smtpUrl, from: "AutoAudit <no-reply@autoaudit.test>", publicAppUrl,
      pollMs: 100, leaseMs: 5000, retryBaseMs: 100, retryMaxMs: 500, smtpTimeoutMs: 2000,
    });
    await mailer.start();
    const startedMaildev = maildev;
    const startedMailer = mailer;
    const startedMailerSql = mailerSql;
    const api = await startTestApi(appUrl, redisUrl);
    const startedRedis = redis;

    current = {
      databaseUrl,
      authenticatorUrl: appUrl,
      redisUrl,
      postgres: pg,
      redis: startedRedis,
      external: Boolean(externalDb) || api.external,
      apiUrl: api.url,
      jwtSecret: api.jwtSecret,
      jwtAudience: api.jwtAudience,
      mfaKey: api.mfaKey,
      apiEnv: api.env,
      maildev: startedMaildev,
      mailer: startedMailer,
      publicAppUrl,
      async stop() {
        await api.stop();
        await startedMailer.stop();
        await startedMailerSql.end({ timeout: 5 });
        await startedMaildev.stop();
        await startedRedis?.stop();
        await pg?.stop();
        current = undefined;
      },
    };
    return current;
  } catch (error) {
    // Whatever started is stopped again, so a failed start leaves no server behind.
    await mailer?.stop().catch(() => {});
    await mailerSql?.end().catch(() => {});
    await maildev?.stop().catch(() => {});
    await redis?.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    throw error;
  }
}

/**
 * Against a running stack the suites must log in as its authenticator and mint tokens its API
 * accepts; without those secrets hundreds of tests would fail with 503s and 401s instead of
 * one clear message.
 */
function requireExternalSecrets(externalDb: string | undefined) {
  const missing: string[] = [];
  if (externalDb && !process.env.AUTHENTICATOR_PASSWORD) missing.push("AUTHENTICATOR_PASSWORD (the authenticator role's password on DATABASE_URL's server)");
  if (process.env.API_URL && !process.env.PGRST_JWT_SECRET) missing.push("PGRST_JWT_SECRET (the secret the API at API_URL signs and verifies with)");
  if (process.env.API_URL && !externalDb) missing.push("DATABASE_URL (a superuser URL of the database behind API_URL)");
  if (missing.length) {
    throw new Error(`running the suites against an external stack needs:\n  - ${missing.join("\n  - ")}\nSee the README, "Tests".`);
  }
}

/**
 * The API under test. With API_URL nothing is started (the suites run against that stack).
 * Otherwise the embedded engine and the API run in this process over real HTTP on a free port,
 * with rate limits per address high enough for a whole suite from one loopback address.
 */
async function startTestApi(appUrl: string, redisUrl: string) {
  const externalApi = process.env.API_URL;
  if (externalApi) {
    return {
      external: true,
      url: externalApi.replace(/\/+$/, ""),
      jwtSecret: process.env.PGRST_JWT_SECRET,
      jwtAudience: process.env.PGRST_JWT_AUD,
      mfaKey: process.env.MFA_ENCRYPTION_KEY,
      env: undefined,
      stop: async () => {},
    };
  }
  const { loadConfig } = await import("../../api/src/config");
  const { startApi } = await import("../../api/src/server");
  const env: Record<string, string> = {
    DATABASE_URL: appUrl,
    PGRST_DB_URI: appUrl,
    REDIS_URL: redisUrl,
    PGRST_JWT_SECRET: process.env.PGRST_JWT_SECRET ?? randomBytes(36).toString("base64url"),
    PGRST_JWT_AUD: process.env.PGRST_JWT_AUD ?? "autoaudit",
    PGRST_DB_SCHEMAS: "api",
    PGRST_DB_ANON_ROLE: "anon",
    HOST: "127.0.0.1",
    PORT: "0",
    RATE_LIMIT_IP_MAX: "1000000",
    LOG_REQUESTS: "false",
    // MFA on, as in production: the key the SQL functions encrypt TOTP secrets with.
    MFA_ENCRYPTION_KEY: process.env.MFA_ENCRYPTION_KEY ?? randomBytes(36).toString("base64url"),
  };
  const api = await startApi(loadConfig(env), () => {});
  return { external: false, url: api.url, jwtSecret: env.PGRST_JWT_SECRET, jwtAudience: env.PGRST_JWT_AUD, mfaKey: env.MFA_ENCRYPTION_KEY, env, stop: () => api.stop() };
}
