// The engine's request connections (ConnectionLanes) on a real PostgreSQL: which connection a
// request transaction lands on, seen through the server process that ran it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Sql } from "postgres";
import { createEnginePool } from "../../api/src/engine/index";
import { ConnectionLanes, runInRequestTransaction, type RequestSettings } from "../../api/src/engine/transaction";
import { testStack } from "../support/stack";
import { productConfig } from "./rpc-support";

const SIZE = 3;
const DEPTH = 8;
const settings: RequestSettings = {
  role: "anon", claims: { role: "anon" }, method: "GET", path: "/rpc/lanes", headers: {}, cookies: {}, searchPath: ["api"],
};

let sql: Sql;
let lanes: ConnectionLanes;

beforeAll(() => {
  sql = createEnginePool(testStack().authenticatorUrl, productConfig({ dbPoolSize: SIZE }));
  lanes = new ConnectionLanes(sql, SIZE, undefined, undefined, DEPTH);
});

afterAll(async () => {
  lanes.close();
  await sql.end();
});

/** `n` concurrent request transactions that each hold their connection briefly; the backend pid of each. */
async function pidOf(holdSeconds: number): Promise<number> {
  const rows = await runInRequestTransaction(lanes, settings, { readOnly: true, acquisitionTimeoutSeconds: 10 },
    { text: "select pg_backend_pid() as pid from pg_sleep($1)", values: [holdSeconds], prepare: true }, true);
  return Number(rows[0]!.pid);
}

function concurrentPids(n: number, holdSeconds = 0.05): Promise<number[]> {
  return Promise.all(Array.from({ length: n }, () => pidOf(holdSeconds)));
}

const perBackend = (pids: number[]) => [...pids.reduce((m, p) => m.set(p, (m.get(p) ?? 0) + 1), new Map<number, number>()).values()].sort((a, b) => b - a);

describe("request connections", () => {
  test("every connection is opened once the load needs it, and none carries more than its depth", async () => {
    // Held long enough that every connection is open before the first request ends.
    const pids = await concurrentPids(SIZE * DEPTH, 0.5);
    expect(new Set(pids).size).toBe(SIZE);
    expect(perBackend(pids)).toEqual([DEPTH, DEPTH, DEPTH]);
  });

  test("concurrent requests are packed onto the busiest connection with room, not spread", async () => {
    // All three connections are open (previous test); six requests still share one backend,
    // so they leave in one write and that backend serves them in one wakeup.
    expect(perBackend(await concurrentPids(6))).toEqual([6]);
    // Past the depth, the rest go to one more connection.
    expect(perBackend(await concurrentPids(DEPTH + 2))).toEqual([DEPTH, 2]);
  });

  test("a connection that has finished nothing for a while gets no more requests queued behind it", async () => {
    const slow = pidOf(0.8);
    await Bun.sleep(300);
    const quick = await concurrentPids(3);
    expect(perBackend(quick)).toEqual([3]);
    expect(quick[0]).not.toBe(await slow);
  });
});

describe("prepared statements of request-shaped texts", () => {
  test("only the first distinct texts up to the bound are prepared; the rest run unprepared", async () => {
    const BOUND = 3;
    const bounded = new ConnectionLanes(sql, 1, undefined, undefined, DEPTH, BOUND);
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
    }
  });
});
