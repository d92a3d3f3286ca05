/**
 * `bun api/src/server.ts` (`bun run start`): the API on PORT (8000) with Bun's HTTP server.
 * Everything else is runtime neutral; this file is the Bun edge.
 */
import { ConfigError, loadConfig, type ApiConfig } from "./config";
import { createGateway, type Gateway } from "./gateway/app";
import { selectUpstream, type SelectedUpstream } from "./gateway/upstream-select";

export interface RunningApi {
  url: string;
  port: number;
  gateway: Gateway;
  upstream: SelectedUpstream;
  stop(): Promise<void>;
}

/** Starts the API for `config` (used by this file's main and by the embedded stack). */
export async function startApi(config: ApiConfig, log?: (line: string) => void): Promise<RunningApi> {
  const upstream = await selectUpstream(config);
  const gateway = await createGateway({ config, upstream, log });
  await gateway.ready();
  const server = Bun.serve({
    hostname: config.host,
    port: config.port,
    // A little above the gateway's own limit, so the gateway answers 413 in PostgREST's shape.
    maxRequestBodySize: config.maxBodyBytes + 64 * 1024,
    idleTimeout: 30,
    fetch: (request, srv) => gateway.handle(request, { clientIp: () => srv.requestIP(request)?.address }),
  });
  const host = config.host === "0.0.0.0" ? "127.0.0.1" : config.host;
  return {
    url: `http://${host}:${server.port}`,
    port: server.port!,
    gateway,
    upstream,
    async stop() {
      await server.stop(true);
      await gateway.close();
      await upstream.close();
    },
  };
}

if (import.meta.main) {
  let config: ApiConfig;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`autoaudit api: cannot start, ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  const api = await startApi(config);
  console.log(JSON.stringify({ time: new Date().toISOString(), event: "listening", url: api.url, upstream: api.upstream.kind }));
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    await api.stop();
    process.exit(0);
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
}
