// `bun run audit:verify`: recomputes every hash chain of the audit trail (audit.verify_chain)
// in DATABASE_URL (an owner or superuser URL) and reports the first broken link of each.
// Exit 0 when every chain is intact, 1 when one is broken, 2 on a usage or connection error.
import { connectPostgres } from "../db/connection";

interface ChainReport {
  chain: string;
  ok: boolean;
  checked: number;
  first_broken_id: number | null;
}

export async function verifyAuditTrail(databaseUrl: string): Promise<ChainReport[]> {
  const sql = connectPostgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`select audit.verify_chain(h.chain) as report from audit.chain_heads h order by h.chain`;
    return rows.map((r) => r.report as ChainReport);
  } finally {
    await sql.end();
  }
}

if (import.meta.main) {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error("audit:verify: set DATABASE_URL to the database (an owner or superuser URL)");
    process.exit(2);
  }
  try {
    const reports = await verifyAuditTrail(url);
    for (const r of reports) {
      console.log(r.ok ? `ok      ${r.chain} (${r.checked} events)` : `BROKEN  ${r.chain}: first broken link at event ${r.first_broken_id} (${r.checked} intact before it)`);
    }
    process.exit(reports.every((r) => r.ok) ? 0 : 1);
  } catch (error) {
    console.error(`audit:verify: ${(error as Error).message}`);
    process.exit(2);
  }
}
