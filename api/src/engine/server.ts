/**
 * `bun run rpc-engine`: the embedded engine as a standalone HTTP server on PGRST_SERVER_PORT
 * (default 3000), configured like PostgREST from PGRST_* variables (PGRST_DB_URI or DATABASE_URL).
 * Like the API's embedded engine, it runs a local PostgreSQL's backends (Unix socket URL) under
 * SCHED_BATCH unless DB_BACKEND_BATCH=false.
 */
import { localBatchScheduling } from "../db/backend-priority";
import { bool } from "./config";
import { createEngine, engineConfigFromEnv } from "./index";

const config = engineConfigFromEnv(process.env);
const onBackend = localBatchScheduling(config.dbUri ?? process.env.DATABASE_URL, bool("DB_BACKEND_BATCH", process.env.DB_BACKEND_BATCH) ?? true);
const engine = await createEngine(config, { databaseUrl: process.env.DATABASE_URL, onBackend });
const server = Bun.serve({
  hostname: config.serverHost,
  port: config.serverPort,
  fetch: (request) => engine.fetch(request),
});
console.error(`engine: listening on http://${server.hostname}:${server.port} (schemas: ${config.dbSchemas.join(", ")})`);

const stop = async () => {
  server.stop();
  await engine.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
