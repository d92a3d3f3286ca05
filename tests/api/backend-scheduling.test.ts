/**
 * CPU scheduling of the embedded engine's backends (gateway/upstream-select.ts, db/backend-priority.ts)
 * when PostgreSQL runs on this machine: sign_in and sign_up run on connections of their own whose
 * server processes are reniced, so a hash never holds a core against other requests at equal
 * priority; and the engine's request connections run under SCHED_BATCH.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { loadConfig } from "../../api/src/config";
import { connectPostgres } from "../../api/src/db/connection";
import { startApi, type RunningApi } from "../../api/src/server";
import { testStack } from "../support/stack";
import { call, newUser, signIn, signUp } from "./helpers";

const started: RunningApi[] = [];
const admin = testStack().external ? undefined : connectPostgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
afterAll(async () => {
  for (const api of started) await api.stop();
  await admin?.end();
});

async function dedicatedApi(overrides: Record<string, string>): Promise<string> {
  const env = { ...testStack().apiEnv!, ...overrides };
  const api = await startApi(loadConfig(env), env, () => {});
  started.push(api);
  return api.url;
}

/** nice of a process: field 19 of /proc/<pid>/stat (counted after the parenthesised name). */
function niceOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

/** Scheduling policy of a process: field 41 of /proc/<pid>/stat (0 = SCHED_OTHER, 3 = SCHED_BATCH). */
function policyOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[38]);
}

const SCHED_BATCH = 3;

async function backends(applicationName: string): Promise<number[]> {
  const rows = await admin!`select pid from pg_stat_activity where application_name = ${applicationName} and datname = current_database()`;
  return rows.map((r) => Number(r.pid));
}

describe.skipIf(testStack().external || !testStack().apiEnv)("backend scheduling [embedded stack, own API instances: not with API_URL or DATABASE_URL]", () => {
  test("sign_up and sign_in run on reniced backends; the other requests' backends keep normal priority", async () => {
    // Only this instance uses nice 7 (the suite's API runs with the default, 10).
    const api = await dedicatedApi({ SIGN_IN_BACKEND_NICE: "7", SIGN_IN_CONCURRENCY: "2" });
    const user = newUser();
    expect((await signUp(user, api)).status).toBe(200);
    const tokens = await signIn(user, api);
    expect((await call("/rpc/me", { base: api, token: tokens.access_token })).status).toBe(200);

    const reniced = (await backends("autoaudit-engine-hashing")).filter((pid) => niceOf(pid) === 7);
    // The connections that carried the calls: one per admission slot at most.
    expect(reniced.length).toBeGreaterThanOrEqual(1);
    expect(reniced.length).toBeLessThanOrEqual(2);
    // Each backend is a session of its own: with autogroup scheduling, the session's nice counts.
    for (const pid of reniced) {
      if (existsSync(`/proc/${pid}/autogroup`)) expect(readFileSync(`/proc/${pid}/autogroup`, "utf8")).toMatch(/ nice 7\n?$/);
    }
    const others = await backends("autoaudit-engine");
    expect(others.length).toBeGreaterThan(0);
    expect(others.filter((pid) => niceOf(pid) !== 0)).toEqual([]);
  });

  test("SIGN_IN_BACKEND_NICE=0 keeps one engine: no hashing connections are opened", async () => {
    const before = (await backends("autoaudit-engine-hashing")).length;
    const api = await dedicatedApi({ SIGN_IN_BACKEND_NICE: "0" });
    const user = newUser();
    expect((await signUp(user, api)).status).toBe(200);
    expect((await signIn(user, api)).access_token).toBeString();
    expect((await backends("autoaudit-engine-hashing")).length).toBe(before);
  });

  test.skipIf(!Bun.which("chrt"))("the engine's request connections run under SCHED_BATCH; DB_BACKEND_BATCH=false leaves them alone [needs chrt]", async () => {
    const user = newUser();
    expect((await signUp(user)).status).toBe(200);
    const tokens = await signIn(user);
    // The instance's engine backends are the ones that appear once it starts (the request
    // connections, batched, and the schema cache's, which is not).
    const newBackends = async (env: Record<string, string>) => {
      const before = new Set(await backends("autoaudit-engine"));
      const api = await dedicatedApi(env);
      expect((await call("/rpc/me", { base: api, token: tokens.access_token })).status).toBe(200);
      return (await backends("autoaudit-engine")).filter((pid) => !before.has(pid));
    };

    const batched = await newBackends({ DB_BACKEND_BATCH: "true" });
    // chrt runs in the background once a connection is up: give it a moment.
    for (let i = 0; i < 40 && !batched.some((pid) => policyOf(pid) === SCHED_BATCH); i++) await Bun.sleep(50);
    expect(batched.filter((pid) => policyOf(pid) === SCHED_BATCH).length).toBeGreaterThanOrEqual(1);

    const plain = await newBackends({ DB_BACKEND_BATCH: "false" });
    expect(plain.length).toBeGreaterThanOrEqual(1);
    await Bun.sleep(300);
    expect(plain.filter((pid) => policyOf(pid) === SCHED_BATCH)).toEqual([]);
  });
});
