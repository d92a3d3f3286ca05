// `bun run migrate [up|down|rollback|status|new <name>]`: dbmate against DATABASE_URL, or against
// the embedded development cluster under .data/ when DATABASE_URL is not set.
import { resolve } from "node:path";
import { dbmate, MIGRATIONS_DIR, type DbmateCommand } from "../stack/migrate";
import { startEmbeddedPostgres } from "../stack/embedded-postgres";
import { applyAccountSettings } from "../stack/account-settings";
import { loadAccountSettings, loadDatabaseCommandConfig, type AccountSettings } from "../config";

const ROOT = resolve(import.meta.dir, "../../..");
const [command = "up", ...rest] = process.argv.slice(2);
const commands = ["up", "down", "rollback", "status", "migrate", "new"];

if (!commands.includes(command)) {
  console.error(`usage: bun run migrate [${commands.join("|")}]`);
  process.exit(2);
}

if (command === "new") {
  const name = rest[0];
  if (!name || !/^[a-z0-9_]+$/.test(name)) {
    console.error("usage: bun run migrate new <snake_case_name>");
    process.exit(2);
  }
  const proc = Bun.spawn([resolve(ROOT, "node_modules/.bin/dbmate"), "--migrations-dir", MIGRATIONS_DIR, "new", name], { stdio: ["inherit", "inherit", "inherit"] });
  process.exit(await proc.exited);
}

// Both read before anything starts, so a bad value stops the command before it migrates.
let external: string | undefined;
let settings: AccountSettings;
try {
  external = loadDatabaseCommandConfig().databaseUrl;
  settings = loadAccountSettings();
} catch (error) {
  cannotStart(error);
}
const embedded = external ? undefined : await startEmbeddedPostgres({ dataDir: resolve(ROOT, ".data/postgres"), database: "autoaudit" }).catch(cannotStart);
try {
  const url = external ?? embedded!.url;
  console.error(`dbmate ${command} → ${external ? "DATABASE_URL" : `embedded PostgreSQL in ${embedded!.dataDir}`}`);
  // `down` in dbmate means "roll back the latest migration"; it is the same as rollback.
  const out = await dbmate(url, (command === "down" ? "rollback" : command) as DbmateCommand, ...rest);
  process.stdout.write(out);
  // The account settings (SESSION_*_DAYS, REFRESH_REUSE_GRACE_SECONDS, AUTH_REQUIRE_VERIFIED_EMAIL …)
  // live in auth.settings: written from this environment after every `up`.
  if (command === "up") {
    await applyAccountSettings(url, settings);
    console.error("account settings applied from the environment (auth.settings)");
  }
} catch (error) {
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
} finally {
  await embedded?.stop();
}

function cannotStart(error: unknown): never {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
}
