// `bun run dev`: the embedded stack (no Docker). PostgreSQL under .data/ (kept between runs; as
// root in a folder the postgres user cannot enter, under EMBEDDED_POSTGRES_HOME: see the README),
// migrations, redis-server when installed, MailDev and the mailer, the engine and the API on port 8000.
// Ctrl-C stops every process it started.
import { resolve } from "node:path";
import { ConfigError, loadDevConfig, type DevConfig } from "../config";
import { EmbeddedPostgresError } from "../stack/embedded-postgres";
import { startEmbeddedStack, type EmbeddedStack } from "../stack/embedded-stack";

const ROOT = resolve(import.meta.dir, "../../..");
const began = performance.now();
const say = (line: string) => console.log(`[dev] ${line}`);

let dev: DevConfig;
try {
  dev = loadDevConfig();
} catch (error) {
  console.error(`[dev] cannot start: ${(error as Error).message}`);
  process.exit(1);
}
if (dev.externalServersIgnored) {
  say("note: DATABASE_URL / POSTGREST_URL are ignored by `bun run dev`, which always runs the embedded stack; use `bun run start` to run the API against other servers");
}

let stack: EmbeddedStack | undefined;
let devOidc: { stop(): Promise<void>; hint(apiUrl: string): string } | undefined;
let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  say(`${signal}: stopping the API, the mailer, MailDev, Redis and PostgreSQL…`);
  await stack?.stop();
  await devOidc?.stop();
  say("stopped");
  process.exit(0);
};
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));

try {
  const port = dev.port;
  // This process's environment goes to the stack, which parses it (and completes it for the API).
  let env: Record<string, string | undefined> = process.env;
  if (dev.oidcDevProvider) {
    const { startDevOidc } = await import("./dev-oidc");
    const started = await startDevOidc(port, env, say);
    devOidc = started;
    env = started.env;
  }
  stack = await startEmbeddedStack({
    dataDir: resolve(ROOT, ".data"),
    port,
    log: say,
    env,
  });
} catch (error) {
  // One message naming the cause and the fix (EmbeddedPostgresError and ConfigError carry both).
  const message = error instanceof Error ? error.message : String(error);
  console.error(error instanceof EmbeddedPostgresError ? `[dev] ${message}` : `[dev] cannot start: ${message}`);
  const apiPort = dev.port;
  if (!(error instanceof ConfigError || error instanceof EmbeddedPostgresError) && /EADDRINUSE|in use/.test(String(error))) {
    console.error(`[dev] port ${apiPort} is taken: stop the other process or run with PORT=${apiPort + 1} bun run dev`);
  }
  process.exit(1);
}

const health = await fetch(`${stack.apiUrl}/health`).then((r) => r.status).catch(() => 0);
const seconds = ((performance.now() - began) / 1000).toFixed(1);
console.log(`
  AutoAudit Backend is up (ready in ${seconds} s, /health ${health})

  API          ${stack.apiUrl}
  Swagger UI   ${stack.docsUrl}
  OpenAPI      ${stack.apiUrl}/docs/json
  Health       ${stack.apiUrl}/health
  Database     ${stack.databaseUrl}
  Redis        ${stack.redisUrl ?? "(not installed: in-memory cache)"}
  Mail inbox   ${stack.mailInboxUrl ?? `(SMTP_URL: mail goes to ${new URL(stack.smtpUrl).host})`}
  JWT secret   ${stack.jwtSecretGenerated ? "generated for this run (set PGRST_JWT_SECRET to keep tokens across restarts)" : "from PGRST_JWT_SECRET"}

  Try:  curl -s ${stack.apiUrl}/rpc/sign_up -H 'Content-Type: application/json' \\
          -d '{"email":"ada@example.com","password":"analytical engine 1843","first_name":"Ada","last_name":"Lovelace"}'
${devOidc ? devOidc.hint(stack.apiUrl) : ""}  Ctrl-C stops everything.
`);
