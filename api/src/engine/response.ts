/**
 * Successful responses: the body PostgreSQL rendered, exact Content-Length, and what the
 * function asked for through the `response.headers` / `response.status` GUCs (PGRST111/112
 * when those are malformed).
 */
import { ApiError } from "./errors";

export interface GucRow {
  response_headers: string | null;
  response_status: string | null;
}

function gucHeaders(raw: string | null): Array<[string, string]> {
  if (raw === null || raw === "") return [];
  const invalid = () =>
    new ApiError(500, "PGRST111", "response.headers guc must be a JSON array composed of objects with a single key and a string value");
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed)) throw invalid();
  const out: Array<[string, string]> = [];
  for (const item of parsed) {
    if (!item || typeof item !== "object" || Array.isArray(item)) throw invalid();
    const entries = Object.entries(item as Record<string, unknown>);
    if (entries.length !== 1 || typeof entries[0]![1] !== "string") throw invalid();
    out.push([entries[0]![0], entries[0]![1] as string]);
  }
  return out;
}

function gucStatus(raw: string | null): number | undefined {
  if (raw === null || raw === "") return undefined;
  const n = /^\s*\d{3}\s*$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= 100 && n <= 999)) throw new ApiError(500, "PGRST112", "response.status guc must be a valid status code");
  return n;
}

export function responseFromGucs(row: GucRow, status: number, body: string | null, headers: Record<string, string>): Response {
  const h = new Headers(headers);
  const extra = gucHeaders(row.response_headers);
  for (const [k, v] of extra) {
    if (k.toLowerCase() === "set-cookie") h.append(k, v);
    else h.set(k, v);
  }
  const finalStatus = gucStatus(row.response_status) ?? status;
  const noBody = finalStatus === 204 || finalStatus === 304 || body === null;
  if (noBody) {
    h.delete("Content-Length");
    if (finalStatus === 204) h.delete("Content-Type");
    return new Response(null, { status: finalStatus, headers: h });
  }
  h.set("Content-Length", String(Buffer.byteLength(body)));
  return new Response(body, { status: finalStatus, headers: h });
}
