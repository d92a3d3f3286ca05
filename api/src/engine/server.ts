/**
 * `bun run rpc-engine`: the embedded engine as a standalone HTTP server on PGRST_SERVER_PORT
 * (default 3000), configured like PostgREST from PGRST_* variables (PGRST_DB_URI or DATABASE_URL).
 * Served with node:http so a function's custom reason phrase reaches the wire (see node-http.ts).
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError, engineConfigFromEnv, type EngineConfig } from "../config";
import { createEngine } from "./index";
import { nodeRequestListener } from "./node-http";

let config: EngineConfig;
try {
  // PGRST_DB_URI, else DATABASE_URL (config/engine.ts).
  config = engineConfigFromEnv();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`engine: cannot start, ${error.message}`);
  process.exit(1);
}
const engine = await createEngine(config);
const origin = `http://${config.serverHost.includes(":") ? `[${config.serverHost}]` : config.serverHost}:${config.serverPort}`;
// engine.fetch, not engine.handle: a request from the network has its token verified here.
const server = createServer(nodeRequestListener((request) => engine.fetch(request), origin));
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(config.serverPort, config.serverHost, () => resolve());
});
const address = server.address() as AddressInfo;
console.error(`engine: listening on http://${address.address}:${address.port} (schemas: ${config.dbSchemas.join(", ")})`);

const stop = async () => {
  server.closeAllConnections?.();
  server.close();
  await engine.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
