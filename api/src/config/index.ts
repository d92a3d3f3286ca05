/**
 * The one configuration module: every process (API, engine, worker, mailer, the CLIs) reads the
 * environment through a schema here, once at start, and passes the typed result down. Nothing
 * else reads `process.env` (except to hand an environment to a child process).
 *
 * docs/reference/configuration.md is generated from CONSUMERS (`bun run docs:config`).
 */
import type { TObject } from "@sinclair/typebox";
import { AccountEnv } from "./accounts";
import { ApiEnv } from "./api";
import { AuditPruneEnv, AuditReadEnv } from "./audit";
import { EngineEnv } from "./engine";
import { MailEnv, MailerEnv } from "./mailer";
import { DatabaseCommandEnv, DevEnv, EmbeddedPostgresEnv } from "./stack";
import { WorkerEnv } from "./worker";

export * from "./api";
export * from "./env";
export * from "./oidc";
export { ACCOUNT_SETTINGS, AccountEnv, loadAccountSettings, type AccountSettings } from "./accounts";
export { AuditPruneEnv, AuditReadEnv, AuditRetentionEnv, loadAuditPruneConfig, loadAuditReadConfig, MAX_RETENTION_DAYS, type AuditPruneConfig } from "./audit";
export {
  defaultEngineConfig, DEFAULT_MAX_BODY_BYTES, EngineEnv, engineConfigFromEnv, engineConfigProblems, readEngineConfig, secretIsJwk, validateEngineConfig,
  type EngineConfig, type TxEnd,
} from "./engine";
export { loadMailerConfig, loadMailSettings, MailEnv, MailerEnv, type MailConfig, type MailerConfig, type MailSettings } from "./mailer";
export { DatabaseCommandEnv, DevEnv, EmbeddedPostgresEnv, loadDatabaseCommandConfig, loadDevConfig, loadEmbeddedPostgresHome, type DevConfig } from "./stack";
export { loadWorkerConfig, WorkerEnv, type WorkerConfig } from "./worker";

export interface Consumer {
  /** Short name, used in the reference's "read by" column. */
  id: string;
  title: string;
  /** Who reads it and when. */
  summary: string;
  schema: TObject;
}

/** Every schema, as the reference lists them. */
export const CONSUMERS: Consumer[] = [
  { id: "api", title: "API", summary: "`bun run start`, `bun run dev`, compose's `api`: api/src/config/api.ts.", schema: ApiEnv },
  { id: "engine", title: "Embedded engine", summary: "`bun run rpc-engine`, and the API's in-process engine when POSTGREST_URL is unset (PostgREST's own names, so one `.env` drives both): api/src/config/engine.ts.", schema: EngineEnv },
  { id: "worker", title: "Scan worker", summary: "`bun run worker`: api/src/config/worker.ts.", schema: WorkerEnv },
  { id: "mail", title: "Mail", summary: "`bun run mailer`, and the mailer `bun run dev` runs in-process: api/src/config/mailer.ts.", schema: MailEnv },
  { id: "mailer", title: "Mailer process", summary: "`bun run mailer` (compose's `mailer`) besides the mail settings above.", schema: MailerEnv },
  { id: "audit:prune", title: "Audit retention", summary: "`bun run audit:prune`; the worker reads the same retention: api/src/config/audit.ts.", schema: AuditPruneEnv },
  { id: "audit:verify/export", title: "Audit verification and export", summary: "`bun run audit:verify`, `bun run audit:export`.", schema: AuditReadEnv },
  { id: "accounts", title: "Account settings", summary: "Rows of auth.settings written by `bun run migrate up` and `bun run dev`; unset deletes the row and the SQL default applies: api/src/config/accounts.ts.", schema: AccountEnv },
  { id: "dev", title: "Development stack", summary: "`bun run dev` (and the test stack): api/src/config/stack.ts.", schema: DevEnv },
  { id: "embedded-postgres", title: "Embedded PostgreSQL", summary: "`bun run dev`, `bun run migrate`/`seed` without DATABASE_URL, `bun test`, when run as root.", schema: EmbeddedPostgresEnv },
  { id: "migrate/seed", title: "Database commands", summary: "`bun run migrate`, `bun run seed`.", schema: DatabaseCommandEnv },
];
