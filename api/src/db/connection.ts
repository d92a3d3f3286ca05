/**
 * How our postgres.js pools reach PostgreSQL. libpq's way of naming a Unix socket directory in a
 * URL, `postgres://user:pw@/db?host=/dir` (psql and dbmate read it the same way), connects to
 * `<dir>/.s.PGSQL.<port>` through postgres.js's own `path` option; postgres.js on its own would
 * send `host` to the server as a setting. Everything else (TCP, TLS via `sslmode`, pipelining,
 * writes) is stock postgres.js.
 */
import postgres, { type Options, type PostgresType, type Sql } from "postgres";

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

/** A postgres.js pool for `url` (a libpq socket directory understood). */
export function connectPostgres(url: string, options: PgOptions = {}): Sql {
  const target = pgTarget(url);
  return postgres(target.url, target.socketPath ? { ...options, path: target.socketPath } : options);
}
