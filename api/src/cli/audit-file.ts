// The audit export format (`bun run audit:export`) and its verification from the file alone
// (`bun run audit:verify --file`). No database: an auditor can read this file, or redo it with
// any sha256 tool, to check an export.
//
// Line 1, the header:  {"type":"audit_export","version":2,"chain","exported_at","head_id","head_hash","events"}
// then one line per event, in chain order (seq):
//   {"type":"event","id","chain","at","actor","session_id","action","tenant_id","user_id","target",
//    "client","user_agent","request_id","details","seq","prev_hash","hash","content_hash","canonical"}
// where canonical is the exact text the database hashed (audit.canonical), prev_hash is the
// previous event's hash, and
//   content_hash = sha256(utf8(canonical)),  hash = sha256(bytes(prev_hash) || bytes(content_hash));
// events recorded before 2026-12-03 have no content_hash and hash = sha256(bytes(prev_hash) || utf8(canonical)).
// Version 1 (written before events were sealed after commit) has no seq or content_hash and is
// in id order, which was then the chain order; it is still read.
// canonical must also say what the line's fields say (a JSON array of them, in the order of
// CANONICAL_FIELDS), so editing a field is found as well as editing the text.
// After a prune the first event's prev_hash is the hash of the last pruned one, which the
// latest 'trail_pruned' checkpoint records (details.pruned_through_id / pruned_through_hash).
import { createHash } from "node:crypto";

export const EXPORT_VERSION = 2;
const READABLE_VERSIONS = [1, 2];

export const CANONICAL_FIELDS = [
  "id", "chain", "at", "actor", "session_id", "action", "tenant_id", "user_id", "target", "client", "user_agent", "request_id", "details",
] as const;

export interface ExportHeader {
  type: "audit_export";
  version: number;
  chain: string;
  exported_at: string;
  head_id: number | null;
  head_hash: string | null;
  events: number;
}

export interface ExportedEvent {
  type: "event";
  id: number;
  chain: string;
  action: string;
  details: Record<string, unknown>;
  prev_hash: string | null;
  hash: string;
  canonical: string;
  [field: string]: unknown;
}

export interface FileReport {
  chain: string;
  ok: boolean;
  /** events whose links were recomputed */
  checked: number;
  /** the first event (or the head, when events are missing at the end) that does not hold */
  first_broken_id: number | null;
  /** why, when not ok */
  reason?: string;
}

const HEX_HASH = /^[0-9a-f]{64}$/;

/** sha256 of the previous hash's bytes (none for the first event) followed by `bytes`, in hex. */
function chained(prevHash: string | null, bytes: Buffer): string {
  const h = createHash("sha256");
  if (prevHash) h.update(Buffer.from(prevHash, "hex"));
  h.update(bytes);
  return h.digest("hex");
}

/** sha256(bytes(prev_hash) || bytes(content_hash)): the link of an event that has a content hash. */
export function linkHash(prevHash: string | null, contentHash: string): string {
  return chained(prevHash, Buffer.from(contentHash, "hex"));
}

/** sha256(bytes(prev_hash) || utf8(canonical)); with no prev_hash, an event's content hash. */
export function eventHash(prevHash: string | null, canonical: string): string {
  return chained(prevHash, Buffer.from(canonical, "utf8"));
}

/** Parses and checks an export's text; a report, or an Error for text that is not an export at all. */
export function verifyExport(text: string): FileReport {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0) throw new Error("the file is empty");
  const parse = (line: string, n: number) => {
    try {
      return JSON.parse(line);
    } catch {
      throw new Error(`line ${n} is not JSON`);
    }
  };
  const header = parse(lines[0]!, 1) as ExportHeader;
  if (header?.type !== "audit_export" || typeof header.chain !== "string") {
    throw new Error('line 1 is not an audit export header ({"type":"audit_export", ...})');
  }
  if (!READABLE_VERSIONS.includes(header.version)) {
    throw new Error(`export version ${header.version} is not supported (this verifier reads ${READABLE_VERSIONS.join(" and ")})`);
  }
  const bySeq = header.version >= 2;
  const events = lines.slice(1).map((l, i) => parse(l, i + 2) as ExportedEvent);
  const chain = header.chain;
  const broken = (id: number | null, checked: number, reason: string): FileReport => ({ chain, ok: false, checked, first_broken_id: id, reason });

  let lastId: number | null = null;
  let lastOrder = -Infinity;
  for (const e of events) {
    if (e?.type !== "event" || typeof e.id !== "number") return broken(null, 0, "a line is not an event");
    const order = bySeq ? e.seq : e.id;
    if (typeof order !== "number" || order <= lastOrder) return broken(e.id, 0, bySeq ? "events are not in chain (seq) order" : "events are not in id order");
    if (e.chain !== chain) return broken(e.id, 0, `event of chain ${e.chain} in an export of ${chain}`);
    lastOrder = order;
    lastId = e.id;
  }

  // Start where the latest checkpoint says the pruned part ended (as audit.verify_chain does):
  // after its seq, or (checkpoints written before seq existed) after its id.
  let after: (e: ExportedEvent) => boolean = () => true;
  let prev: string | null = null;
  const checkpoint = [...events].reverse().find((e) => e.action === "trail_pruned");
  if (checkpoint) {
    const through = checkpoint.details?.pruned_through_id;
    const throughSeq = checkpoint.details?.pruned_through_seq;
    const throughHash = checkpoint.details?.pruned_through_hash;
    const bySeqCheckpoint = throughSeq !== undefined;
    if (typeof through !== "number" || typeof throughHash !== "string" || !HEX_HASH.test(throughHash) || through >= checkpoint.id
        || (bySeqCheckpoint && (typeof throughSeq !== "number" || typeof checkpoint.seq !== "number" || throughSeq >= checkpoint.seq))) {
      return broken(checkpoint.id, 0, "the checkpoint does not say what it pruned");
    }
    after = bySeqCheckpoint ? (e) => (e.seq as number) > (throughSeq as number) : (e) => e.id > through;
    prev = throughHash;
  }

  let checked = 0;
  for (const e of events) {
    if (!after(e)) continue;
    let said: unknown;
    try {
      said = JSON.parse(e.canonical);
    } catch {
      return broken(e.id, checked, "canonical is not JSON");
    }
    if (!Bun.deepEquals(said, CANONICAL_FIELDS.map((f) => e[f] ?? null))) {
      return broken(e.id, checked, "the event's fields differ from the text that was hashed");
    }
    if ((e.prev_hash ?? null) !== prev) return broken(e.id, checked, "prev_hash is not the previous event's hash");
    const content = bySeq ? (e.content_hash as string | null | undefined) ?? null : null;
    if (content === null) {
      if (e.hash !== eventHash(prev, e.canonical)) return broken(e.id, checked, "hash does not match the event");
    } else {
      if (content !== eventHash(null, e.canonical)) return broken(e.id, checked, "content_hash does not match the event");
      if (e.hash !== linkHash(prev, content)) return broken(e.id, checked, "hash does not match the event");
    }
    checked++;
    prev = e.hash;
  }
  if ((header.head_hash ?? null) !== prev || (events.length > 0 && header.head_id !== lastId) || header.events !== events.length) {
    return broken(header.head_id, checked, "the file does not end at the chain head the header names (events missing or added)");
  }
  return { chain, ok: true, checked, first_broken_id: null };
}
