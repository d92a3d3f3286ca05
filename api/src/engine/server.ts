/**
 * `bun run rpc-engine`: the embedded engine as a standalone HTTP server on PGRST_SERVER_PORT
 * (default 3000), configured like PostgREST from PGRST_* variables (PGRST_DB_URI or DATABASE_URL).
 */
import { createEngine, engineConfigFromEnv } from "./index";

const config = engineConfigFromEnv(process.env);
const engine = await createEngine(config, { databaseUrl: process.env.DATABASE_URL });
const server = Bun.serve({
  hostname: config.serverHost,
  port: config.serverPort,
  // fetch, not handle: a request from the network has its token verified here.
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
