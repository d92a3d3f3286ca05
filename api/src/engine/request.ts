/**
 * Reading a request the way PostgREST's ApiRequest does: the schema from Accept-Profile /
 * Content-Profile, the Prefer header, the Accept header, cookies, and the body (bounded by
 * maxBodyBytes, decoded as strict UTF-8).
 */
import { ApiError } from "./errors";

export interface Preferences {
  return?: "minimal" | "headers-only" | "representation";
  count?: "exact" | "planned" | "estimated";
  tx?: "commit" | "rollback";
  params?: "single-object" | "multiple-objects";
  handling?: "strict" | "lenient";
  missing?: "default" | "null";
  resolution?: "merge-duplicates" | "ignore-duplicates";
  maxAffected?: number;
  timezone?: string;
  /** Preferences PostgREST does not know, kept for handling=strict. */
  invalid: string[];
}

const KNOWN: Record<string, string[]> = {
  return: ["minimal", "headers-only", "representation"],
  count: ["exact", "planned", "estimated"],
  tx: ["commit", "rollback"],
  params: ["single-object", "multiple-objects"],
  handling: ["strict", "lenient"],
  missing: ["default", "null"],
  resolution: ["merge-duplicates", "ignore-duplicates"],
};

export function parsePrefer(headers: Headers): Preferences {
  const prefs: Preferences = { invalid: [] };
  const raw = headers.get("prefer");
  if (!raw) return prefs;
  for (const item of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    const eq = item.indexOf("=");
    const key = (eq < 0 ? item : item.slice(0, eq)).trim();
    const value = eq < 0 ? "" : item.slice(eq + 1).trim();
    if (key in KNOWN && KNOWN[key]!.includes(value)) {
      const target = prefs as unknown as Record<string, string>;
      if (target[key] === undefined) target[key] = value;
    } else if (key === "max-affected") {
      // PostgREST ignores an unreadable max-affected without counting it as invalid.
      if (/^\d+$/.test(value)) prefs.maxAffected ??= Number(value);
    } else if (key === "timezone" && eq >= 0) {
      // Any value: PostgreSQL judges it when the transaction sets it (PostgREST 16).
      prefs.timezone ??= value;
    } else {
      prefs.invalid.push(item);
    }
  }
  return prefs;
}

export function checkStrictPreferences(prefs: Preferences): void {
  if (prefs.handling === "strict" && prefs.invalid.length > 0) {
    throw new ApiError(400, "PGRST122", "Invalid preferences given with handling=strict", `Invalid preferences: ${prefs.invalid.join(", ")}`);
  }
}

/** The exposed schema a request targets; PGRST106 when it names one that is not exposed. */
export function requestSchema(headers: Headers, method: string, schemas: string[]): string {
  const reads = method === "GET" || method === "HEAD";
  const header = reads ? headers.get("accept-profile") : headers.get("content-profile");
  if (header === null) return schemas[0]!;
  if (!schemas.includes(header)) {
    throw new ApiError(406, "PGRST106", `Invalid schema: ${header}`, null, `Only the following schemas are exposed: ${schemas.join(", ")}`);
  }
  return header;
}

export type MediaType = "json" | "object" | "csv" | "text" | "octet" | "any";

/** The response media types the engine can produce, PostgREST's negotiation order (first acceptable wins by q). */
export function negotiate(accept: string | null, offered: MediaType[]): { type: MediaType; stripNulls: boolean } {
  if (accept === null || accept.trim() === "") return { type: offered[0]!, stripNulls: false };
  const entries = accept.split(",").map((part, index) => {
    const [mt, ...params] = part.split(";").map((s) => s.trim());
    let q = 1;
    let nulls = false;
    for (const p of params) {
      const [k, v] = p.split("=").map((s) => s.trim().toLowerCase());
      if (k === "q" && v !== undefined && !Number.isNaN(Number(v))) q = Number(v);
      if (k === "nulls" && v === "stripped") nulls = true;
    }
    return { mt: (mt ?? "").toLowerCase(), q, index, nulls };
  });
  entries.sort((a, b) => b.q - a.q || a.index - b.index);
  for (const e of entries) {
    if (e.q <= 0) continue;
    const type = mediaTypeOf(e.mt);
    if (type === "any") return { type: offered[0]!, stripNulls: e.nulls };
    if (type && offered.includes(type)) return { type, stripNulls: e.nulls };
  }
  throw new ApiError(406, "PGRST107", `None of these media types are available: ${entries.map((e) => e.mt).join(", ")}`);
}

function mediaTypeOf(mt: string): MediaType | undefined {
  switch (mt) {
    case "*/*": return "any";
    case "application/json": case "application/*": return "json";
    case "application/vnd.pgrst.object+json": case "application/vnd.pgrst.object": return "object";
    case "text/csv": return "csv";
    case "text/plain": return "text";
    case "application/octet-stream": return "octet";
    default: return undefined;
  }
}

export function parseCookies(header: string | null): Record<string, string> {
  const cookies: Record<string, string> = {};
  if (!header) return cookies;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (name === "") continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    cookies[name] = value;
  }
  return cookies;
}

/** request.headers: every header, lower-cased, except Cookie (which goes to request.cookies). */
export function headersForGuc(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => {
    const name = key.toLowerCase();
    if (name === "cookie") return;
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  });
  return out;
}

export function payloadTooLarge(limit: number): ApiError {
  return new ApiError(413, "PGRST102", "Request body is too large", `The body exceeds the limit of ${limit} bytes`);
}

/** The body bytes, refusing more than `limit` without buffering the excess. */
export async function readBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  const known = declared !== null && /^\d+$/.test(declared);
  if (known && Number(declared) > limit) throw payloadTooLarge(limit);
  // A declared length within the limit, or an in-process Request (no Content-Length and not
  // chunked: its body is already in memory): read natively and check the size after. Chunked
  // bodies from the network are counted while streaming, so the excess is never buffered.
  if (known || request.headers.get("transfer-encoding") === null) {
    const bytes = new Uint8Array(await request.arrayBuffer());
    if (bytes.byteLength > limit) throw payloadTooLarge(limit);
    return bytes;
  }
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw payloadTooLarge(limit);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Strict UTF-8; invalid bytes are PostgREST's "Empty or invalid json" (PGRST102). */
export function decodeUtf8Body(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw invalidJson();
  }
}

export function invalidJson(): ApiError {
  return new ApiError(400, "PGRST102", "Empty or invalid json");
}

/** Deepest JSON nesting a body may have: deeper bodies cost recursion (and stack) everywhere they are read. */
export const MAX_JSON_DEPTH = 64;

/**
 * JSON.parse, refusing nesting deeper than `maxDepth` first. The scan is linear and cannot
 * recurse, so a hostile body costs the event loop no more than reading its bytes.
 */
export function parseJsonBounded(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 /* [ */ || c === 123 /* { */) {
      if (++depth > maxDepth) {
        throw new ApiError(400, "PGRST102", "Empty or invalid json", `JSON nesting is deeper than ${maxDepth} levels`);
      }
    } else if (c === 93 || c === 125) depth--;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw invalidJson();
  }
}

export interface QueryLimits {
  /** Longest query string, in characters (percent-escapes counted as sent). */
  maxLength: number;
  /** Most `&`-separated parameters. */
  maxParams: number;
}

export const DEFAULT_QUERY_LIMITS: QueryLimits = { maxLength: 524_288, maxParams: 100 };

/** Refuses a query string too long or with too many parameters before anything parses it. */
export function checkQueryBounds(rawQuery: string, limits: QueryLimits = DEFAULT_QUERY_LIMITS): void {
  if (rawQuery.length > limits.maxLength) {
    throw new ApiError(414, "PGRST100", "The query string is too long", `It has ${rawQuery.length} characters; at most ${limits.maxLength} are accepted`);
  }
  let params = 1;
  for (let i = rawQuery.indexOf("&"); i !== -1; i = rawQuery.indexOf("&", i + 1)) {
    if (++params > limits.maxParams) {
      throw new ApiError(400, "PGRST100", "Too many query parameters", `At most ${limits.maxParams} parameters are accepted`);
    }
  }
}
