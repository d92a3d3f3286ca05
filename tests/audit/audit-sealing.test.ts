// Sealing after commit (migrations/20261203000300_audit_sealed_after_commit.sql): an event is
// recorded in its action's transaction with a content hash, and linked into its chain later by
// audit.seal (the API's sealer, audit:verify, audit:export, the prune).
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { call, signedInUser } from "../api/helpers";
import { adminSql, DEMO_RULES } from "../compliance/support";
import { sealAuditTrail } from "../support/audit";
import { closedPort } from "../support/ports";
import { testStack } from "../support/stack";
import { exportAuditTrail } from "../../api/src/cli/audit-export";
import { sealCommitted } from "../../api/src/cli/audit-seal";
import { verifyExport } from "../../api/src/cli/audit-file";
import { AuditSealer, SEAL_BATCH } from "../../api/src/gateway/audit-sealer";
import { connectPostgres } from "../../api/src/db/connection";
import { loadConfig } from "../../api/src/config";
import { startApi } from "../../api/src/server";
import { freePort } from "../../api/src/stack/free-port";

const sql = adminSql(4);
const dir = mkdtempSync(join(tmpdir(), "audit-sealing-"));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await sql.end();
});

/** Runs `work` while no sealer can run (this session holds the sealers' lock). */
async function withSealingHeld<T>(work: (holder: postgres.Sql) => Promise<T>): Promise<T> {
  const holder = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await holder`select pg_advisory_lock(hashtext('audit.seal'))`;
    return await work(holder);
  } finally {
    await holder.end();
  }
}

async function tenantOf(admin: { access_token: string }): Promise<string> {
  const r = await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Sealing Co" } });
  expect(r.status).toBe(200);
  return r.json.id as string;
}

const chainRows = (tenantId: string) =>
  sql`select id, seq, action, encode(prev_hash, 'hex') as prev_hash, encode(hash, 'hex') as hash, encode(content_hash, 'hex') as content_hash,
             encode(extensions.digest(convert_to(audit.canonical(e), 'UTF8'), 'sha256'), 'hex') as canonical_hash
        from audit.events e where chain = ${tenantId} order by id`;

const verify = (admin: { access_token: string }, tenantId: string) =>
  call("/rpc/verify_audit_trail", { token: admin.access_token, body: { tenant_id: tenantId } }).then((r) => r.json);
/** The same check without the API (whose reads seal first): what the chain holds right now. */
const verifyNow = (tenantId: string) => sql`select audit.verify_chain(${tenantId}) as r`.then(([row]) => row!.r);

const superuserEdit = (statement: (tx: any) => Promise<unknown>) =>
  sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await statement(tx);
  });

describe("sealing after commit", () => {
  test("an event is recorded at once with its content hash, which finds an edit before the API's sealer links it", async () => {
    const admin = await signedInUser();
    const { tenantId, id } = await withSealingHeld(async () => {
      const tenantId = await tenantOf(admin);
      const [row] = await chainRows(tenantId);
      // recorded, not linked yet
      expect(row).toMatchObject({ action: "tenant_created", seq: null, prev_hash: null, hash: null });
      expect(row!.content_hash).toBe(row!.canonical_hash);
      expect(await verifyNow(tenantId)).toEqual({ chain: tenantId, ok: true, checked: 1, first_broken_id: null });
      // an edit before sealing is found at its row; put back, the event holds again
      const [before] = await sql`select client from audit.events where id = ${row!.id}`;
      const client = before!.client as string;
      await superuserEdit((tx) => tx`update audit.events set client = '203.0.113.7' where id = ${row!.id}`);
      expect(await verifyNow(tenantId)).toEqual({ chain: tenantId, ok: false, checked: 0, first_broken_id: Number(row!.id) });
      await superuserEdit((tx) => tx`update audit.events set client = ${client} where id = ${row!.id}`);
      expect(await verifyNow(tenantId)).toEqual({ chain: tenantId, ok: true, checked: 1, first_broken_id: null });
      return { tenantId, id: Number(row!.id) };
    });

    // the lock released, the API's own sealer links the event (every AUDIT_SEAL_INTERVAL_MS)
    let sealed: any;
    for (let i = 0; i < 100 && !sealed?.hash; i++) {
      await Bun.sleep(50);
      [sealed] = await chainRows(tenantId);
    }
    expect(sealed).toMatchObject({ id: String(id), seq: "1", prev_hash: null });
    expect(sealed.hash).toBe(new Bun.CryptoHasher("sha256").update(Buffer.from(sealed.content_hash, "hex")).digest("hex"));
    expect(await verify(admin, tenantId)).toEqual({ chain: tenantId, ok: true, checked: 1, first_broken_id: null });
  });

  test("events committed out of id order are linked in commit order; verify and the export agree", async () => {
    const admin = await signedInUser();
    const tenantId = await tenantOf(admin);
    await sealAuditTrail(sql);
    // a transaction takes an event id, and commits only after a later event has been linked
    const late = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const reserved = await late.reserve();
      await reserved`begin`;
      await reserved`select audit.append('rules_upserted', null, ${tenantId}::uuid, null, 'late framework', '{"rules": 1}')`;
      expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "early", rules: DEMO_RULES } })).status).toBe(200);
      await sealAuditTrail(sql);
      await reserved`commit`;
      reserved.release();
    } finally {
      await late.end();
    }
    await sealAuditTrail(sql);

    const rows = await chainRows(tenantId);
    expect(rows.map((r) => r.action)).toEqual(["tenant_created", "rules_upserted", "rules_upserted"]);
    // ids in recording order, seq in commit order: the late event (lower id) is last in the chain
    const [created, lateEvent, early] = rows;
    expect(Number(lateEvent!.id)).toBeLessThan(Number(early!.id));
    expect([created!.seq, early!.seq, lateEvent!.seq]).toEqual(["1", "2", "3"]);
    expect(early!.prev_hash).toBe(created!.hash);
    expect(lateEvent!.prev_hash).toBe(early!.hash);
    expect(await verify(admin, tenantId)).toEqual({ chain: tenantId, ok: true, checked: 3, first_broken_id: null });

    const lines: string[] = [];
    await exportAuditTrail(testStack().databaseUrl, tenantId, (line) => void lines.push(line));
    const events = lines.slice(1).map((l) => JSON.parse(l));
    expect(events.map((e) => e.id)).toEqual([created, early, lateEvent].map((r) => Number(r!.id)));
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(verifyExport(lines.join("\n"))).toEqual({ chain: tenantId, ok: true, checked: 3, first_broken_id: null });
    // read as a version-1 file (id order was the chain order then), the same lines do not hold
    const asV1 = [JSON.stringify({ ...JSON.parse(lines[0]!), version: 1 }), ...lines.slice(1)].join("\n");
    expect(verifyExport(asV1)).toMatchObject({ ok: false, reason: "events are not in id order" });
    // an export file whose content hash was edited is found
    const edited = lines.map((l, i) => (i === 2 ? JSON.stringify({ ...JSON.parse(l), content_hash: "0".repeat(64) }) : l)).join("\n");
    expect(verifyExport(edited)).toMatchObject({ ok: false, first_broken_id: Number(early!.id), reason: "content_hash does not match the event" });
  });

  test("sealing is the one change an event may undergo, and only the sealing function is open to the API's login", async () => {
    const admin = await signedInUser();
    const tenantId = await tenantOf(admin);
    await sealAuditTrail(sql);
    const [sealedRow] = await chainRows(tenantId);
    const asRole = (role: string, statement: string) =>
      sql
        .begin(async (tx) => {
          await tx.unsafe(`set local role ${role}`);
          return tx.unsafe(statement);
        })
        .then(
          () => "ok",
          (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
        );
    // the owner may set hashes only where there are none
    expect(await asRole("auth_admin", `update audit.events set hash = '\\x00', seq = 9 where id = ${sealedRow!.id}`)).toBe("42501: audit events are append-only");
    expect(await asRole("auth_admin", `update audit.events set target = 'x' where id = ${sealedRow!.id}`)).toBe("42501: permission denied for table events");

    await withSealingHeld(async () => {
      expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "fw", rules: DEMO_RULES } })).status).toBe(200);
      const [, unsealed] = await chainRows(tenantId);
      expect(unsealed!.hash).toBeNull();
      // a forged seal (a hash that is not the link) is let through by the trigger and found by verify
      expect(await asRole("auth_admin", `update audit.events set seq = 2, prev_hash = '\\x01', hash = '\\x02' where id = ${unsealed!.id}`)).toBe("ok");
      expect(await verifyNow(tenantId)).toMatchObject({ ok: false, first_broken_id: Number(unsealed!.id) });
    });

    // the API's login may seal, and do nothing else in the audit schema; the request roles may not seal
    expect(await asRole("authenticator", "select audit_sealing.seal(false)")).toBe("ok");
    expect(await asRole("authenticator", "select audit.seal()")).toBe("42501: permission denied for schema audit");
    expect(await asRole("authenticator", "select * from audit.events limit 1")).toBe("42501: permission denied for schema audit");
    for (const role of ["anon", "authenticated", "scan_worker", "audit_pruner"]) {
      expect(await asRole(role, "select audit_sealing.seal(false)")).toBe("42501: permission denied for schema audit_sealing");
    }
  });
});

describe("a backlog", () => {
  test("is sealed 5000 at a time, oldest first, so a chain's order stays the recording order", async () => {
    const tenantId = crypto.randomUUID();
    const counts = await withSealingHeld(async (holder) => {
      await holder`select audit.append('rules_upserted', null, ${tenantId}::uuid, null, 'x', jsonb_build_object('n', i)) from generate_series(1, 5003) i`;
      // the holder has the sealers' lock already: its own calls go through
      const first = await holder<{ n: string }[]>`select audit.seal() as n`;
      const [unsealed] = await holder<{ left: string }[]>`select count(*) as left from audit.events where chain = ${tenantId} and hash is null`;
      return { first: Number(first[0]!.n), left: Number(unsealed!.left) };
    });
    // the database's batch is the one the API's sealer and the commands count on
    expect(counts.first).toBe(SEAL_BATCH);
    expect(SEAL_BATCH).toBe(5000);
    // oldest first: at least this chain's newest 3 wait for the next call (more if other chains had older ones queued)
    expect(counts.left).toBeGreaterThanOrEqual(3);
    expect(counts.left).toBeLessThan(5003);
    await sealCommitted(sql);
    const [chain] = await sql`
      select count(*)::int as n, bool_and(hash is not null) as sealed,
             bool_and(seq = r) as in_id_order
        from (select seq, hash, row_number() over (order by id) as r from audit.events where chain = ${tenantId}) e`;
    expect(chain).toEqual({ n: 5003, sealed: true, in_id_order: true });
    const [report] = await sql`select audit.verify_chain(${tenantId}) as r`;
    expect(report!.r).toEqual({ chain: tenantId, ok: true, checked: 5003, first_broken_id: null });
  });
});

describe("reading the trail through the API", () => {
  test("seals first for a signed-in caller, waiting for a sealer at work; an anonymous call never makes it seal", async () => {
    // an instance without a timer: whatever it shows sealed, the read sealed
    const logs: Record<string, unknown>[] = [];
    const env = { ...testStack().apiEnv!, PORT: String(await freePort()), AUDIT_SEAL_INTERVAL_MS: "0" };
    const api = await startApi(loadConfig(env), (line) => void logs.push(JSON.parse(line)));
    const holder = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const admin = await signedInUser();
      await holder`select pg_advisory_lock(hashtext('audit.seal'))`;
      const tenantId = await tenantOf(admin);
      const read = (token?: string) =>
        call(`/rpc/tenant_audit?tenant_id=${tenantId}`, { base: api.url, ...(token ? { token } : {}) });
      // anonymous: answered at once (401), the lock still held
      expect((await read()).status).toBe(401);
      // signed in: the read waits for the sealer at work, then seals and answers
      let answered = false;
      const pending = read(admin.access_token).then((r) => ((answered = true), r));
      await Bun.sleep(300);
      expect(answered).toBe(false);
      await holder`select pg_advisory_unlock(hashtext('audit.seal'))`;
      const r = await pending;
      expect(r.status).toBe(200);
      expect(r.json.events.map((e: any) => [e.action, /^[0-9a-f]{64}$/.test(e.hash)])).toEqual([["tenant_created", true]]);

      // a sealer that does not finish within 2 s: the read goes on, its new event unsealed
      await holder`select pg_advisory_lock(hashtext('audit.seal'))`;
      expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "fw", rules: DEMO_RULES } })).status).toBe(200);
      const late = await read(admin.access_token);
      expect(late.json.events.map((e: any) => [e.action, e.hash === null])).toEqual([["rules_upserted", true], ["tenant_created", false]]);
      expect(logs.filter((l) => l.event === "audit_seal_before_read_failed").map((l) => l.error)).toEqual(["canceling statement due to lock timeout"]);
    } finally {
      await holder.end();
      await api.stop();
    }
  }, 20_000);
});

describe("the API's sealer", () => {
  test("concurrent audit reads share the sealing: one call runs, the others wait for the next", async () => {
    const db = connectPostgres(testStack().authenticatorUrl, { max: 4, onnotice: () => {}, connection: { application_name: "sealing-test" } });
    const failures: Record<string, unknown>[] = [];
    const holder = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const sealer = new AuditSealer(db, 0, (event) => void failures.push(event));
      await holder`select pg_advisory_lock(hashtext('audit.seal'))`;
      const reads = Promise.all(Array.from({ length: 20 }, () => sealer.sealBeforeRead()));
      await Bun.sleep(300);
      const waiting = async () =>
        (await sql`select count(*)::int as n from pg_stat_activity where application_name = 'sealing-test' and query like '%audit_sealing.seal%' and state = 'active'`)[0]!.n;
      // twenty reads, one sealing call at the database (four connections were free)
      expect(await waiting()).toBe(1);
      await holder`select pg_advisory_unlock(hashtext('audit.seal'))`;
      await reads;
      expect(await waiting()).toBe(0);
      expect(failures).toEqual([]);
    } finally {
      await holder.end();
      await db.end();
    }
  });

  test("a failing database is logged once per failure streak, and stop() ends the timer", async () => {
    const lines: Record<string, unknown>[] = [];
    const unreachable = postgres(`postgres://nobody@127.0.0.1:${await closedPort()}/none`, { max: 1, connect_timeout: 1, onnotice: () => {} });
    const sealer = new AuditSealer(unreachable, 10, (event) => void lines.push(event));
    sealer.start();
    // attempts every 100 ms while failing (10 × the interval): several, one line
    await Bun.sleep(700);
    await sealer.stop();
    await unreachable.end();
    expect(lines.map((l) => l.event)).toEqual(["audit_seal_failed"]);
    expect(String(lines[0]!.error)).toContain("ECONNREFUSED");
  });
});
