// `bun run audit:verify`: recomputes every hash chain of the audit trail (audit.verify_chain)
// in DATABASE_URL (an owner or superuser URL) and reports the first broken link of each.
// `bun run audit:verify --file FILE`: checks an export of `bun run audit:export` from the file
// alone, without any database (api/src/cli/audit-file.ts).
// Exit 0 when every chain is intact, 1 when one is broken, 2 on a usage or connection error.
import { loadAuditReadConfig } from "../config";
import { configOrExit } from "./config-or-exit";
import { readFileSync } from "node:fs";
import { connectPostgres } from "../db/connection";
import { sealCommitted } from "./audit-seal";
import { verifyExport } from "./audit-file";

interface ChainReport {
  chain: string;
  ok: boolean;
  checked: number;
  first_broken_id: number | null;
}

export async function verifyAuditTrail(databaseUrl: string): Promise<ChainReport[]> {
  const sql = connectPostgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    // what has committed is linked first, so every event is checked as part of its chain
    await sealCommitted(sql);
    const rows = await sql`select audit.verify_chain(h.chain) as report from audit.chain_heads h order by h.chain`;
    return rows.map((r) => r.report as ChainReport);
  } finally {
    await sql.end();
  }
}

function verifyFile(path: string): never {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    console.error(`audit:verify: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    process.exit(2);
  }
  try {
    const r = verifyExport(text);
    console.log(r.ok
      ? `ok      ${r.chain} (${r.checked} events, from the file alone)`
      : `BROKEN  ${r.chain}: first broken link at event ${r.first_broken_id} (${r.checked} intact before it): ${r.reason}`);
    process.exit(r.ok ? 0 : 1);
  } catch (error) {
    console.error(`audit:verify: ${path}: ${(error as Error).message}`);
    process.exit(2);
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  if (args.length > 0) {
    const file = args[0] === "--file" ? args[1] : args[0]?.startsWith("--file=") ? args[0].slice("--file=".length) : undefined;
    if (!file || args.length > (args[0] === "--file" ? 2 : 1)) {
      console.error("usage: bun run audit:verify              (every chain in DATABASE_URL)\n       bun run audit:verify --file FILE  (an export of bun run audit:export)");
      process.exit(2);
    }
    verifyFile(file);
  }
  const url = configOrExit(loadAuditReadConfig, "audit:verify: ").databaseUrl;
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
