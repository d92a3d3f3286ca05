/** The audit trail's retention (worker, `bun run audit:prune`) and the audit commands' database. */
import { Type } from "@sinclair/typebox";
import { POSTGRES_PROTOCOLS, Shared, Var, readEnv, throwIfProblems, type Env } from "./env";

export const MAX_RETENTION_DAYS = 36_500;

export const AuditRetentionEnv = Type.Object({
  AUDIT_RETENTION_DAYS: Var.optionalInteger({ minimum: 1, maximum: MAX_RETENTION_DAYS, unit: "days", defaultText: "unset: kept forever", description: "Audit events older than this are pruned (the worker hourly, or `bun run audit:prune`), leaving a checkpoint per chain so the rest stays verifiable." }),
  AUDIT_PRUNE_DATABASE_URL: Var.url({ protocols: POSTGRES_PROTOCOLS, description: "Prune with this URL (a login that is a member of audit_pruner). Default: the worker's URL, or DATABASE_URL for `bun run audit:prune`." }),
});

/** `bun run audit:prune`. */
export const AuditPruneEnv = Type.Object({ ...AuditRetentionEnv.properties, DATABASE_URL: Shared.DATABASE_URL });

/** `bun run audit:verify`, `bun run audit:export`: an owner or superuser URL. */
export const AuditReadEnv = Type.Object({ DATABASE_URL: Shared.DATABASE_URL });

export interface AuditPruneConfig {
  /** Undefined: the trail is kept forever. */
  retentionDays?: number;
  /** AUDIT_PRUNE_DATABASE_URL, else DATABASE_URL; undefined when neither is set. */
  databaseUrl?: string;
}

export function loadAuditPruneConfig(env: Env = process.env): AuditPruneConfig {
  const problems: string[] = [];
  const v = readEnv(AuditPruneEnv, env, problems);
  throwIfProblems(problems);
  return { retentionDays: v.AUDIT_RETENTION_DAYS, databaseUrl: v.AUDIT_PRUNE_DATABASE_URL ?? v.DATABASE_URL };
}

/** DATABASE_URL of the read-only audit commands; undefined when unset. */
export function loadAuditReadConfig(env: Env = process.env): { databaseUrl?: string } {
  const problems: string[] = [];
  const v = readEnv(AuditReadEnv, env, problems);
  throwIfProblems(problems);
  return { databaseUrl: v.DATABASE_URL };
}
