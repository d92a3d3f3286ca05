/**
 * How the pools reach PostgreSQL (api/src/db): libpq's `?host=<dir>` socket URLs, and writes
 * coalesced per task. Against the test stack's real server, whose authenticator URL names the
 * server's Unix socket directory as `bun run dev` does.
 */
import { afterAll, describe, expect, test } from "bun:test";
import net from "node:net";
import postgres from "postgres";
import { coalesceWrites } from "../../api/src/db/coalescing-socket";
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

  test("queued statements on a reserved connection go out together once it can send again (patched postgres.js)", async () => {
    // Count the writes that reach the socket. The first statement is new to the connection, so
    // postgres.js describes it first and queues the rest; once it is through, every queued one
    // can go, and they must leave in one burst (one write), not one per round trip.
    const target = pgTarget(testStack().authenticatorUrl);
    let writes = 0;
    const counted = postgres(target.url, {
      max: 1,
      onnotice: () => {},
      socket: () => {
        const socket = net.connect(target.socketPath!);
        const write = socket.write.bind(socket);
        socket.write = ((...args: Parameters<typeof write>) => {
          writes++;
          return write(...args);
        }) as typeof socket.write;
        return coalesceWrites(socket);
      },
    } as Parameters<typeof postgres>[1]);
    try {
      const conn = await counted.reserve();
      const tag = crypto.randomUUID();
      const before = writes;
      const pending = Array.from({ length: 40 }, (_, i) => conn`select ${tag}::text || ${i}::int as v`);
      const values = (await Promise.all(pending)).map((rows) => rows[0]!.v);
      expect(values).toEqual(Array.from({ length: 40 }, (_, i) => `${tag}${i}`));
      // Describe, the first statement, then the other 39 at once (one per round trip was 40+).
      expect(writes - before).toBeLessThanOrEqual(4);
      conn.release();
    } finally {
      await counted.end({ timeout: 0 });
    }
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

describe("coalesced writes", () => {
  function recordingSocket() {
    const socket = new net.Socket();
    const writes: Buffer[] = [];
    socket.write = ((chunk: Uint8Array, cb?: (e?: Error | null) => void) => {
      writes.push(Buffer.from(chunk));
      queueMicrotask(() => cb?.(null));
      return true;
    }) as net.Socket["write"];
    socket.end = ((chunk?: Uint8Array) => {
      writes.push(Buffer.from(`end:${chunk ? String(chunk) : ""}`));
      return socket;
    }) as net.Socket["end"];
    return { socket: coalesceWrites(socket), writes };
  }

  test("writes issued in one task leave as one write, in order, and every callback is called", async () => {
    const { socket, writes } = recordingSocket();
    const called: number[] = [];
    socket.write(Buffer.from("a"), () => called.push(1));
    socket.write(Buffer.from("bc"));
    socket.write(Buffer.from("d"), () => called.push(3));
    expect(writes).toEqual([]);
    await Promise.resolve();
    await Promise.resolve();
    expect(writes.map(String)).toEqual(["abcd"]);
    expect(called).toEqual([1, 3]);
    socket.write(Buffer.from("e"));
    await Bun.sleep(0);
    expect(writes.map(String)).toEqual(["abcd", "e"]);
  });

  test("end() sends what is pending before its own bytes", () => {
    const { socket, writes } = recordingSocket();
    socket.write(Buffer.from("pending"));
    socket.end(Buffer.from("X"));
    expect(writes.map(String)).toEqual(["pending", "end:X"]);
  });
});

describe.skipIf(testStack().external)("TLS [embedded server only: it has no TLS]", () => {
  test("a URL that asks for TLS never falls back to plaintext", async () => {
    // TLS goes through postgres.js's own socket (TLS writes bypass a socket's write()); the
    // embedded server refuses the TLS request, so the query must fail, naming SSL.
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

describe("coalesced writes on a closed socket", () => {
  test("bytes pending when the socket is destroyed are dropped and their callbacks get an error", async () => {
    const socket = new net.Socket();
    const written: unknown[] = [];
    socket.write = ((chunk: Uint8Array) => {
      written.push(chunk);
      return true;
    }) as net.Socket["write"];
    const wrapped = coalesceWrites(socket);
    const errors: (Error | null | undefined)[] = [];
    wrapped.write(Buffer.from("late"), (e?: Error | null) => errors.push(e));
    socket.destroy();
    await Promise.resolve();
    await Promise.resolve();
    expect(written).toEqual([]);
    expect(errors.length).toBe(1);
    expect(errors[0]).toBeInstanceOf(Error);
  });
});
