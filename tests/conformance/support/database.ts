import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";

const FIXTURES_DIR = join(import.meta.dir, "..", "fixtures");
const FIXTURE_ROLES = ["postgrest_test_anonymous", "postgrest_test_default_role", "postgrest_test_author"];

export interface ConformanceDatabase {
  name: string;
  /** Superuser (owner) URL of the fresh database. */
  url: string;
  drop(): Promise<void>;
}

/** The URL of another database on the same server, with the same credentials. */
export function databaseUrlOn(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

function connect(url: string) {
  // Fixtures load with the session time zone UTC, as the reference loads them with PGTZ=UTC.
  return postgres(url, { max: 1, onnotice: () => {}, connection: { TimeZone: "UTC", application_name: "conformance" } });
}

/**
 * Creates `conformance_<random>` (template0, UTF8, collation and ctype C) on the server of
 * `serverUrl`, which must be a superuser URL, and loads tests/conformance/fixtures/*.sql in name order.
 */
export async function createConformanceDatabase(serverUrl: string): Promise<ConformanceDatabase> {
  const name = `conformance_${randomBytes(6).toString("hex")}`;
  const admin = connect(databaseUrlOn(serverUrl, "postgres"));
  const url = databaseUrlOn(serverUrl, name);
  try {
    await admin.unsafe(`create database ${name} template template0 encoding 'UTF8' lc_collate 'C' lc_ctype 'C'`);
  } finally {
    await admin.end();
  }
  const drop = async () => {
    const sql = connect(databaseUrlOn(serverUrl, "postgres"));
    try {
      await sql.unsafe(`drop database if exists ${name} with (force)`);
      await dropRolesIfUnused(sql);
    } finally {
      await sql.end();
    }
  };
  try {
    await loadFixtures(url);
  } catch (error) {
    await drop();
    throw error;
  }
  return { name, url, drop };
}

export function fixtureFiles(): string[] {
  return readdirSync(FIXTURES_DIR)
    .filter((file) => file.endsWith(".sql"))
    .sort()
    .map((file) => join(FIXTURES_DIR, file));
}

async function loadFixtures(url: string) {
  const sql = connect(url);
  try {
    for (const file of fixtureFiles()) {
      try {
        // One simple-protocol round trip per file; each file is one transaction.
        await sql.unsafe(`begin;\n${readFileSync(file, "utf8")}\ncommit;`).simple();
      } catch (error) {
        throw new Error(`fixture ${file} failed to load: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  } finally {
    await sql.end();
  }
}

/**
 * The roles are cluster-wide. Drop them when nothing else on the server still uses them
 * (another database holding grants to them makes DROP ROLE fail; leave them then).
 */
async function dropRolesIfUnused(sql: postgres.Sql) {
  for (const role of FIXTURE_ROLES) {
    try {
      await sql.unsafe(`drop role if exists ${role}`);
    } catch {
      // Still referenced from another database (a concurrent run): it owns the role now.
    }
  }
}
