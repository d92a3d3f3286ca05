// `bun run dev`: the embedded stack (no Docker). PostgreSQL under .data/ (kept between runs),
// migrations, redis-server when installed, the engine and the API on port 8000.
// Ctrl-C stops every process it started.
import { resolve } from "node:path";
import { ConfigError } from "../config";
import { startEmbeddedStack, type EmbeddedStack } from "../stack/embedded-stack";

const ROOT = resolve(import.meta.dir, "../../..");
const began = performance.now();
const say = (line: string) => console.log(`[dev] ${line}`);

if (process.env.DATABASE_URL || process.env.POSTGREST_URL) {
  say("note: DATABASE_URL / POSTGREST_URL are ignored by `bun run dev`, which always runs the embedded stack; use `bun run start` to run the API against other servers");
}

let stack: EmbeddedStack | undefined;
let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  say(`${signal}: stopping the API, Redis and PostgreSQL…`);
  await stack?.stop();
  say("stopped");
  process.exit(0);
};
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));

try {
  stack = await startEmbeddedStack({
    dataDir: resolve(ROOT, ".data"),
    port: process.env.PORT ? Number(process.env.PORT) : 8000,
    log: say,
  });
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`[dev] cannot start: ${error.message}`);
  } else {
    console.error(`[dev] cannot start: ${error instanceof Error ? error.message : String(error)}`);
    if (String(error).includes("EADDRINUSE") || String(error).includes("in use")) {
      console.error("[dev] port 8000 is taken: stop the other process or run with PORT=8001 bun run dev");
    }
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
  JWT secret   ${stack.jwtSecretGenerated ? "generated for this run (set PGRST_JWT_SECRET to keep tokens across restarts)" : "from PGRST_JWT_SECRET"}

  Try:  curl -s ${stack.apiUrl}/rpc/sign_up -H 'Content-Type: application/json' \\
          -d '{"email":"ada@example.com","password":"correct horse","first_name":"Ada","last_name":"Lovelace"}'
  Ctrl-C stops everything.
`);
