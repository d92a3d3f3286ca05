// `bun run mailer`: sends the mail outbox (auth.mail_outbox) over SMTP. Its own process, so the
// mail goes out whether or not the scan worker runs; run one or several (they share the work:
// FOR UPDATE SKIP LOCKED and a lease per mail). `bun run dev` runs one in-process.
//
// Its variables (SMTP_URL, MAIL_FROM, PUBLIC_APP_URL, MAILER_DATABASE_URL, MAILER_DB_ROLE,
// MAIL_POLL_MS …): api/src/config/mailer.ts (docs/reference/configuration.md).
import { connectPostgres } from "../db/connection";
import { loadMailerConfig } from "../config";
import { configOrExit } from "./config-or-exit";
import { Mailer } from "../mail/mailer";

const log = (event: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...event }));

async function main() {
  const config = configOrExit(loadMailerConfig, "bun run mailer: cannot start, ");
  const { mail, dbRole: role } = config;
  const sql = connectPostgres(config.databaseUrl, { max: 2, onnotice: () => {}, connection: role ? { role } : {} });
  const mailer = new Mailer({
    sql,
    ...mail,
    pollMs: config.pollMs,
    leaseMs: config.leaseMs,
    retryBaseMs: config.retryBaseMs,
    retryMaxMs: config.retryMaxMs,
    log,
  });
  await mailer.start();
  log({ event: "mailer_started", smtp: new URL(mail.smtpUrl).host, db_role: role || null });
  const stop = async (signal: string) => {
    log({ event: "mailer_stopping", signal });
    await mailer.stop();
    await sql.end({ timeout: 5 });
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
