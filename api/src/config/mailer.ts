/** The mailer: `bun run mailer`, and the one `bun run dev` runs in-process (api/src/mail). */
import { Type } from "@sinclair/typebox";
import { POSTGRES_PROTOCOLS, Shared, Var, readEnv, throwIfProblems, type Env } from "./env";

/** What both mailers read. */
export const MailEnv = Type.Object({
  SMTP_URL: Var.url({ protocols: ["smtp:", "smtps:"], description: "The relay, e.g. smtps://user:password@smtp.example.com:465. Required by `bun run mailer`; `bun run dev` without it sends to MailDev." }),
  MAIL_FROM: Var.string({ default: "AutoAudit <no-reply@autoaudit.local>", description: "The From header." }),
  PUBLIC_APP_URL: Var.string({ default: "http://localhost:3000", description: "The base of the links in the mails (/verify-email, /reset-password)." }),
});

/** `bun run mailer`. */
export const MailerEnv = Type.Object({
  ...MailEnv.properties,
  DATABASE_URL: Shared.DATABASE_URL,
  MAILER_DATABASE_URL: Var.url({ protocols: POSTGRES_PROTOCOLS, description: "Connect with this URL instead of DATABASE_URL (a login role that is a member of mailer)." }),
  MAILER_DB_ROLE: Var.string({ default: "mailer", emptyIsValue: true, description: "Role the connections switch to (the functions of schema mail and nothing else); empty to stay the URL's role." }),
  MAIL_POLL_MS: Var.integer({ default: 1000, minimum: 10, maximum: 600_000, unit: "milliseconds", description: "Poll interval besides the NOTIFY wake-up." }),
  MAIL_LEASE_MS: Var.integer({ default: 60_000, minimum: 100, maximum: 3_600_000, unit: "milliseconds", description: "How long a claimed mail is this process's." }),
  MAIL_RETRY_BASE_MS: Var.integer({ default: 5000, minimum: 10, maximum: 3_600_000, unit: "milliseconds", description: "First backoff after a failure, doubled each time." }),
  MAIL_RETRY_MAX_MS: Var.integer({ default: 3_600_000, minimum: 10, maximum: 86_400_000, unit: "milliseconds", description: "Longest backoff." }),
});

export interface MailConfig {
  smtpUrl: string;
  from: string;
  publicAppUrl: string;
}

/** The mail settings before a development stack fills in MailDev for a missing SMTP_URL. */
export type MailSettings = Omit<MailConfig, "smtpUrl"> & { smtpUrl?: string };

export interface MailerConfig {
  databaseUrl: string;
  /** Empty: stay the URL's role. */
  dbRole: string;
  mail: MailConfig;
  pollMs: number;
  leaseMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

/** SMTP_URL (undefined when unset), MAIL_FROM and PUBLIC_APP_URL. */
export function loadMailSettings(env: Env = process.env): MailSettings {
  const problems: string[] = [];
  const v = readEnv(MailEnv, env, problems);
  throwIfProblems(problems);
  return { smtpUrl: v.SMTP_URL, from: v.MAIL_FROM, publicAppUrl: v.PUBLIC_APP_URL };
}

export function loadMailerConfig(env: Env = process.env): MailerConfig {
  const problems: string[] = [];
  const v = readEnv(MailerEnv, env, problems);
  const databaseUrl = v.MAILER_DATABASE_URL ?? v.DATABASE_URL;
  if (!databaseUrl && !problems.some((p) => /^(MAILER_)?DATABASE_URL /.test(p))) problems.push("DATABASE_URL (or MAILER_DATABASE_URL) is required: the mail outbox's PostgreSQL");
  if (!v.SMTP_URL && !problems.some((p) => p.startsWith("SMTP_URL "))) problems.push("SMTP_URL is required: the relay the mailer sends through (e.g. smtps://user:password@smtp.example.com:465)");
  throwIfProblems(problems);
  return {
    databaseUrl: databaseUrl!,
    dbRole: v.MAILER_DB_ROLE,
    mail: { smtpUrl: v.SMTP_URL!, from: v.MAIL_FROM, publicAppUrl: v.PUBLIC_APP_URL },
    pollMs: v.MAIL_POLL_MS,
    leaseMs: v.MAIL_LEASE_MS,
    retryBaseMs: v.MAIL_RETRY_BASE_MS,
    retryMaxMs: v.MAIL_RETRY_MAX_MS,
  };
}
