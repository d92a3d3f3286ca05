import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { loadAccountSettings, loadConfig, loadDevConfig, loadMailSettings, read, type Env } from "../config";
import { startApi, type RunningApi } from "../server";
import { startEmbeddedPostgres, type RunningPostgres } from "./embedded-postgres";
import { withSocketDir } from "../db/connection";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "./migrate";
import { redisServerAvailable, startRedisServer, type RunningRedis } from "./redis-server";
import { applyAccountSettings } from "./account-settings";
import { startMailDev, type RunningMailDev } from "./maildev";
import { connectPostgres as connectMailerDb } from "../db/connection";
import { Mailer } from "../mail/mailer";

export interface EmbeddedStackOptions {
  /** Persistent data (Postgres cluster under `postgres/`, Redis append-only file under `redis/`). Omit for throwaway. */
  dataDir?: string;
  /** API port; default 8000 (0 = any free port). */
  port?: number;
  /** Database name; default `autoaudit`. */
  database?: string;
  /** Human-readable progress lines (the dev CLI prints them). */
  log?: (line: string) => void;
  /** Where the API's JSON request log goes (default: stdout). */
  requestLog?: (line: string) => void;
  /**
   * The environment the stack is configured from (the caller's, usually process.env): the
   * development stack's own variables (config/stack.ts DevEnv), the account settings, the mail
   * settings, and everything the API reads, which the stack completes with its servers' URLs.
   */
  env: Env;
}

export interface EmbeddedStack {
  apiUrl: string;
  docsUrl: string;
  /** Superuser URL (migrations, psql). */
  databaseUrl: string;
  /** What the API and engine connect as. */
  authenticatorUrl: string;
  /** Undefined when redis-server is not on PATH (the API then keeps its cache in memory). */
  redisUrl?: string;
  /** The JWT secret in use (generated for this run unless PGRST_JWT_SECRET was set). */
  jwtSecret: string;
  jwtSecretGenerated: boolean;
  /** Concurrent bcrypt requests the API admits (SIGN_IN_CONCURRENCY; cores − 1 unless set). */
  signInConcurrency: number;
  /** How the API reaches PostgreSQL. */
  transport: "unix-socket" | "tcp";
  api: RunningApi;
  postgres: RunningPostgres;
  redis?: RunningRedis;
  /** MailDev's inbox (web UI and REST API), when the stack runs it (SMTP_URL not set). */
  mailInboxUrl?: string;
  /** Where the mailer sends: MailDev, or SMTP_URL. */
  smtpUrl: string;
  maildev?: RunningMailDev;
  /** Stops the API, the mailer, MailDev, Redis and Postgres, in that order. Idempotent. */
  stop(): Promise<void>;
}

/**
 * The embedded default: everything `bun run dev` needs, in this process and two child servers.
 * Embedded PostgreSQL, `dbmate up`, a fresh authenticator password, redis-server when on PATH,
 * and the API with the embedded engine.
 */
export async function startEmbeddedStack(options: EmbeddedStackOptions): Promise<EmbeddedStack> {
  const log = options.log ?? (() => {});
  const env = options.env;
  // Everything is parsed before anything starts: a bad value stops the stack with every problem.
  const dev = loadDevConfig(env);
  const accountSettings = loadAccountSettings(env);
  const mailSettings = loadMailSettings(env);
  const dataDir = options.dataDir ? resolve(options.dataDir) : undefined;
  const started: { stop(): Promise<void> }[] = [];
  const stopAll = async () => {
    for (const part of started.reverse()) await part.stop().catch(() => {});
    started.length = 0;
  };

  try {
    const postgres = await startEmbeddedPostgres({
      dataDir: dataDir ? join(dataDir, "postgres") : undefined,
      database: options.database ?? "autoaudit",
      log: (line) => log(`postgres: ${line}`),
    });
    started.push(postgres);
    log(`postgres: ${redact(postgres.url)}${dataDir ? ` (data in ${postgres.dataDir})` : ""}`);

    await dbmate(postgres.url, "up");
    const password = dev.authenticatorPassword ?? randomBytes(24).toString("base64url");
    await setAuthenticatorPassword(postgres.url, password);
    await applyAccountSettings(postgres.url, accountSettings);
    // The API and engine sit next to the server: its Unix socket spares both sides the TCP stack.
    // EMBEDDED_POSTGRES_TCP=true connects over TCP to 127.0.0.1 instead, as a composed stack does.
    const tcp = dev.tcp;
    const tcpUrl = authenticatorUrl(postgres.url, password);
    const appUrl = tcp ? tcpUrl : withSocketDir(tcpUrl, postgres.dataDir);
    log("migrations applied");

    let redis: RunningRedis | undefined;
    if (redisServerAvailable()) {
      const redisDir = dataDir ? join(dataDir, "redis") : undefined;
      if (redisDir) mkdirSync(redisDir, { recursive: true });
      redis = await startRedisServer({ dataDir: redisDir });
      started.push(redis);
      log(`redis: ${redis.url}`);
    } else {
      log("redis-server is not on PATH: caching, rate limits and session state stay in this process (in memory)");
    }

    // Mail: MailDev catches everything unless SMTP_URL names a real relay.
    let maildev: RunningMailDev | undefined;
    if (!mailSettings.smtpUrl) {
      maildev = await startMailDev({
        smtpPort: dev.maildevSmtpPort,
        webPort: dev.maildevWebPort,
        mailDirectory: dataDir ? join(dataDir, "maildev") : undefined,
      });
      started.push(maildev);
      log(`maildev: inbox ${maildev.webUrl}, SMTP ${maildev.smtpUrl}`);
    }
    const mail = { ...mailSettings, smtpUrl: mailSettings.smtpUrl ?? maildev!.smtpUrl };
    const mailerSql = connectMailerDb(withSocketDir(postgres.url, postgres.dataDir), { max: 2, onnotice: () => {}, connection: { role: "mailer" } });
    const mailer = new Mailer({ sql: mailerSql, ...mail, log: (event) => log(`mailer: ${JSON.stringify(event)}`) });
    await mailer.start();
    started.push({ stop: async () => { await mailer.stop(); await mailerSql.end({ timeout: 5 }); } });

    // The API's environment: the caller's, with this stack's servers, and development defaults
    // for what the caller left unset.
    const unset = (name: string, value: string) => (read(env, name) === undefined ? { [name]: value } : {});
    const apiEnv: Env = {
      ...env,
      // A development stack is reachable from this machine only, unless HOST says otherwise.
      ...unset("HOST", "127.0.0.1"),
      // PostgreSQL runs on this machine, so a bcrypt hash takes a core the API and the other
      // requests' backends also need: admit one hash fewer than there are cores.
      ...unset("SIGN_IN_CONCURRENCY", String(Math.max(1, availableParallelism() - 1))),
      DATABASE_URL: appUrl,
      PGRST_DB_URI: appUrl,
      REDIS_URL: redis?.url,
      POSTGREST_URL: undefined,
      PORT: String(options.port ?? dev.port),
    };
    const config = loadConfig(apiEnv, { development: true, log });
    const api = await startApi(config, options.requestLog);
    started.push(api);
    log(`api: ${api.url}  (Swagger UI: ${api.url}/docs)`);

    let stopped = false;
    return {
      apiUrl: api.url,
      docsUrl: `${api.url}/docs`,
      databaseUrl: postgres.url,
      authenticatorUrl: appUrl,
      redisUrl: redis?.url,
      jwtSecret: config.jwt.secret,
      jwtSecretGenerated: config.jwt.generated,
      signInConcurrency: config.admission.signInConcurrency,
      transport: appUrl === tcpUrl ? "tcp" : "unix-socket",
      api,
      postgres,
      redis,
      mailInboxUrl: maildev?.webUrl,
      smtpUrl: mail.smtpUrl,
      maildev,
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopAll();
      },
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = "***";
  return parsed.toString();
}
