// The engine's request connections (RequestConnections) on a real PostgreSQL: each request
// transaction runs on a connection of its own, as with PostgREST's pool, seen through the server
// process that ran it; requests beyond the pool wait, and past the acquisition timeout get PGRST003.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Sql } from "postgres";
import { connectPostgres } from "../../api/src/db/connection";
import { ApiError } from "../../api/src/engine/errors";
import { createEnginePool } from "../../api/src/engine/index";
import { RequestConnections, runInRequestTransaction, type RequestSettings } from "../../api/src/engine/transaction";
import { testStack } from "../support/stack";
import { productConfig } from "./rpc-support";

const SIZE = 3;
const settings: RequestSettings = {
  role: "anon", claims: { role: "anon" }, method: "GET", path: "/rpc/connections", headers: {}, cookies: {}, searchPath: ["api"],
};

let sql: Sql;
let connections: RequestConnections;

beforeAll(() => {
  sql = createEnginePool(testStack().authenticatorUrl, productConfig({ dbPoolSize: SIZE }));
  connections = new RequestConnections(sql, SIZE);
});

afterAll(async () => {
  connections.close();
  await sql.end();
});

/** A request transaction that holds its connection for `holdSeconds`: its backend pid and when it ran. */
async function held(pool: RequestConnections, holdSeconds: number, timeoutSeconds = 10) {
  const rows = await runInRequestTransaction(pool, settings, { readOnly: true, acquisitionTimeoutSeconds: timeoutSeconds },
    { text: "select pg_backend_pid() as pid, clock_timestamp() as began from pg_sleep($1)", values: [holdSeconds], prepare: true }, true);
  return { pid: Number(rows[0]!.pid), began: new Date(rows[0]!.began as string).getTime() };
}

describe("request connections", () => {
  test("concurrent request transactions each get a connection of their own", async () => {
    const runs = await Promise.all(Array.from({ length: SIZE }, () => held(connections, 0.2)));
    expect(new Set(runs.map((r) => r.pid)).size).toBe(SIZE);
    // They ran side by side, not one after another on a shared backend.
    const began = runs.map((r) => r.began);
    expect(Math.max(...began) - Math.min(...began)).toBeLessThan(150);
  });

  test("requests beyond the pool wait for a connection, then run on one of the pool's", async () => {
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: SIZE * 2 }, () => held(connections, 0.2)));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(380);
    expect(new Set(runs.map((r) => r.pid)).size).toBeLessThanOrEqual(SIZE);
  });

  test("a request that gets no connection within the acquisition timeout is answered PGRST003 (504)", async () => {
    const one = new RequestConnections(sql, 1);
    try {
      const holding = held(one, 1.5);
      const waiting = held(one, 0, 0.3).catch((e: unknown) => e);
      const error = (await waiting) as ApiError;
      expect(error).toBeInstanceOf(ApiError);
      expect({ status: error.status, code: error.code }).toEqual({ status: 504, code: "PGRST003" });
      await holding;
      // The slot is free again afterwards.
      expect((await held(one, 0)).pid).toBeGreaterThan(0);
    } finally {
      one.close();
    }
  });
});

describe("prepared statements of request-shaped texts", () => {
  test("only the first distinct texts up to the bound are prepared; the rest run unprepared", async () => {
    const BOUND = 3;
    // One connection, so every request lands on the backend whose prepared statements are counted.
    const single = connectPostgres(testStack().authenticatorUrl, { max: 1, prepare: true, onnotice: () => {} });
    const bounded = new RequestConnections(single, 1, undefined, BOUND);
    try {
      const marker = `bound_${Date.now()}`;
      const run = (text: string) =>
        runInRequestTransaction(bounded, settings, { readOnly: true, acquisitionTimeoutSeconds: 10 },
          { text, values: [], prepare: bounded.preparable(text) }, true);
      // Seven distinct texts (as varied aliases would make), then the first again.
      const texts = Array.from({ length: 7 }, (_, i) => `select ${i} as "${marker}_${i}"`);
      for (const text of [...texts, texts[0]!]) await run(text);
      const [row] = await run(`select count(*)::int as n from pg_prepared_statements where statement like '%${marker}%' and statement not like '%pg_prepared_statements%'`);
      expect(row!.n).toBe(BOUND);
      expect(bounded.preparable(texts[0]!)).toBe(true);
      expect(bounded.preparable(texts[6]!)).toBe(false);
    } finally {
      bounded.close();
      await single.end();
    }
  });
});
