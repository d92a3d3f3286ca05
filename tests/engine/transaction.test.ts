// The request transaction (runInRequestTransaction) on a real PostgreSQL: what the caller's
// statement sees, what outlives the request, and what a failure leaves behind, whatever the
// connection's default isolation (BEGIN ISOLATION LEVEL READ COMMITTED … COMMIT always).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres, { type Sql } from "postgres";
import { RequestConnections, runInRequestTransaction, type RequestSettings, type Statement } from "../../api/src/engine/transaction";
import { testStack } from "../support/stack";

const settings: RequestSettings = {
  role: "anon", claims: { role: "anon", sub: "s-1" }, method: "GET", path: "/rpc/tx", headers: { "x-h": "1" }, cookies: {}, searchPath: ["public"],
};
const asConnectingUser: RequestSettings = { ...settings, role: undefined, claims: {}, headers: {} };
const options = (readOnly: boolean) => ({ readOnly, acquisitionTimeoutSeconds: 10 });
const seen: Statement = {
  text: `select current_user::text as who, current_setting('transaction_isolation') as isolation,
                current_setting('transaction_read_only') as read_only, current_setting('request.jwt.claims', true) as claims`,
  values: [],
  prepare: true,
};

let admin: Sql;
/** The user the pools connect as (the superuser of the test database). */
let connectingUser: string;

beforeAll(async () => {
  admin = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`
    drop schema if exists engine_tx cascade;
    create schema engine_tx;
    create table engine_tx.pairs (label text not null, twin text);
    create table engine_tx.deferred (label text primary key,
      partner text references engine_tx.deferred (label) deferrable initially deferred);
  `);
  connectingUser = (await admin`select current_user::text as u`)[0]!.u;
});

afterAll(async () => {
  await admin.unsafe("drop schema if exists engine_tx cascade");
  await admin.end();
});

// The same checks on connections whose default isolation is read committed and repeatable read.
for (const defaultIsolation of ["read committed", "repeatable read"] as const) {
  describe(`connections whose default isolation is ${defaultIsolation}`, () => {
    let sql: Sql;
    let connections: RequestConnections;
    beforeAll(() => {
      sql = postgres(testStack().databaseUrl, {
        max: 2, onnotice: () => {}, prepare: true, connection: { default_transaction_isolation: defaultIsolation },
      });
      connections = new RequestConnections(sql, 1);
    });
    afterAll(async () => {
      connections.close();
      await sql.end();
    });
    const run = (s: RequestSettings, readOnly: boolean, main: Statement) =>
      runInRequestTransaction(connections, s, options(readOnly), main, true);

    test("the statement runs read committed, as the request's role, with its claims; reads are read only", async () => {
      const [read] = await run(settings, true, seen);
      expect(read).toEqual({ who: "anon", isolation: "read committed", read_only: "on", claims: '{"role":"anon","sub":"s-1"}' });
      const [write] = await run(settings, false, seen);
      expect(write).toMatchObject({ who: "anon", isolation: "read committed", read_only: "off" });
    });

    test("nothing of a request outlives it, whether it succeeded or failed", async () => {
      await run(settings, true, seen);
      const [after] = await run(asConnectingUser, true, { ...seen, text: `${seen.text}, current_setting('request.headers', true) as headers` });
      expect(after).toMatchObject({ who: connectingUser, headers: "{}" });
      await expect(run(settings, true, { text: "select 1 / $1::int", values: [0], prepare: true })).rejects.toMatchObject({ code: "22012" });
      const [afterFailure] = await run(asConnectingUser, true, seen);
      expect(afterFailure).toMatchObject({ who: connectingUser });
    });

    test("a write that fails keeps nothing, also when the failure comes at COMMIT (a deferred constraint)", async () => {
      const label = `deferred-${defaultIsolation}`;
      const orphan = { text: "insert into engine_tx.deferred values ($1, $2) returning label", values: [label, "nobody"], prepare: true };
      await expect(run(asConnectingUser, false, orphan)).rejects.toMatchObject({ code: "23503" });
      const [kept] = await admin`select count(*)::int as n from engine_tx.deferred where label = ${label}`;
      expect(kept!.n).toBe(0);
      const selfPartner = { ...orphan, values: [label, label] };
      expect(await run(asConnectingUser, false, selfPartner)).toEqual([{ label }] as never);
    });

    test("a settings failure (a role that does not exist) runs nothing", async () => {
      const insert = { text: "insert into engine_tx.pairs values ($1, $2) returning label", values: [`ghost-${defaultIsolation}`, "x"], prepare: true };
      await expect(run({ ...settings, role: "engine_tx_no_such_role" }, false, insert)).rejects.toMatchObject({ code: "22023" });
      const [kept] = await admin`select count(*)::int as n from engine_tx.pairs where label = ${`ghost-${defaultIsolation}`}`;
      expect(kept!.n).toBe(0);
    });
  });
}
