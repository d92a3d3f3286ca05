// `bun run audit:export <tenant-id> [--out FILE]` / `bun run audit:export --account [--out FILE]`:
// one chain of the audit trail as JSON Lines with its hashes (format: api/src/cli/audit-file.ts),
// to stdout or FILE, read in one snapshot so the header's head is the last line's hash. Events
// committed but not yet linked into the chain are linked first (audit.seal).
// `bun run audit:verify --file FILE` checks an export without the database.
// DATABASE_URL: an owner or superuser URL (as for audit:verify). Progress goes to stderr.
// Exit 0 when written, 2 on a usage, connection or unknown-chain error.
import { loadAuditReadConfig } from "../config";
import { configOrExit } from "./config-or-exit";
import { createWriteStream, type WriteStream } from "node:fs";
import { connectPostgres } from "../db/connection";
import { sealCommitted } from "./audit-seal";
import { EXPORT_VERSION } from "./audit-file";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const USAGE = "usage: bun run audit:export <tenant-id> [--out FILE]\n       bun run audit:export --account [--out FILE]";

export class UsageError extends Error {}

export interface ExportOptions {
  /** a tenant id, or "account" for the account chain */
  chain: string;
  out?: string;
}

export function parseExportArgs(argv: string[]): ExportOptions {
  let chain: string | undefined;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--account") {
      if (chain) throw new UsageError("give one tenant id or --account, not both");
      chain = "account";
    } else if (arg === "--out" || arg === "-o") {
      out = argv[++i];
      if (!out) throw new UsageError(`${arg} needs a file name`);
    } else if (arg.startsWith("--out=")) {
      out = arg.slice("--out=".length);
      if (!out) throw new UsageError("--out needs a file name");
    } else if (arg.startsWith("-")) {
      throw new UsageError(`unknown option ${arg}`);
    } else {
      if (chain) throw new UsageError("give one tenant id or --account, not both");
      if (!UUID.test(arg)) throw new UsageError(`"${arg.slice(0, 80)}" is not a tenant id (a UUID)`);
      chain = arg.toLowerCase();
    }
  }
  if (!chain) throw new UsageError("which trail? give a tenant id, or --account");
  return { chain, ...(out ? { out } : {}) };
}

/** Writes the export to `write`; the number of events. Throws UsageError for a chain without events. */
export async function exportAuditTrail(
  databaseUrl: string,
  chain: string,
  write: (line: string) => void | Promise<void>,
  progress: (done: number, total: number) => void = () => {},
): Promise<number> {
  const sql = connectPostgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    // what has committed is linked first, so the export ends at the newest event
    await sealCommitted(sql);
    return await sql.begin("isolation level repeatable read read only", async (tx) => {
      const [head] = await tx`
        select h.last_id, encode(h.hash, 'hex') as hash, (select count(*) from audit.events e where e.chain = h.chain and e.seq is not null) as events,
               to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as exported_at
          from audit.chain_heads h where h.chain = ${chain}`;
      if (!head) throw new UsageError(chain === "account" ? "the account chain has no events" : `no audit trail for tenant ${chain}`);
      const total = Number(head.events);
      await write(JSON.stringify({
        type: "audit_export", version: EXPORT_VERSION, chain, exported_at: head.exported_at,
        head_id: head.last_id === null ? null : Number(head.last_id), head_hash: head.hash, events: total,
      }));
      let done = 0;
      const cursor = tx`
        select json_build_object('type', 'event', 'id', e.id, 'chain', e.chain,
                 'at', to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'actor', e.actor,
                 'session_id', e.session_id, 'action', e.action, 'tenant_id', e.tenant_id, 'user_id', e.user_id,
                 'target', e.target, 'client', e.client, 'user_agent', e.user_agent, 'request_id', e.request_id,
                 'details', e.details, 'seq', e.seq, 'prev_hash', encode(e.prev_hash, 'hex'), 'hash', encode(e.hash, 'hex'),
                 'content_hash', encode(e.content_hash, 'hex'), 'canonical', audit.canonical(e))::text as line
          from audit.events e where e.chain = ${chain} and e.seq is not null order by e.seq`.cursor(1000);
      for await (const rows of cursor) {
        for (const row of rows) await write(row.line as string);
        done += rows.length;
        progress(done, total);
      }
      return done;
    });
  } finally {
    await sql.end();
  }
}

function lineWriter(out: WriteStream | NodeJS.WriteStream): (line: string) => Promise<void> | void {
  return (line) => {
    if (!out.write(`${line}\n`)) return new Promise<void>((resolve) => out.once("drain", () => resolve()));
  };
}

if (import.meta.main) {
  let options: ExportOptions;
  try {
    options = parseExportArgs(process.argv.slice(2));
  } catch (error) {
    console.error(`audit:export: ${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  const url = configOrExit(loadAuditReadConfig, "audit:export: ").databaseUrl;
  if (!url) {
    console.error("audit:export: set DATABASE_URL to the database (an owner or superuser URL)");
    process.exit(2);
  }
  const out = options.out ? createWriteStream(options.out, { flags: "wx" }) : process.stdout;
  try {
    if (options.out) {
      await new Promise<void>((resolve, reject) => {
        (out as WriteStream).once("open", () => resolve());
        (out as WriteStream).once("error", reject);
      });
    }
    let lastReport = performance.now();
    const count = await exportAuditTrail(url, options.chain, lineWriter(out), (done, total) => {
      if (performance.now() - lastReport > 1000) {
        lastReport = performance.now();
        console.error(`audit:export: ${done} of ${total} events…`);
      }
    });
    if (options.out) await new Promise<void>((resolve) => (out as WriteStream).end(() => resolve()));
    console.error(`audit:export: ${count} events of chain ${options.chain}${options.out ? ` written to ${options.out}` : ""}`);
    process.exit(0);
  } catch (error) {
    console.error(`audit:export: ${(error as Error).message}`);
    process.exit(2);
  }
}
