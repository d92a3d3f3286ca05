/**
 * The throwaway stack the load report and `bun run bench` measure, in its OWN process, so the
 * load generator never shares the server's event loop.
 *
 * Child side (`bun bench/load/stack.ts`): embedded PostgreSQL (migrated, bcrypt cost 12 as in
 * production), redis-server, the API with the embedded engine on a free loopback port, and a
 * second API instance on the same database and Redis with the response cache switched off
 * (CACHE_TTL_SECONDS=0), the "uncached" side of the cache comparison. It sends its URLs to the
 * parent over Bun's IPC channel and stops everything when the parent goes away or on SIGTERM.
 *
 * Parent side: `startStackProcess()`.
 */
import { resolve } from "node:path";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { startEmbeddedStack, type EmbeddedStack } from "../../api/src/stack/embedded-stack";

export interface StackInfo {
  /** The API as deployed (cache on). */
  apiUrl: string;
  /** Same API, same database and Redis, CACHE_TTL_SECONDS=0. Undefined when not available (external API_URL). */
  uncachedApiUrl?: string;
  /** Superuser URL (preparation, direct-SQL baselines, pg_stat_activity). */
  databaseUrl?: string;
  /** What the engine connects as. */
  authenticatorUrl?: string;
  redisUrl?: string;
  jwtSecret?: string;
  /** Database name, for counting backends. */
  database?: string;
  /** The process that runs the API (gateway + embedded engine), for its RSS. */
  apiPid?: number;
  /** SIGN_IN_CONCURRENCY of the API (the embedded stack's default is cores − 1). */
  signInConcurrency?: number;
  /** How the API reaches PostgreSQL (embedded stack only). */
  transport?: string;
  /** The environment knobs the stack was started with (documented in the report). */
  settings: Record<string, string>;
}

/**
 * The knobs a load run needs: the sign-in rate limits are meant for attackers, not for a load
 * generator on one address, so they are switched off, or every sign-in scenario would measure
 * the 429s of the limiter. Request logs are off unless asked for (one JSON line per request to
 * a pipe is part of the server's work, but not what these targets are about).
 */
export function loadSettings(logRequests: boolean): Record<string, string> {
  return {
    HOST: "127.0.0.1",
    RATE_LIMIT_IP_MAX: "0",
    RATE_LIMIT_EMAIL_MAX: "0",
    // The reset scenario compares the answer's cost for known and unknown addresses, not the 429s.
    PASSWORD_RESET_PER_ADDRESS_MAX: "1000000",
    PASSWORD_RESET_PER_CLIENT_MAX: "1000000",
    LOG_REQUESTS: logRequests ? "true" : "false",
  };
}

/** Variables a caller may set to experiment (pool size, admission, cache, sessions); passed through. */
const PASSTHROUGH = /^(PGRST_|SIGN_IN_|SESSION_|CACHE_|UPSTREAM_|ACCESS_TOKEN_|RATE_LIMIT_|PASSWORD_RESET_|LOG_REQUESTS$|EMBEDDED_POSTGRES_TCP$)/;

export interface StackProcess {
  info: StackInfo;
  stop(): Promise<void>;
}

const ROOT = resolve(import.meta.dir, "../..");

/** Starts the stack in a child process and waits (≤ 60 s) for its URLs. */
export async function startStackProcess(
  options: {
    logRequests?: boolean;
    log?: (line: string) => void;
    /** Run the API process under Bun's CPU profiler; the profile (.cpuprofile + .md) lands here on stop. */
    profileDir?: string;
  } = {},
): Promise<StackProcess> {
  const settings = loadSettings(options.logRequests ?? false);
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" };
  for (const [name, value] of Object.entries(process.env)) if (PASSTHROUGH.test(name) && value !== undefined) env[name] = value;
  Object.assign(env, settings);
  for (const [name, value] of Object.entries(process.env)) if (name in settings && value !== undefined) env[name] = value; // explicit overrides win

  let resolveInfo!: (info: StackInfo) => void;
  const ready = new Promise<StackInfo>((r) => (resolveInfo = r));
  const profile = options.profileDir ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${options.profileDir}`] : [];
  const child = Bun.spawn(["bun", ...profile, resolve(import.meta.dir, "stack.ts")], {
    cwd: ROOT,
    env,
    stdin: "ignore",
    // Request log lines (when enabled) go nowhere: a pipe nobody reads would block the server.
    stdout: "ignore",
    stderr: "pipe",
    ipc(message) {
      if (message && typeof message === "object" && "apiUrl" in message) resolveInfo(message as StackInfo);
    },
  });
  const stderr = new Response(child.stderr).text();
  const exited = child.exited.then(async (code) => {
    throw new Error(`the stack process exited (${code}) before it was ready:\n${(await stderr).slice(-4000)}`);
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the stack process did not start within 60 s")), 60_000);
  });
  let info: StackInfo;
  try {
    info = await Promise.race([ready, exited, timeout]);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  } finally {
    clearTimeout(timer);
  }
  exited.catch(() => {}); // from now on an exit is expected (stop()).
  options.log?.(`stack: API ${info.apiUrl} (pid ${info.apiPid}), uncached API ${info.uncachedApiUrl}, PostgreSQL ${info.database}`);
  return {
    info,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await child.exited;
      clearTimeout(killer);
    },
  };
}

async function runChild() {
  const say = (line: string) => process.stderr.write(`[stack] ${line}\n`);
  const quiet = () => {};
  let stack: EmbeddedStack | undefined;
  let uncached: RunningApi | undefined;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await uncached?.stop().catch(() => {});
    await stack?.stop().catch(() => {});
    process.exit(code);
  };
  process.on("SIGTERM", () => void stop(0));
  process.on("SIGINT", () => void stop(0));
  process.on("disconnect", () => void stop(0));

  try {
    const logRequests = process.env.LOG_REQUESTS === "true";
    const requestLog = logRequests ? (line: string) => void process.stdout.write(line + "\n") : quiet;
    stack = await startEmbeddedStack({ port: 0, database: "autoaudit_load", log: say, requestLog, env: process.env });
    const env: Record<string, string | undefined> = {
      ...process.env,
      DATABASE_URL: stack.authenticatorUrl,
      PGRST_DB_URI: stack.authenticatorUrl,
      PGRST_JWT_SECRET: stack.jwtSecret,
      REDIS_URL: stack.redisUrl,
      POSTGREST_URL: undefined,
      PORT: "0",
      CACHE_TTL_SECONDS: "0",
    };
    uncached = await startApi(loadConfig(env), requestLog);
    const settings: Record<string, string> = {};
    for (const [name, value] of Object.entries(process.env)) if (PASSTHROUGH.test(name) && value !== undefined && name !== "PGRST_JWT_SECRET") settings[name] = value;
    const info: StackInfo = {
      apiUrl: stack.apiUrl,
      uncachedApiUrl: uncached.url,
      databaseUrl: stack.databaseUrl,
      authenticatorUrl: stack.authenticatorUrl,
      redisUrl: stack.redisUrl,
      jwtSecret: stack.jwtSecret,
      database: "autoaudit_load",
      apiPid: process.pid,
      signInConcurrency: stack.signInConcurrency,
      transport: stack.transport,
      settings,
    };
    process.send?.(info);
  } catch (error) {
    say(`cannot start: ${error instanceof Error ? error.stack ?? error.message : String(error)}`);
    await stop(1);
  }
}

if (import.meta.main) await runChild();
