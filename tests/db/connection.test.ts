/**
 * How the pools reach PostgreSQL (api/src/db): libpq's `?host=<dir>` socket URLs on stock
 * postgres.js. Against the test stack's real server, whose authenticator URL names the
 * server's Unix socket directory as `bun run dev` does.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { connectPostgres, pgTarget, withSocketDir } from "../../api/src/db/connection";
import { testStack } from "../support/stack";

describe("socket URLs", () => {
  test("?host=<dir> becomes <dir>/.s.PGSQL.<port> and leaves the URL postgres.js parses", () => {
    expect(pgTarget("postgres://u:p@/db?host=/var/run/postgresql")).toEqual({
      url: "postgres://u:p@localhost/db",
      socketPath: "/var/run/postgresql/.s.PGSQL.5432",
    });
    expect(pgTarget("postgres://u:p@127.0.0.1:6543/db?host=/tmp/pg/&application_name=x")).toEqual({
      url: "postgres://u:p@127.0.0.1:6543/db?application_name=x",
      socketPath: "/tmp/pg/.s.PGSQL.6543",
    });
  });

  test("a URL without a socket directory (or with a host name in ?host=) is left alone", () => {
    for (const url of ["postgres://u:p@db:5432/app", "postgres://u:p@db/app?host=otherhost", "not a url"]) {
      expect(pgTarget(url)).toEqual({ url });
    }
  });

  test("withSocketDir adds the directory, unless the socket path would pass the kernel's limit", () => {
    expect(withSocketDir("postgres://u:p@127.0.0.1:5433/db", "/tmp/x")).toBe("postgres://u:p@127.0.0.1:5433/db?host=%2Ftmp%2Fx");
    const deep = `/${"d".repeat(100)}`;
    expect(withSocketDir("postgres://u:p@127.0.0.1:5433/db", deep)).toBe("postgres://u:p@127.0.0.1:5433/db");
  });
});

describe.skipIf(testStack().external)("connections to the embedded server [embedded stack only: its socket directory is local]", () => {
  const sql = connectPostgres(testStack().authenticatorUrl, { max: 2, onnotice: () => {} });
  afterAll(() => sql.end());

  test("the authenticator URL reaches the server through its Unix socket", async () => {
    expect(pgTarget(testStack().authenticatorUrl).socketPath).toMatch(/\/\.s\.PGSQL\.\d+$/);
    // inet_server_addr() is NULL exactly when the connection is not over TCP/IP.
    const [row] = await sql`select inet_server_addr() as addr, current_user as who`;
    expect(row).toEqual({ addr: null, who: "authenticator" });
  });

  test("a server that is not there fails the query with a connection error (and the pool recovers)", async () => {
    const gone = connectPostgres("postgres://u:p@/db?host=/nonexistent-dir", { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      const error = await gone`select 1`.catch((e: unknown) => e as { code?: string });
      expect((error as { code?: string }).code).toBe("ENOENT");
      const again = await gone`select 1`.catch((e: unknown) => e as { code?: string });
      expect((again as { code?: string }).code).toBe("ENOENT");
    } finally {
      await gone.end({ timeout: 0 });
    }
  });
});

describe.skipIf(testStack().external)("TLS [embedded server only: it has no TLS]", () => {
  test("a URL that asks for TLS never falls back to plaintext", async () => {
    // The embedded server refuses the TLS request, so the query must fail, naming SSL.
    const url = new URL(testStack().databaseUrl);
    url.searchParams.set("sslmode", "require");
    const tls = connectPostgres(url.toString(), { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      const error = (await tls`select 1`.catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(Error);
      expect(String(error.message)).toMatch(/SSL|TLS/i);
    } finally {
      await tls.end({ timeout: 0 });
    }
  });
});
