// `bun run seed`: loads db/seed.sql (demo tenant, CIS Microsoft 365 rules, two scans) into
// DATABASE_URL, or into the embedded development cluster under .data/ when it is not set.
// Idempotent: a second run changes nothing.
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { loadDatabaseCommandConfig } from "../config";
import { connectPostgres } from "../db/connection";
import { startEmbeddedPostgres } from "../stack/embedded-postgres";
import { dbmate } from "../stack/migrate";

const ROOT = resolve(import.meta.dir, "../../..");
export const SEED_FILE = resolve(ROOT, "db/seed.sql");
export const DEMO_EMAIL = "demo@autoaudit.dev";
export const DEMO_TENANT_ID = "d3e0c0de-0000-4000-8000-000000000001";

export interface SeedResult {
  email: string;
  /** Set only when this run created the demo user. */
  password?: string;
  tenantId: string;
  rules: number;
  scans: number;
}

/** Creates the demo user if missing, then applies db/seed.sql in one transaction. */
export async function seed(databaseUrl: string, demoPassword?: string): Promise<SeedResult> {
  const sql = connectPostgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const [schema] = await sql`select to_regnamespace('compliance') is not null as ready`;
    if (!schema?.ready) throw new Error("the database is not migrated (no compliance schema): run `bun run migrate` first");

    let password: string | undefined;
    const [existing] = await sql`select id from auth.users where email = ${DEMO_EMAIL}`;
    if (!existing) {
      password = demoPassword ?? randomBytes(12).toString("base64url");
      await sql`select api.sign_up(${DEMO_EMAIL}, ${password}, 'Demo', 'Auditor')`;
    }
    const script = await Bun.file(SEED_FILE).text();
    await sql.begin((tx) => tx.unsafe(script));

    const [counts] = await sql`
      select (select count(*) from compliance.rules where tenant_id = ${DEMO_TENANT_ID})::int as rules,
             (select count(*) from compliance.scans where tenant_id = ${DEMO_TENANT_ID})::int as scans`;
    return { email: DEMO_EMAIL, password, tenantId: DEMO_TENANT_ID, rules: counts!.rules, scans: counts!.scans };
  } finally {
    await sql.end();
  }
}

if (import.meta.main) {
  const config = (() => {
    try {
      return loadDatabaseCommandConfig();
    } catch (error) {
      return cannotStart(error);
    }
  })();
  const external = config.databaseUrl;
  const embedded = external
    ? undefined
    : await startEmbeddedPostgres({ dataDir: resolve(ROOT, ".data/postgres"), database: "autoaudit" }).catch(cannotStart);
  try {
    const url = external ?? embedded!.url;
    if (embedded) await dbmate(url, "up");
    const result = await seed(url, config.seedDemoPassword);
    console.log(`seeded ${external ? "DATABASE_URL" : `embedded PostgreSQL in ${embedded!.dataDir}`}: tenant ${result.tenantId} with ${result.rules} rules and ${result.scans} scans`);
    console.log(
      result.password
        ? `demo user ${result.email}, password ${result.password}${config.seedDemoPassword ? " (from SEED_DEMO_PASSWORD)" : " (generated; set SEED_DEMO_PASSWORD to choose it)"}`
        : `demo user ${result.email} already existed; its password is unchanged`,
    );
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  } finally {
    await embedded?.stop();
  }
}

function cannotStart(error: unknown): never {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
}
