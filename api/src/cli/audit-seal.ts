import type postgres from "postgres";
import { SEAL_BATCH } from "../gateway/audit-sealer";

/**
 * Links what has committed into the audit chains before a command reads them (audit:verify,
 * audit:export): audit.seal, waiting for a sealer at work, until a batch is not full.
 */
export async function sealCommitted(sql: postgres.Sql): Promise<number> {
  let total = 0;
  for (;;) {
    const [row] = await sql<{ n: string }[]>`select audit.seal() as n`;
    const n = Number(row?.n ?? 0);
    total += n;
    if (n < SEAL_BATCH) return total;
  }
}
