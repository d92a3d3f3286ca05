// Retention (retention.prune_audit_trail as audit_pruner, bun run audit:prune), the export and
// its verification from the file alone, and the measurement switch.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, signedInUser } from "../api/helpers";
import { adminSql, DEMO_RULES } from "../compliance/support";
import { sealAuditTrail } from "../support/audit";
import { testStack } from "../support/stack";
import { verifyExport } from "../../api/src/cli/audit-file";

const sql = adminSql(4);
const dir = mkdtempSync(join(tmpdir(), "audit-export-"));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await sql.end();
});

const ROOT = `${import.meta.dir}/../..`;
async function run(script: string, args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawn(["bun", script, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", DATABASE_URL: testStack().databaseUrl, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { stdout, stderr, code };
}

/** A tenant with `n` rules_upserted events after its tenant_created. */
async function busyTenant(n: number) {
  const admin = await signedInUser();
  const tenantId = (await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Retention Co" } })).json.id as string;
  for (let i = 0; i < n; i++) {
    expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: `fw-${i}`, rules: DEMO_RULES } })).status).toBe(200);
  }
  return { admin, tenantId };
}

const verify = (admin: { access_token: string }, tenantId: string) =>
  call("/rpc/verify_audit_trail", { token: admin.access_token, body: { tenant_id: tenantId } }).then((r) => r.json);

const asPruner = (cutoff: string, chain: string | null) =>
  sql.begin(async (tx) => {
    await tx`set local role audit_pruner`;
    const [row] = await tx`select retention.prune_audit_trail(${cutoff}::timestamptz, ${chain}) as r`;
    return row!.r as { pruned_events: number; chains: { chain: string; pruned_events: number; pruned_through_id: number }[] };
  });

/** A cutoff between the events so far and the ones to come. */
async function cutoffNow(): Promise<string> {
  const [row] = await sql`select clock_timestamp()::text as t`;
  await Bun.sleep(5);
  return row!.t as string;
}

describe("pruning", () => {
  test("prunes the chain's old prefix behind a checkpoint; the rest still verifies; tampering is still found", async () => {
    const { admin, tenantId } = await busyTenant(3);
    await sealAuditTrail(sql);
    const before = await sql`select id, hash from audit.events where chain = ${tenantId} order by id`;
    expect(before).toHaveLength(4);
    const cutoff = await cutoffNow();
    await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "late", rules: DEMO_RULES } });

    const result = await asPruner(cutoff, tenantId);
    expect(result).toEqual({ pruned_events: 4, chains: [{ chain: tenantId, pruned_events: 4, pruned_through_id: Number(before[3]!.id) }] });
    const after = await sql`select * from audit.events where chain = ${tenantId} order by id`;
    expect(after.map((e) => e.action)).toEqual(["rules_upserted", "trail_pruned"]);
    const checkpoint = after[1]!;
    expect(checkpoint.details).toMatchObject({
      pruned_through_id: Number(before[3]!.id), pruned_through_hash: Buffer.from(before[3]!.hash).toString("hex"), pruned_events: 4,
    });
    expect([checkpoint.actor, checkpoint.tenant_id, checkpoint.user_id]).toEqual([null, tenantId, null]);
    // the admins see the checkpoint in the trail and can filter on it
    const listed = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, action: "trail_pruned" } });
    expect(listed.json.events.map((e: any) => e.id)).toEqual([Number(checkpoint.id)]);
    expect(await verify(admin, tenantId)).toEqual({ chain: tenantId, ok: true, checked: 2, first_broken_id: null });

    // again with the same cutoff: nothing older is left, nothing changes
    expect(await asPruner(cutoff, tenantId)).toEqual({ pruned_events: 0, chains: [] });
    // a second prune takes the first checkpoint with it
    await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "later", rules: DEMO_RULES } });
    const second = await asPruner(await cutoffNow(), tenantId);
    expect(second.pruned_events).toBe(3);
    expect((await sql`select action from audit.events where chain = ${tenantId} order by id`).map((e) => e.action)).toEqual(["trail_pruned"]);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: true, checked: 1 });
    // a chain whose old part is only a checkpoint is left alone
    expect(await asPruner(await cutoffNow(), tenantId)).toEqual({ pruned_events: 0, chains: [] });

    // tampering after pruning: an edited kept row, an edited checkpoint, a deleted checkpoint
    await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "kept", rules: DEMO_RULES } });
    await sealAuditTrail(sql);
    const [kept] = await sql`select id, client from audit.events where chain = ${tenantId} and action = 'rules_upserted'`;
    const [cp] = await sql`select id, details from audit.events where chain = ${tenantId} and action = 'trail_pruned'`;
    const superuserEdit = (statement: (tx: any) => Promise<unknown>) =>
      sql.begin(async (tx) => {
        await tx`set local session_replication_role = replica`;
        await statement(tx);
      });
    await superuserEdit((tx) => tx`update audit.events set client = '203.0.113.9' where id = ${kept!.id}`);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: false, first_broken_id: Number(kept!.id) });
    await superuserEdit((tx) => tx`update audit.events set client = ${kept!.client} where id = ${kept!.id}`);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: true });
    await superuserEdit((tx) => tx`update audit.events set details = details || '{"pruned_events": 1}' where id = ${cp!.id}`);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: false, first_broken_id: Number(cp!.id) });
    // a checkpoint that claims to cover itself
    await superuserEdit((tx) => tx`update audit.events set details = ${sql.json({ ...cp!.details, pruned_through_id: Number(cp!.id) })} where id = ${cp!.id}`);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: false, first_broken_id: Number(cp!.id) });
    await superuserEdit((tx) => tx`delete from audit.events where id = ${cp!.id}`);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: false, first_broken_id: Number(kept!.id) });
  });

  test("the account chain prunes the same way", async () => {
    const user = await signedInUser();
    const cutoff = await cutoffNow();
    await call("/rpc/sign_in", { body: { email: user.email, password: user.password } });
    const result = await asPruner(cutoff, "account");
    expect(result.chains.map((c) => c.chain)).toEqual(["account"]);
    expect(result.pruned_events).toBeGreaterThanOrEqual(2);
    const mine = await sql`select action from audit.events where user_id = ${user.user.id} order by id`;
    expect(mine.map((e) => e.action)).toEqual(["sign_in_succeeded"]);
    const [report] = await sql`select audit.verify_chain('account') as r`;
    expect(report!.r).toMatchObject({ ok: true, first_broken_id: null });
  });

  test("only what a checkpoint covers may be deleted; only audit_pruner may prune", async () => {
    const { tenantId } = await busyTenant(1);
    const [newest] = await sql`select id from audit.events where chain = ${tenantId} order by id desc limit 1`;
    // the owner (as audit_pruner's function runs) may not delete what no checkpoint covers
    const owner = await sql
      .begin(async (tx) => {
        await tx`set local role auth_admin`;
        await tx`delete from audit.events where id = ${newest!.id}`;
      })
      .catch((e: Error) => e);
    expect((owner as Error).message).toBe("audit events are append-only");
    for (const role of ["anon", "authenticated", "authenticator", "scan_worker"]) {
      const error = await sql
        .begin(async (tx) => {
          await tx.unsafe(`set local role ${role}`);
          await tx`select retention.prune_audit_trail(now(), ${tenantId})`;
        })
        .catch((e: { code?: string }) => e);
      expect((error as { code?: string }).code).toBe("42501");
    }
    // audit_pruner can prune and do nothing else
    for (const statement of ["select * from audit.events limit 1", "select * from audit.chain_heads", "select audit.verify_chain('account')"]) {
      const error = await sql
        .begin(async (tx) => {
          await tx`set local role audit_pruner`;
          await tx.unsafe(statement);
        })
        .catch((e: { code?: string }) => e);
      expect((error as { code?: string }).code).toBe("42501");
    }
    const future = await asPruner(new Date(Date.now() + 60_000).toISOString(), tenantId).catch((e: Error) => e);
    expect((future as Error).message).toBe("cutoff must be a time that is not in the future");
    expect(await sql`select id from audit.events where chain = ${tenantId}`).toHaveLength(2);
  });

  test("bun run audit:prune: unset keeps forever, a bad value exits 2, a retention prunes what is older", async () => {
    const kept = await run("api/src/cli/audit-prune.ts", []);
    expect(kept).toMatchObject({ code: 0, stdout: "audit:prune: AUDIT_RETENTION_DAYS is not set: the audit trail is kept forever, nothing pruned\n" });
    for (const bad of ["0", "-3", "1.5", "ten", "99999"]) {
      const r = await run("api/src/cli/audit-prune.ts", [], { AUDIT_RETENTION_DAYS: bad });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("AUDIT_RETENTION_DAYS must be a whole number of days between 1 and 36500");
    }
    const count = async () => Number((await sql`select count(*) as n from audit.events`)[0]!.n);
    const before = await count();
    const r = await run("api/src/cli/audit-prune.ts", [], { AUDIT_RETENTION_DAYS: "3650" });
    expect(r).toMatchObject({ code: 0, stdout: "audit:prune: 0 events older than 3650 days pruned from 0 chains\n" });
    expect(await count()).toBe(before);
  });
});

describe("bun run audit:export and audit:verify --file", () => {
  test("an export verifies from the file alone, also after a prune; any edit of the file is found", async () => {
    const { admin, tenantId } = await busyTenant(2);
    const cutoff = await cutoffNow();
    await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "after", rules: DEMO_RULES } });
    await asPruner(cutoff, tenantId);
    await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "last", rules: DEMO_RULES } });

    const file = join(dir, `${tenantId}.jsonl`);
    const exported = await run("api/src/cli/audit-export.ts", [tenantId, "--out", file]);
    expect(exported).toMatchObject({ code: 0, stdout: "" });
    expect(exported.stderr).toContain(`audit:export: 3 events of chain ${tenantId} written to ${file}`);
    const lines = readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.type)).toEqual(["audit_export", "event", "event", "event"]);
    expect(lines.slice(1).map((l) => l.action)).toEqual(["rules_upserted", "trail_pruned", "rules_upserted"]);
    const [head] = await sql`select last_id, encode(hash, 'hex') as hash from audit.chain_heads where chain = ${tenantId}`;
    expect(lines[0]).toMatchObject({ version: 2, chain: tenantId, head_id: Number(head!.last_id), head_hash: head!.hash, events: 3 });
    // the same bytes on stdout
    const toStdout = await run("api/src/cli/audit-export.ts", [tenantId]);
    expect(toStdout.stdout.split("\n").slice(1)).toEqual(readFileSync(file, "utf8").split("\n").slice(1));

    const ok = await run("api/src/cli/audit-verify.ts", ["--file", file], { DATABASE_URL: "" });
    expect(ok).toMatchObject({ code: 0, stdout: `ok      ${tenantId} (3 events, from the file alone)\n` });

    const text = readFileSync(file, "utf8");
    const rows = text.trim().split("\n");
    const edit = (i: number, change: (e: any) => void) => {
      const copy = [...rows];
      const e = JSON.parse(copy[i]!);
      change(e);
      copy[i] = JSON.stringify(e);
      return copy.join("\n") + "\n";
    };
    const tampered: [string, string, number | null][] = [
      ["a field", edit(1, (e) => (e.client = "198.51.100.1")), lines[1].id],
      ["the hashed text", edit(3, (e) => (e.canonical = e.canonical.replace('"rules_upserted"', '"scan_submitted"'))), lines[3].id],
      ["the text and the field alike", edit(3, (e) => {
        e.action = "scan_submitted";
        e.canonical = e.canonical.replace('"rules_upserted"', '"scan_submitted"');
      }), lines[3].id],
      ["a checkpoint's record", edit(2, (e) => (e.details.pruned_events = 1)), lines[2].id],
      ["a removed middle event", [rows[0], rows[2], rows[3]].join("\n"), lines[2].id],
      ["a removed checkpoint", [rows[0], rows[1], rows[3]].join("\n"), lines[1].id],
      ["a removed last event and the header's count", [JSON.stringify({ ...lines[0], events: 2 }), rows[1], rows[2]].join("\n"), lines[0].head_id],
    ];
    for (const [what, content, brokenAt] of tampered) {
      const report = verifyExport(content);
      expect({ what, ok: report.ok, at: report.first_broken_id }).toEqual({ what, ok: false, at: brokenAt });
    }
    const bad = join(dir, "tampered.jsonl");
    writeFileSync(bad, tampered[0]![1]);
    const broken = await run("api/src/cli/audit-verify.ts", ["--file", bad]);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toBe(`BROKEN  ${tenantId}: first broken link at event ${lines[1].id} (0 intact before it): the event's fields differ from the text that was hashed\n`);
  });

  test("the account chain exports too; bad arguments and unknown tenants exit 2 with a clear message", async () => {
    const file = join(dir, "account.jsonl");
    const account = await run("api/src/cli/audit-export.ts", ["--account", `--out=${file}`]);
    expect(account.code).toBe(0);
    const verified = await run("api/src/cli/audit-verify.ts", ["--file", file]);
    // the account chain is shared by every test: it verifies unless a test broke it on purpose
    const [report] = await sql`select audit.verify_chain('account') as r`;
    expect(verified.code).toBe(report!.r.ok ? 0 : 1);

    const cases: [string[], string][] = [
      [[], "audit:export: which trail? give a tenant id, or --account"],
      [["not-a-uuid"], 'audit:export: "not-a-uuid" is not a tenant id (a UUID)'],
      [["--account", "00000000-0000-4000-8000-000000000000"], "audit:export: give one tenant id or --account, not both"],
      [["--format", "csv"], "audit:export: unknown option --format"],
      [["--account", "--out"], "audit:export: --out needs a file name"],
      [["00000000-0000-4000-8000-000000000000"], "audit:export: no audit trail for tenant 00000000-0000-4000-8000-000000000000"],
      [["--account", "--out", file], "audit:export: EEXIST"],
    ];
    for (const [args, message] of cases) {
      const r = await run("api/src/cli/audit-export.ts", args);
      expect({ args, code: r.code, first: r.stderr.split("\n")[0]!.slice(0, message.length) }).toEqual({ args, code: 2, first: message });
    }
    expect((await run("api/src/cli/audit-export.ts", ["--account"], { DATABASE_URL: "" })).code).toBe(2);

    const notExport = join(dir, "not-export.jsonl");
    writeFileSync(notExport, '{"hello": "world"}\n');
    const verifyCases: [string[], string][] = [
      [["--file", notExport], `audit:verify: ${notExport}: line 1 is not an audit export header`],
      [["--file", join(dir, "missing.jsonl")], `audit:verify: cannot read ${join(dir, "missing.jsonl")}: ENOENT`],
      [["--file"], "usage: bun run audit:verify"],
      [["--bogus"], "usage: bun run audit:verify"],
    ];
    for (const [args, message] of verifyCases) {
      const r = await run("api/src/cli/audit-verify.ts", args);
      expect({ args, code: r.code, first: r.stderr.split("\n")[0]!.slice(0, message.length) }).toEqual({ args, code: 2, first: message });
    }
  });
});

describe("the measurement switch", () => {
  test("with recording off nothing is appended and pruning refuses; on again, the chains are intact", async () => {
    const admin = await signedInUser();
    const tenantId = (await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Switch Co" } })).json.id as string;
    const count = async () => (await sql`select count(*)::int as n from audit.events where chain = ${tenantId}`)[0]!.n as number;
    expect(await count()).toBe(1);
    // the API roles cannot reach the switch
    for (const role of ["anon", "authenticated", "authenticator", "audit_pruner", "scan_worker"]) {
      const error = await sql
        .begin(async (tx) => {
          await tx.unsafe(`set local role ${role}`);
          await tx`update audit.switch set recording = false`;
        })
        .catch((e: { code?: string }) => e);
      expect((error as { code?: string }).code).toBe("42501");
    }
    try {
      await sql`update audit.switch set recording = false`;
      expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "off", rules: DEMO_RULES } })).status).toBe(200);
      expect(await count()).toBe(1);
      const refused = await asPruner(new Date().toISOString(), tenantId).catch((e: Error) => e);
      expect((refused as Error).message).toBe("the audit trail is switched off, so no checkpoint could be written");
    } finally {
      await sql`update audit.switch set recording = true`;
    }
    expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "on", rules: DEMO_RULES } })).status).toBe(200);
    expect(await count()).toBe(2);
    expect(await verify(admin, tenantId)).toMatchObject({ ok: true, checked: 2 });
  });
});
