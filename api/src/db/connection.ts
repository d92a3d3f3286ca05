/**
 * How our postgres.js pools reach PostgreSQL. One place decides the transport:
 *
 * - libpq's way of naming a Unix socket directory in a URL, `postgres://user:pw@/db?host=/dir`
 *   (psql and dbmate read it the same way), connects to `<dir>/.s.PGSQL.<port>`; postgres.js on
 *   its own would send `host` to the server as a setting. The embedded stack hands its processes
 *   such a URL: a local socket skips the TCP stack on both sides of every statement.
 * - every connection writes through `coalesceWrites` (one write per burst of queries).
 */
import postgres, { type Options, type PostgresType, type Sql } from "postgres";
import { connectCoalescing } from "./coalescing-socket";

/** Longest socket path the kernel accepts (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

export interface PgTarget {
  /** The URL without libpq-only parameters (what postgres.js parses). */
  url: string;
  /** `<dir>/.s.PGSQL.<port>` when the URL names a socket directory. */
  socketPath?: string;
}

export function pgTarget(url: string): PgTarget {
  let parsed: URL;
  try {
    // libpq allows an empty host (`user:pw@/db`, `:///db`) when ?host= names the socket; URL does not.
    parsed = new URL(url.replace(/^([a-z]+:\/\/(?:[^@/]*@)?)\//i, "$1localhost/"));
  } catch {
    return { url };
  }
  const dir = parsed.searchParams.get("host");
  if (!dir || !dir.startsWith("/")) return { url };
  parsed.searchParams.delete("host");
  const port = parsed.port || "5432";
  return { url: parsed.toString(), socketPath: `${dir.replace(/\/+$/, "")}/.s.PGSQL.${port}` };
}

/** Whether `url` reaches PostgreSQL through a Unix socket, i.e. a server on this machine. */
export function isLocalSocket(url: string): boolean {
  return pgTarget(url).socketPath !== undefined;
}

/**
 * `url` with `?host=<socketDir>` added, so clients connect through the socket in that directory;
 * `url` unchanged when the socket's path would be too long for the kernel.
 */
export function withSocketDir(url: string, socketDir: string): string {
  const parsed = new URL(url);
  const port = parsed.port || "5432";
  if (`${socketDir}/.s.PGSQL.${port}`.length > MAX_SOCKET_PATH) return url;
  parsed.searchParams.set("host", socketDir);
  return parsed.toString();
}

type PgOptions = Options<Record<string, PostgresType>>;

/** Whether the URL or options ask for TLS (postgres.js negotiates it on the socket it is given). */
function wantsTls(url: string, options: PgOptions): boolean {
  if (options.ssl !== undefined && options.ssl !== false) return true;
  try {
    const params = new URL(url).searchParams;
    const mode = params.get("sslmode") ?? params.get("ssl");
    return mode !== null && mode !== "disable" && mode !== "false";
  } catch {
    return false;
  }
}

/**
 * A postgres.js pool for `url` (socket directory understood, writes coalesced). A TLS connection
 * keeps postgres.js's own socket: TLS writes go past the socket object's write().
 */
export function connectPostgres(url: string, options: PgOptions = {}): Sql {
  const target = pgTarget(url);
  if (wantsTls(target.url, options) && !target.socketPath) return postgres(target.url, options);
  // `socket` (a factory for connected sockets) is a postgres.js option its types leave out.
  const socket = (resolved: { host: string[]; port: number[] }) =>
    connectCoalescing({ path: target.socketPath, host: resolved.host[0], port: resolved.port[0] });
  return postgres(target.url, { ...options, socket } as PgOptions);
}
