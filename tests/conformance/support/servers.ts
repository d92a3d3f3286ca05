import { createServer, STATUS_CODES, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { ConfigValue, ConformanceCase } from "./cases";
import { HS256_TEST_SECRET, RunnerError } from "./request";

/** The RS256 public key the README names `asymmetric_jwk_public_key`. */
const RS256_JWK = {
  alg: "RS256",
  e: "AQAB",
  key_ops: ["verify"],
  kty: "RSA",
  n: "0etQ2Tg187jb04MWfpuogYGV75IFrQQBxQaGH75eq_FpbkyoLcEpRUEWSbECP2eeFya2yZ9vIO5ScD-lPmovePk4Aa4SzZ8jdjhmAbNykleRPCxMg0481kz6PQhnHRUv3nF5WP479CnObJKqTVdEagVL66oxnX9VhZG9IZA7k0Th5PfKQwrKGyUeTGczpOjaPqbxlunP73j9AfnAt4XCS8epa-n3WGz1j-wfpr_ys57Aq-zBCfqP67UYzNpeI1AoXsJhD9xSDOzvJgFRvc3vm2wjAW4LEMwi48rCplamOpZToIHEPIaPzpveYQwDnB1HFTR1ove9bpKJsHmi-e2uzQ",
  use: "sig",
};
const NAMED_VALUES: Record<string, string> = {
  asymmetric_jwk_public_key: JSON.stringify(RS256_JWK),
  asymmetric_jwks_public_key: JSON.stringify({ keys: [RS256_JWK] }),
};

export type EngineEnv = Record<string, string>;

/** README "Server configuration": bulk for every schema but auth, auth = bulk + anon role, pre-request, secret. */
export function engineEnvFor(c: ConformanceCase, databaseUrl: string): EngineEnv {
  const env: Record<string, string | undefined> = {
    PGRST_DB_URI: databaseUrl,
    PGRST_DB_SCHEMAS: "test,rpc,auth",
    PGRST_DB_EXTRA_SEARCH_PATH: "public",
    PGRST_DB_TX_END: "rollback",
  };
  if (c.schema === "auth") {
    env.PGRST_DB_ANON_ROLE = "postgrest_test_anonymous";
    env.PGRST_DB_PRE_REQUEST = "auth.switch_role";
    env.PGRST_JWT_SECRET = HS256_TEST_SECRET;
  }
  for (const [key, value] of Object.entries(c.config ?? {})) env[envName(key)] = envValue(value);
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

function envName(key: string): string {
  return `PGRST_${key.toUpperCase().replaceAll("-", "_")}`;
}

function envValue(value: ConfigValue): string | undefined {
  if (value === null) return undefined;
  if (typeof value === "string") return NAMED_VALUES[value] ?? value;
  return String(value);
}

/** One key per distinct configuration (the database URL is the same for all). */
export function configKey(env: EngineEnv): string {
  return JSON.stringify(Object.entries(env).sort(([a], [b]) => a.localeCompare(b)));
}

interface Engine {
  fetch(request: Request): Response | Promise<Response>;
  close(): unknown;
}
interface EngineModules {
  createEngine(config: unknown, options: { databaseUrl: string }): Promise<Engine>;
  engineConfigFromEnv(env: Record<string, string | undefined>): unknown;
}

const ENGINE_DIR = process.env.CONFORMANCE_ENGINE_DIR ?? join(import.meta.dir, "..", "..", "..", "api", "src", "engine");
let modules: Promise<EngineModules> | undefined;

/** Loaded at run time so the runner works (and fails clearly) while the engine does not exist yet. */
function loadEngineModules(): Promise<EngineModules> {
  modules ??= (async () => {
    const indexPath = join(ENGINE_DIR, "index.ts");
    // The engine's configuration lives with every process's in api/src/config/ (one typed module).
    const configPath = join(ENGINE_DIR, "..", "config", "engine.ts");
    try {
      const index = (await import(indexPath)) as Partial<EngineModules>;
      const config = (await import(configPath)) as Partial<EngineModules>;
      if (typeof index.createEngine !== "function") throw new Error(`${indexPath} does not export createEngine`);
      if (typeof config.engineConfigFromEnv !== "function") throw new Error(`${configPath} does not export engineConfigFromEnv`);
      return { createEngine: index.createEngine, engineConfigFromEnv: config.engineConfigFromEnv };
    } catch (error) {
      throw new RunnerError(`engine not available: ${error instanceof Error ? error.message : String(error)}`);
    }
  })();
  return modules;
}

interface Instance {
  port: number;
  close(): Promise<void>;
}

/**
 * Engine instances served over real HTTP, created lazily per distinct configuration and
 * closed as soon as the last case that needs one has run.
 */
export class EngineServers {
  private readonly instances = new Map<string, Promise<Instance>>();
  private readonly remaining = new Map<string, number>();

  constructor(
    private readonly databaseUrl: string,
    cases: ConformanceCase[],
  ) {
    for (const c of cases) {
      const key = configKey(engineEnvFor(c, databaseUrl));
      this.remaining.set(key, (this.remaining.get(key) ?? 0) + 1);
    }
  }

  get distinctConfigurations(): number {
    return this.remaining.size;
  }

  /** The port of the instance for this case's configuration. Rejects with the engine's own error if it refuses the configuration. */
  async portFor(c: ConformanceCase): Promise<number> {
    const { createEngine, engineConfigFromEnv } = await loadEngineModules();
    const env = engineEnvFor(c, this.databaseUrl);
    const key = configKey(env);
    let instance = this.instances.get(key);
    if (!instance) {
      instance = (async () => {
        const engine = await createEngine(engineConfigFromEnv(env), { databaseUrl: this.databaseUrl });
        return serve(engine);
      })();
      this.instances.set(key, instance);
    }
    return (await instance).port;
  }

  /** Called after each case; closes the instance once no remaining case needs it. */
  async release(c: ConformanceCase): Promise<void> {
    const key = configKey(engineEnvFor(c, this.databaseUrl));
    const left = (this.remaining.get(key) ?? 1) - 1;
    this.remaining.set(key, left);
    if (left > 0) return;
    const instance = this.instances.get(key);
    this.instances.delete(key);
    await closeQuietly(instance);
  }

  async closeAll(): Promise<void> {
    const all = [...this.instances.values()];
    this.instances.clear();
    await Promise.all(all.map(closeQuietly));
  }
}

async function closeQuietly(instance: Promise<Instance> | undefined) {
  if (!instance) return;
  try {
    await (await instance).close();
  } catch {
    // An instance that never started has nothing to close.
  }
}

/**
 * Serves `engine.fetch` over HTTP/1.1. node:http rather than Bun.serve: Bun.serve (1.4.5)
 * writes its own reason phrase and drops `Response.statusText`, which cases 1508 and 1511
 * assert on the wire. The adapter passes method, raw target, headers and body through as
 * a WHATWG Request, and status, reason phrase, headers and body back.
 */
async function serve(engine: Engine): Promise<Instance> {
  const server: Server = createServer(async (req, res) => {
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const headers = new Headers();
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
      const method = req.method ?? "GET";
      const hasBody = method !== "GET" && method !== "HEAD";
      const address = server.address() as AddressInfo;
      const request = new Request(`http://127.0.0.1:${address.port}${req.url ?? "/"}`, {
        method,
        headers,
        body: hasBody ? Buffer.concat(chunks) : undefined,
      });
      const response = await engine.fetch(request);
      res.statusCode = response.status;
      res.statusMessage = response.statusText || STATUS_CODES[response.status] || "Unknown";
      for (const [name, value] of response.headers) if (name !== "set-cookie") res.setHeader(name, value);
      const cookies = response.headers.getSetCookie();
      if (cookies.length > 0) res.setHeader("set-cookie", cookies);
      const body = Buffer.from(await response.arrayBuffer());
      res.end(method === "HEAD" || body.length === 0 ? undefined : body);
    } catch (error) {
      // The engine threw instead of answering: make that visible in the case's failure.
      res.statusCode = 599;
      res.statusMessage = "Engine Threw";
      res.end(`engine.fetch threw: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    }
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolveListen());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    async close() {
      server.closeAllConnections?.();
      await new Promise<void>((resolveClose) => server.close(() => resolveClose()));
      await engine.close();
    },
  };
}
