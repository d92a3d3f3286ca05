import { afterAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { call, newUser, signIn, signUp, signedInUser } from "../api/helpers";
import { adminSql, DEMO_RULES, findings } from "../compliance/support";

const sql = adminSql(4);
afterAll(() => sql.end());

const traced = () => ({ "X-Request-Id": randomUUID(), "User-Agent": `audit-test/${randomUUID().slice(0, 8)}` });

async function eventsWhere(requestId: string) {
  return sql`select * from audit.events where request_id = ${requestId} order by id`;
}

describe("account events", () => {
  test("an event carries the request id the gateway answered with, also when the caller sent none or a bad one", async () => {
    const variants: Record<string, string>[] = [{}, { "X-Request-Id": "not a valid id; drop table" }];
    for (const headers of variants) {
      const user = newUser();
      const up = await call("/rpc/sign_up", { body: { ...user, first_name: "A", last_name: "B" }, headers });
      expect(up.status).toBe(200);
      const answered = up.headers.get("x-request-id")!;
      expect(answered).toMatch(/^[0-9a-f-]{36}$/);
      const rows = await eventsWhere(answered);
      expect(rows.map((r) => r.action)).toEqual(["sign_up"]);
    }
  });

  test("sign-up, sign-in, a failed sign-in, refresh and sign-out each record one event", async () => {
    const user = newUser();
    let h = traced();
    const up = await call("/rpc/sign_up", { body: { ...user, first_name: "A", last_name: "B" }, headers: h });
    expect(up.status).toBe(200);
    const userId = up.json.id as string;
    let rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["sign_up"]);
    expect(rows[0]!.actor).toBe(userId);
    expect(rows[0]!.user_agent).toBe(h["User-Agent"]);
    expect(rows[0]!.client).not.toBe("");

    h = traced();
    const bad = await call("/rpc/sign_in", { body: { email: user.email, password: "wrong-password" }, headers: h });
    expect(bad.status).toBe(401);
    rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["sign_in_failed"]);
    expect(rows[0]!.user_id).toBe(userId);
    expect(JSON.stringify(rows[0]!.details)).not.toContain("wrong-password");

    h = traced();
    const ok = await call("/rpc/sign_in", { body: { email: user.email, password: user.password }, headers: h });
    expect(ok.status).toBe(200);
    rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["sign_in_succeeded"]);
    expect(rows[0]!.actor).toBe(userId);
    const [session] = await sql`select id from auth.sessions where user_id = ${userId}`;
    expect(rows[0]!.session_id).toBe(session!.id);

    h = traced();
    const refreshed = await call("/rpc/issue_token", { body: { refresh_token: ok.json.refresh_token }, headers: h });
    expect(refreshed.status).toBe(200);
    rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["refresh"]);
    expect(JSON.stringify(rows[0]!.details)).not.toContain(ok.json.refresh_token);

    h = traced();
    const out = await call("/rpc/revoke_token", { body: { refresh_token: refreshed.json.refresh_token }, headers: h });
    expect(out.status).toBe(200);
    rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["sign_out_one"]);
    expect(rows[0]!.target).toBe(session!.id);

    const mine = await call("/rpc/my_security_events", { token: (await signIn(user)).access_token });
    expect(mine.status).toBe(200);
    expect(mine.json.events.map((e: any) => e.action).slice(0, 6)).toEqual([
      "sign_in_succeeded", "sign_out_one", "refresh", "sign_in_succeeded", "sign_in_failed", "sign_up",
    ]);
  });

  test("a rolled-back write leaves no event; a failed sign-in is kept by design", async () => {
    const user = newUser();
    await signUp(user);
    const h = traced();
    // 409: the sign-up raises and rolls back
    const dup = await call("/rpc/sign_up", { body: { ...user, first_name: "A", last_name: "B" }, headers: h });
    expect(dup.status).toBe(409);
    expect(await eventsWhere(h["X-Request-Id"])).toHaveLength(0);
  });

  test("pagination has no gaps or repeats, and bad input is a 400", async () => {
    const user = await signedInUser();
    for (let i = 0; i < 4; i++) await signIn(user);
    const seen: number[] = [];
    let before: number | null = null;
    for (;;) {
      const page: any = await call("/rpc/my_security_events", { token: user.access_token, body: { page_size: 2, before } });
      expect(page.status).toBe(200);
      seen.push(...page.json.events.map((e: any) => e.id));
      before = page.json.next_before;
      if (before === null) break;
    }
    const all = await sql`select id from audit.events where user_id = ${user.user.id} order by id desc`;
    expect(seen).toEqual(all.map((r) => Number(r.id)));
    for (const body of [{ page_size: 0 }, { page_size: 101 }, { before: -1 }, { before: "abc" }]) {
      const r = await call("/rpc/my_security_events", { token: user.access_token, body });
      expect(r.status).toBe(400);
      expect(r.json.code).toBeString();
    }
  });
});

describe("tenant events", () => {
  test("compliance changes are recorded on the tenant's chain and readable by its admins", async () => {
    const admin = await signedInUser();
    const other = await signedInUser();
    let h = traced();
    const tenant = await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Audit Co" }, headers: h });
    expect(tenant.status).toBe(200);
    const tenantId = tenant.json.id as string;
    let rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => [r.action, r.actor, r.tenant_id])).toEqual([["tenant_created", admin.user.id, tenantId]]);

    h = traced();
    expect((await call("/rpc/upsert_rules", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, framework: "cis-m365", rules: DEMO_RULES } })).status).toBe(200);
    expect((await eventsWhere(h["X-Request-Id"])).map((r) => r.action)).toEqual(["rules_upserted"]);

    h = traced();
    const scan = await call("/rpc/submit_scan", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, framework: "cis-m365", findings: findings(["pass", "fail", "pass", "pass", "fail", "not_tested"]) } });
    expect(scan.status).toBe(200);
    rows = await eventsWhere(h["X-Request-Id"]);
    expect(rows.map((r) => r.action)).toEqual(["scan_submitted"]);
    expect(JSON.stringify(rows[0]!.details)).not.toContain("checked");

    h = traced();
    expect((await call("/rpc/add_member", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, email: other.email, role: "viewer" } })).status).toBe(200);
    expect((await eventsWhere(h["X-Request-Id"])).map((r) => r.action)).toEqual(["invitation_sent"]);
    h = traced();
    expect((await call("/rpc/accept_invitation", { token: other.access_token, headers: h, body: { tenant_id: tenantId } })).status).toBe(200);
    expect((await eventsWhere(h["X-Request-Id"])).map((r) => [r.action, r.actor])).toEqual([["invitation_accepted", other.user.id]]);
    h = traced();
    expect((await call("/rpc/set_member_role", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, user_id: other.user.id, role: "auditor" } })).status).toBe(200);
    expect((await eventsWhere(h["X-Request-Id"])).map((r) => r.action)).toEqual(["role_changed"]);

    // a failed write leaves nothing: a bad finding rolls the scan back
    h = traced();
    const badScan = await call("/rpc/submit_scan", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, framework: "cis-m365", findings: [{ rule: "nope", result: "pass" }] } });
    expect(badScan.status).toBe(400);
    expect(await eventsWhere(h["X-Request-Id"])).toHaveLength(0);

    h = traced();
    expect((await call("/rpc/remove_member", { token: admin.access_token, headers: h,
      body: { tenant_id: tenantId, user_id: other.user.id } })).status).toBe(200);
    expect((await eventsWhere(h["X-Request-Id"])).map((r) => r.action)).toEqual(["member_removed"]);

    const trail = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, page_size: 100 } });
    expect(trail.status).toBe(200);
    expect(trail.json.events.map((e: any) => e.action)).toEqual([
      "member_removed", "role_changed", "invitation_accepted", "invitation_sent", "scan_submitted", "rules_upserted", "tenant_created",
    ]);
    const filtered = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, action: "scan_submitted" } });
    expect(filtered.json.events).toHaveLength(1);

    // pagination: no gaps or repeats
    const seen: number[] = [];
    let before: number | null = null;
    do {
      const page: any = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, page_size: 3, before } });
      seen.push(...page.json.events.map((e: any) => e.id));
      before = page.json.next_before;
    } while (before !== null);
    expect(seen).toEqual(trail.json.events.map((e: any) => e.id));

    // another tenant's trail is a 404; bad input is a 4xx
    expect((await call("/rpc/tenant_audit", { token: other.access_token, body: { tenant_id: tenantId } })).status).toBe(404);
    expect((await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: randomUUID() } })).status).toBe(404);
    expect((await call("/rpc/verify_audit_trail", { token: other.access_token, body: { tenant_id: tenantId } })).status).toBe(404);
    for (const body of [{ action: "dropped_tables" }, { page_size: 0 }, { before: 0 }, { before: "x" }]) {
      const r = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, ...body } });
      expect(r.status).toBe(400);
    }

    const verified = await call("/rpc/verify_audit_trail", { token: admin.access_token, body: { tenant_id: tenantId } });
    expect(verified.json).toMatchObject({ ok: true, checked: 7, first_broken_id: null });

    // a superuser edit (bypassing the triggers) is found at the right row
    const victim = trail.json.events[3].id;
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update audit.events set details = '{"role": "admin"}' where id = ${victim}`;
    });
    const broken = await call("/rpc/verify_audit_trail", { token: admin.access_token, body: { tenant_id: tenantId } });
    expect(broken.json).toMatchObject({ ok: false, first_broken_id: victim });
  });
});

describe("append-only", () => {
  test("no API role can update, delete or truncate events", async () => {
    const [last] = await sql`select max(id) as id from audit.events`;
    const id = last!.id;
    for (const role of ["anon", "authenticated", "authenticator", "auth_admin"]) {
      for (const statement of [
        `update audit.events set details = '{}' where id = ${id}`,
        `delete from audit.events where id = ${id}`,
        `truncate audit.events`,
      ]) {
        const error = await sql
          .begin(async (tx) => {
            await tx.unsafe(`set local role ${role}`);
            await tx.unsafe(statement);
          })
          .catch((e: Error) => e);
        expect(error).toBeInstanceOf(Error);
      }
    }
    // the owner's own grant is gone, and the trigger refuses even a superuser
    const error = await sql`delete from audit.events where id = ${id}`.catch((e: Error) => e);
    expect((error as Error).message).toContain("append-only");
  });
});

describe("bun run audit:verify", () => {
  test("reports the chains and exits 1 with the first broken link", async () => {
    const { verifyAuditTrail } = await import("../../api/src/cli/audit-verify");
    const { testStack } = await import("../support/stack");
    const reports = await verifyAuditTrail(testStack().databaseUrl);
    expect(reports.find((r) => r.chain === "account")).toMatchObject({ ok: true });
    const proc = Bun.spawn(["bun", "api/src/cli/audit-verify.ts"], {
      cwd: `${import.meta.dir}/../..`,
      env: { PATH: process.env.PATH ?? "", DATABASE_URL: testStack().databaseUrl },
      stdout: "pipe",
    });
    const out = await new Response(proc.stdout).text();
    const broken = reports.filter((r) => !r.ok);
    expect(await proc.exited).toBe(broken.length ? 1 : 0);
    expect(out).toContain("ok      account");
  });
});
