/**
 * The one reading of a request's target. PostgREST (WAI's pathInfo) splits the raw path on "/"
 * and percent-decodes each segment; `["rpc", name]` is a function, `[name]` a relation, anything
 * else an invalid path. The gateway decides every policy (limits, caching, token wrapping,
 * revocation) from this resolution, and the upstream is sent the same name re-encoded, so what
 * is judged is what executes.
 */
import { gatewayError } from "./errors";

export type Target = { rpc: string } | { relation: string };

const invalidPath = () => gatewayError("PGRST125");

/** The path of a request URL as the server received it (no query, no fragment). */
export function rawPath(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  let end = url.length;
  const query = url.indexOf("?", start);
  if (query !== -1) end = query;
  const fragment = url.indexOf("#", start);
  if (fragment !== -1 && fragment < end) end = fragment;
  return url.slice(start, end);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw invalidPath();
  }
}

/**
 * `/rpc/<fn>` or `/<relation>`, decoded once. A trailing slash is ignored, as the engine does.
 * Names that a URL cannot carry as one segment ("." and "..", which URL parsers fold away even
 * percent-encoded) name no function or relation and are refused here.
 */
export function resolveTarget(path: string): Target {
  const segments = path.split("/").slice(1);
  if (segments.length > 0 && segments[segments.length - 1] === "") segments.pop();
  let target: Target;
  if (segments.length === 2 && segments[0] === "rpc") target = { rpc: decodeSegment(segments[1]!) };
  else if (segments.length === 1) target = { relation: decodeSegment(segments[0]!) };
  else throw invalidPath();
  const name = "rpc" in target ? target.rpc : target.relation;
  if (name === "" || name === "." || name === "..") throw invalidPath();
  return target;
}

/** The resolved name as one path segment: every character a URL would read as structure is escaped. */
export function encodeSegment(name: string): string {
  return encodeURIComponent(name);
}

/** The exposed schema a request targets (Accept-Profile for reads, Content-Profile for writes), or PGRST106. */
export function resolveSchema(headers: Headers, method: string, schemas: string[]): string {
  const header = headers.get(method === "POST" ? "content-profile" : "accept-profile");
  if (header === null) return schemas[0]!;
  if (!schemas.includes(header)) {
    throw gatewayError("PGRST106", { params: { schema: header, schemas: schemas.join(", ") } });
  }
  return header;
}

const UUID_HEX = /^[0-9a-f]{32}$/;

/**
 * A uuid argument in PostgreSQL's canonical text (lower case, 8-4-4-4-12), accepting the input
 * forms uuid_in does (upper case, braces, hyphens after any group of four digits); undefined
 * when PostgreSQL would refuse it.
 */
export function canonicalUuid(value: unknown): string | undefined {
  if (typeof value !== "string" || value.length > 40) return undefined;
  let text = value.toLowerCase();
  if (text.startsWith("{")) {
    if (!text.endsWith("}")) return undefined;
    text = text.slice(1, -1);
  }
  if (text.startsWith("-") || text.endsWith("-") || text.includes("--")) return undefined;
  const groups = text.split("-");
  if (groups.slice(0, -1).some((g) => g.length % 4 !== 0)) return undefined;
  const hex = groups.join("");
  if (!UUID_HEX.test(hex)) return undefined;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
