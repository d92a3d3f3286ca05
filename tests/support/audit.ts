import type postgres from "postgres";

/**
 * Links what has committed into the audit chains now, as the API's sealer does every
 * AUDIT_SEAL_INTERVAL_MS: for tests that read hashes or chain positions right after an action.
 */
export async function sealAuditTrail(sql: postgres.Sql): Promise<number> {
  const [row] = await sql<{ n: string }[]>`select audit.seal() as n`;
  return Number(row!.n);
}
