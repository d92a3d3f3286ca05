// `bun run mailer`: sends the mail outbox (auth.mail_outbox) over SMTP. Its own process, so the
// mail goes out whether or not the scan worker runs; run one or several (they share the work:
// FOR UPDATE SKIP LOCKED and a lease per mail). `bun run dev` runs one in-process.
//
//   SMTP_URL                 the relay, e.g. smtps://user:pass@smtp.example.com:465 (required)
//   MAIL_FROM                the From header (default "AutoAudit <no-reply@autoaudit.local>")
//   PUBLIC_APP_URL           the base of the links in the mails (default http://localhost:3000)
//   MAILER_DATABASE_URL      connect with this URL instead of DATABASE_URL (a login role that is
//                            a member of mailer)
//   MAILER_DB_ROLE           role the connections switch to (default mailer: the functions of
//                            schema mail and nothing else); empty to stay the URL's role
//   MAIL_POLL_MS             poll interval besides the NOTIFY wake-up (default 1000)
//   MAIL_LEASE_MS            how long a claimed mail is this process's (default 60000)
//   MAIL_RETRY_BASE_MS       first backoff after a failure, doubled each time (default 5000)
//   MAIL_RETRY_MAX_MS        longest backoff (default 3600000)
import { connectPostgres } from "../db/connection";
import { Mailer, mailEnv } from "../mail/mailer";

const log = (event: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...event }));

function intEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer between ${min} and ${max} (got "${raw}")`);
  return value;
}

async function main() {
  const databaseUrl = process.env.MAILER_DATABASE_URL?.trim() || process.env.DATABASE_URL?.trim();
  const mail = mailEnv(process.env);
  if (!databaseUrl || !mail) {
    console.error("bun run mailer needs DATABASE_URL (or MAILER_DATABASE_URL) and SMTP_URL");
    process.exit(2);
  }
  const role = process.env.MAILER_DB_ROLE?.trim() ?? "mailer";
  const sql = connectPostgres(databaseUrl, { max: 2, onnotice: () => {}, connection: role ? { role } : {} });
  const mailer = new Mailer({
    sql,
    ...mail,
    pollMs: intEnv("MAIL_POLL_MS", 1000, 10, 600_000),
    leaseMs: intEnv("MAIL_LEASE_MS", 60_000, 100, 3_600_000),
    retryBaseMs: intEnv("MAIL_RETRY_BASE_MS", 5000, 10, 3_600_000),
    retryMaxMs: intEnv("MAIL_RETRY_MAX_MS", 3_600_000, 10, 86_400_000),
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
