// `bun run audit:prune`: deletes audit events older than AUDIT_RETENTION_DAYS (unset: the trail
// is kept forever, nothing is done) through retention.prune_audit_trail, which leaves a
// 'trail_pruned' checkpoint per chain so the rest stays verifiable. The worker runs the same
// every hour when AUDIT_RETENTION_DAYS is set (api/src/cli/worker.ts); this command is for
// deployments that run pruning on their own schedule, or once by hand.
//
//   AUDIT_PRUNE_DATABASE_URL  connect with this URL (default DATABASE_URL); its login must be a
//                             member of audit_pruner, the role the connection switches to:
//                             it may run the prune function and nothing else
// Exit 0 when done (or nothing to do), 2 on a configuration or database error.
import type { Sql } from "postgres";
import { loadAuditPruneConfig } from "../config";
import { configOrExit } from "./config-or-exit";
import { connectPostgres } from "../db/connection";

export const AUDIT_PRUNER_ROLE = "audit_pruner";

export interface PruneResult {
  pruned_events: number;
  chains: { chain: string; pruned_events: number; pruned_through_id: number }[];
}

/** One pool as audit_pruner (a startup parameter, so every connection is that role). */
export function connectPruner(databaseUrl: string): Sql {
  return connectPostgres(databaseUrl, { max: 1, onnotice: () => {}, connection: { role: AUDIT_PRUNER_ROLE } });
}

/** Prunes what is older than `days` days (the database's clock). */
export async function pruneAuditTrail(sql: Sql, days: number): Promise<PruneResult> {
  const [row] = await sql`select retention.prune_audit_trail(now() - make_interval(days => ${days}::int)) as result`;
  const result = row!.result;
  return (typeof result === "string" ? JSON.parse(result) : result) as PruneResult;
}

if (import.meta.main) {
  const config = configOrExit(loadAuditPruneConfig, "audit:prune: ");
  const days = config.retentionDays;
  if (days === undefined) {
    console.log("audit:prune: AUDIT_RETENTION_DAYS is not set: the audit trail is kept forever, nothing pruned");
    process.exit(0);
  }
  const url = config.databaseUrl;
  if (!url) {
    console.error("audit:prune: set AUDIT_PRUNE_DATABASE_URL or DATABASE_URL (a login that is a member of audit_pruner)");
    process.exit(2);
  }
  const sql = connectPruner(url);
  try {
    const result = await pruneAuditTrail(sql, days);
    console.log(`audit:prune: ${result.pruned_events} events older than ${days} days pruned from ${result.chains.length} chains`);
    for (const c of result.chains) console.log(`  ${c.chain}: ${c.pruned_events} events, through event ${c.pruned_through_id}`);
    await sql.end();
    process.exit(0);
  } catch (error) {
    console.error(`audit:prune: ${(error as Error).message}`);
    await sql.end({ timeout: 1 });
    process.exit(2);
  }
}
