import { resolve } from "node:path";
import postgres from "postgres";

const ROOT = resolve(import.meta.dir, "../../..");
export const MIGRATIONS_DIR = resolve(ROOT, "migrations");
const DBMATE = resolve(ROOT, "node_modules/.bin/dbmate");

export type DbmateCommand = "up" | "down" | "status" | "rollback" | "migrate";

/** dbmate talks to local servers without TLS unless the URL asks for it. */
export function dbmateUrl(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  if (!url.searchParams.has("sslmode")) url.searchParams.set("sslmode", "disable");
  return url.toString();
}

/** Runs the dbmate binary from its npm package against `databaseUrl`. Returns its output. */
export async function dbmate(databaseUrl: string, command: DbmateCommand, ...args: string[]): Promise<string> {
  const proc = Bun.spawn(
    [DBMATE, "--url", dbmateUrl(databaseUrl), "--migrations-dir", MIGRATIONS_DIR, "--no-dump-schema", "--wait", command, ...args],
    // dbmate's own environment: this process's (PATH …), without DATABASE_URL, which dbmate would
    // otherwise prefer over --url. Not configuration.
    { stdout: "pipe", stderr: "pipe", env: { ...process.env, DATABASE_URL: "" } },
  );
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`dbmate ${command} failed (exit ${code}): ${(err || out).trim()}`);
  return out;
}

/** Rolls back every applied migration, newest first. */
export async function migrateDownToZero(databaseUrl: string): Promise<void> {
  while (true) {
    const status = await dbmate(databaseUrl, "status");
    const applied = status.match(/^\[X\]/gm)?.length ?? 0;
    if (applied === 0) return;
    await dbmate(databaseUrl, "rollback");
  }
}

/**
 * The authenticator's password lives only in the environment; migrations create the role
 * without one. Called after `dbmate up` with the superuser URL.
 */
export async function setAuthenticatorPassword(adminUrl: string, password: string): Promise<void> {
  if (password.length < 16) throw new Error("AUTHENTICATOR_PASSWORD must be at least 16 characters");
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    // ALTER ROLE takes no bind parameters; quote the literal with the server's own function.
    const [row] = await sql`select format('alter role authenticator password %L', ${password}::text) as stmt`;
    await sql.unsafe(row!.stmt as string);
  } finally {
    await sql.end();
  }
}

/** A URL for the same server and database, logged in as the authenticator. */
export function authenticatorUrl(adminUrl: string, password: string): string {
  const url = new URL(adminUrl);
  url.username = "authenticator";
  url.password = encodeURIComponent(password);
  return url.toString();
}
