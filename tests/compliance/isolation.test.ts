import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { mintToken } from "../api/helpers";
import { engineRpc } from "../support/engine";
import { testStack } from "../support/stack";
import { adminSql, rpc, rpcAnswer, rpcOk, submit, tenantWithRules, findings, type TenantFixture } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

let a: TenantFixture;
let b: TenantFixture;
let bScanId: string;
let bJobId: string;

beforeAll(async () => {
  a = await tenantWithRules("alice");
  b = await tenantWithRules("bob");
  await submit(a.admin, a.tenantId, ["pass", "pass", "fail", "pass", "pass", "pass"]);
  bScanId = (await submit(b.admin, b.tenantId, ["fail", "fail", "fail", "pass", "pass", "pass"])).id;
  bJobId = (await rpcOk(b.admin, "request_scan", { tenant_id: b.tenantId, framework: "cis-m365" })).id;
});

async function counts() {
  const [row] = await sql`
    select (select count(*) from compliance.scans where tenant_id = ${b.tenantId})::int as scans,
           (select count(*) from compliance.issues where tenant_id = ${b.tenantId})::int as issues,
           (select count(*) from compliance.tenant_members where tenant_id = ${b.tenantId})::int as members,
           (select count(*) from compliance.rules where tenant_id = ${b.tenantId})::int as rules,
           (select count(*) from compliance.scan_jobs where tenant_id = ${b.tenantId})::int as jobs,
           (select string_agg(title, '|' order by id) from compliance.rules where tenant_id = ${b.tenantId}) as titles`;
  return row;
}

describe("tenant isolation", () => {
  test("user A gets the same 404 for tenant B as for a tenant that does not exist, on every function", async () => {
    const calls: [string, (tenant: string) => Record<string, unknown>][] = [
      ["latest_scan", (t) => ({ tenant_id: t })],
      ["list_scans", (t) => ({ tenant_id: t })],
      ["rule_trend", (t) => ({ tenant_id: t, last_n: 5 })],
      ["list_members", (t) => ({ tenant_id: t })],
      ["list_rules", (t) => ({ tenant_id: t })],
      ["submit_scan", (t) => ({ tenant_id: t, framework: "cis-m365", findings: findings(["pass"]) })],
      ["request_scan", (t) => ({ tenant_id: t, framework: "cis-m365" })],
      ["add_member", (t) => ({ tenant_id: t, email: a.admin.email, role: "admin" })],
      ["remove_member", (t) => ({ tenant_id: t, user_id: b.admin.id })],
      ["upsert_rules", (t) => ({ tenant_id: t, framework: "cis-m365", rules: [{ key: "1.1.1", title: "pwned", severity: "low" }] })],
    ];
    const before = await counts();
    for (const [fn, args] of calls) {
      const other = await rpc(a.admin, fn, args(b.tenantId));
      const missing = await rpc(a.admin, fn, args(randomUUID()));
      expect({ fn, status: other.status, error: other.error }).toEqual({
        fn,
        status: 404,
        error: { code: "PT404", message: "tenant not found", details: null, hint: expect.any(String) },
      });
      expect(other.error).toEqual(missing.error!);
    }
    expect(await counts()).toEqual(before);
  });

  test("a scan or job of tenant B is not found by id, exactly like a random id", async () => {
    const scan = await rpc(a.admin, "scan", { scan_id: bScanId });
    const random = await rpc(a.admin, "scan", { scan_id: randomUUID() });
    expect(scan).toEqual({ status: 404, error: { code: "PT404", message: "scan not found", details: null, hint: null } });
    expect(random).toEqual(scan);
    const job = await rpc(a.admin, "scan_job", { job_id: bJobId });
    expect(job.status).toBe(404);
    expect(job.error).toEqual((await rpc(a.admin, "scan_job", { job_id: randomUUID() })).error!);
    // and B, the owner, does see both
    expect((await rpcOk(b.admin, "scan", { scan_id: bScanId })).id).toBe(bScanId);
    expect((await rpcOk(b.admin, "scan_job", { job_id: bJobId })).id).toBe(bJobId);
  });

  test("a cursor taken from tenant B's listing reveals nothing of B in A's listing", async () => {
    const bCursor = (await rpcOk(b.admin, "list_scans", { tenant_id: b.tenantId })).scans[0].cursor;
    const page = await rpcOk(a.admin, "list_scans", { tenant_id: a.tenantId, before: bCursor + 1 });
    expect(page.scans.every((s: { tenant_id: string }) => s.tenant_id === a.tenantId)).toBe(true);
  });

  test("my_tenants lists only the caller's tenants", async () => {
    const mine = await rpcOk(a.admin, "my_tenants");
    expect(mine).toEqual([{ id: a.tenantId, name: "Tenant of alice", role: "admin", created_at: expect.any(String) }]);
  });

  test("row-level security: as authenticated, direct reads see only the caller's tenants", async () => {
    const seen = await sql.begin(async (tx) => {
      await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: a.admin.id, role: "authenticated" })}, true)`;
      const rows = await tx`
        select 'tenants' as t, id::text as tenant from compliance.tenants
        union all select 'members', tenant_id::text from compliance.tenant_members
        union all select 'rules', tenant_id::text from compliance.rules
        union all select 'scans', tenant_id::text from compliance.scans
        union all select 'issues', tenant_id::text from compliance.issues
        union all select 'jobs', tenant_id::text from compliance.scan_jobs`;
      return rows;
    });
    expect(new Set(seen.map((r) => r.tenant))).toEqual(new Set([a.tenantId]));
    expect(new Set(seen.map((r) => r.t))).toEqual(new Set(["tenants", "members", "rules", "scans", "issues"]));
  });

  test("authenticated cannot write the tables directly, even its own tenant", async () => {
    for (const statement of [
      `insert into compliance.tenant_members (tenant_id, user_id, role) values ('${b.tenantId}', '${a.admin.id}', 'admin')`,
      `update compliance.scans set score = 100 where tenant_id = '${a.tenantId}'`,
      `delete from compliance.issues where tenant_id = '${a.tenantId}'`,
    ]) {
      const error = await sql
        .begin(async (tx) => {
          await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: a.admin.id, role: "authenticated" })}, true)`;
          await tx.unsafe(statement);
        })
        .then(() => undefined, (e) => e);
      expect(error?.code).toBe("42501");
    }
  });

  test("without a signed-in user: anon may not call, and a token without sub is 401", async () => {
    // 42501 for the anonymous role is PostgREST's 401 (403 once a token names a role).
    const anon = await rpcAnswer(null, "latest_scan", { tenant_id: a.tenantId });
    expect({ status: anon.status, body: anon.body, www: anon.headers["www-authenticate"] }).toEqual({
      status: 401,
      body: { code: "42501", details: null, hint: null, message: "permission denied for function latest_scan" },
      www: "Bearer",
    });
    // A valid token of the API's signed without `sub`: the function itself refuses it.
    const noSub = await engineRpc("latest_scan", { tenant_id: a.tenantId }, { token: await mintToken({ role: "authenticated", aud: testStack().jwtAudience }) });
    expect({ status: noSub.status, body: noSub.body }).toEqual({
      status: 401,
      body: { code: "PT401", details: null, hint: null, message: "sign in required" },
    });
  });

  test("PUBLIC executes no compliance or api function, and anon none of the compliance ones", async () => {
    const rows = await sql`
      select p.oid::regprocedure::text as fn,
             has_function_privilege('public', p.oid, 'execute') as public,
             has_function_privilege('anon', p.oid, 'execute') as anon
        from pg_proc p where p.pronamespace in ('api'::regnamespace, 'compliance'::regnamespace)`;
    expect(rows.filter((r) => r.public).map((r) => r.fn)).toEqual([]);
    expect(rows.filter((r) => r.anon && !/sign_up|sign_in|issue_token|validate_token|revoke_token\(|exchange_auth_code\(|verify_email|resend_verification|request_password_reset|reset_password/.test(r.fn)).map((r) => r.fn)).toEqual([]);
  });
});
