import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { addMember, adminSql, findings, newUser, rpc, rpcOk, submit, tenantWithRules, type TenantFixture, type TestUser } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

let t: TenantFixture;
let viewer: TestUser;
let auditor: TestUser;

beforeAll(async () => {
  t = await tenantWithRules("owner");
  viewer = await newUser("viewer");
  auditor = await newUser("auditor");
  // invited by the address as typed (case and spaces do not matter), then accepted
  await addMember(t.admin, t.tenantId, viewer, "viewer", viewer.email.toUpperCase());
  await addMember(t.admin, t.tenantId, auditor, "auditor", ` ${auditor.email} `);
});

describe("membership roles", () => {
  test("create_tenant makes the creator its only admin", async () => {
    const user = await newUser("creator");
    const tenant = await rpcOk(user, "create_tenant", { name: "  Contoso  " });
    expect(tenant).toMatchObject({ name: "Contoso", role: "admin" });
    expect(await rpcOk(user, "list_members", { tenant_id: tenant.id })).toEqual([
      expect.objectContaining({ user_id: user.id, email: user.email, role: "admin" }),
    ]);
  });

  test("viewer reads but may not submit, request scans, manage members or rules (403)", async () => {
    await submit(t.admin, t.tenantId, ["pass", "fail"]);
    expect((await rpc(viewer, "latest_scan", { tenant_id: t.tenantId })).status).toBe(200);
    expect((await rpc(viewer, "list_scans", { tenant_id: t.tenantId })).status).toBe(200);
    expect((await rpc(viewer, "rule_trend", { tenant_id: t.tenantId })).status).toBe(200);
    expect((await rpc(viewer, "list_members", { tenant_id: t.tenantId })).status).toBe(200);
    for (const [fn, args] of [
      ["submit_scan", { tenant_id: t.tenantId, framework: "cis-m365", findings: findings(["pass"]) }],
      ["request_scan", { tenant_id: t.tenantId, framework: "cis-m365" }],
      ["add_member", { tenant_id: t.tenantId, email: viewer.email, role: "admin" }],
      ["set_member_role", { tenant_id: t.tenantId, user_id: viewer.id, role: "admin" }],
      ["list_invitations", { tenant_id: t.tenantId }],
      ["upsert_rules", { tenant_id: t.tenantId, framework: "cis-m365", rules: [{ key: "9.9", title: "x", severity: "low" }] }],
      ["remove_member", { tenant_id: t.tenantId, user_id: auditor.id }],
    ] as const) {
      const result = await rpc(viewer, fn, args);
      expect({ fn, status: result.status, code: result.error?.code }).toEqual({ fn, status: 403, code: "PT403" });
    }
  });

  test("auditor submits and requests scans but may not manage members or rules", async () => {
    expect((await rpc(auditor, "submit_scan", { tenant_id: t.tenantId, framework: "cis-m365", findings: findings(["pass"]) })).status).toBe(200);
    expect((await rpc(auditor, "request_scan", { tenant_id: t.tenantId, framework: "cis-m365" })).status).toBe(200);
    expect((await rpc(auditor, "add_member", { tenant_id: t.tenantId, email: auditor.email, role: "admin" })).status).toBe(403);
    expect((await rpc(auditor, "set_member_role", { tenant_id: t.tenantId, user_id: auditor.id, role: "admin" })).status).toBe(403);
    expect((await rpc(auditor, "upsert_rules", { tenant_id: t.tenantId, framework: "cis-m365", rules: [{ key: "9.9", title: "x", severity: "low" }] })).status).toBe(403);
  });

  test("admin changes roles; the last admin can be neither demoted nor removed (409)", async () => {
    const f = await tenantWithRules("solo");
    const demote = await rpc(f.admin, "set_member_role", { tenant_id: f.tenantId, user_id: f.admin.id, role: "viewer" });
    expect(demote).toMatchObject({ status: 409, error: { code: "PT409" } });
    const remove = await rpc(f.admin, "remove_member", { tenant_id: f.tenantId, user_id: f.admin.id });
    expect(remove).toMatchObject({ status: 409, error: { code: "PT409" } });

    const second = await newUser("second");
    await addMember(f.admin, f.tenantId, second, "auditor");
    const promoted = await rpcOk(f.admin, "set_member_role", { tenant_id: f.tenantId, user_id: second.id, role: "admin" });
    expect(promoted).toEqual({ tenant_id: f.tenantId, user_id: second.id, role: "admin", previous_role: "auditor" });
    // with two admins, the first may step down
    expect(await rpcOk(f.admin, "set_member_role", { tenant_id: f.tenantId, user_id: f.admin.id, role: "viewer" })).toMatchObject({ role: "viewer" });
    expect((await rpc(f.admin, "set_member_role", { tenant_id: f.tenantId, user_id: f.admin.id, role: "admin" })).status).toBe(403);
    // inviting a member with another role is no role change: nothing happens until they accept
    await rpcOk(second, "add_member", { tenant_id: f.tenantId, email: second.email, role: "viewer" });
    expect(await rpcOk(second, "list_members", { tenant_id: f.tenantId })).toContainEqual(
      expect.objectContaining({ user_id: second.id, role: "admin" }),
    );
  });

  test("a member may leave; a removed member loses access as if the tenant did not exist", async () => {
    const f = await tenantWithRules("leaver-tenant");
    const leaver = await newUser("leaver");
    const kicked = await newUser("kicked");
    for (const u of [leaver, kicked]) await addMember(f.admin, f.tenantId, u, "auditor");
    const scan = await submit(kicked, f.tenantId, ["pass"]);

    expect(await rpcOk(leaver, "remove_member", { tenant_id: f.tenantId, user_id: leaver.id })).toMatchObject({ role: "auditor" });
    expect(await rpcOk(f.admin, "remove_member", { tenant_id: f.tenantId, user_id: kicked.id })).toMatchObject({ role: "auditor" });
    for (const u of [leaver, kicked]) {
      expect((await rpc(u, "latest_scan", { tenant_id: f.tenantId })).status).toBe(404);
      expect((await rpc(u, "scan", { scan_id: scan.id })).status).toBe(404);
    }
    expect((await rpc(f.admin, "remove_member", { tenant_id: f.tenantId, user_id: kicked.id })).status).toBe(404);
  });

  test("add_member: any valid address is invited (200); bad role or email 400", async () => {
    expect(await rpc(t.admin, "add_member", { tenant_id: t.tenantId, email: "nobody-here@example.com", role: "viewer" })).toMatchObject({
      status: 200,
      value: { tenant_id: t.tenantId, email: "nobody-here@example.com", role: "viewer", status: "invited" },
    });
    for (const email of ["not-an-address", "two@@example.com", "a b@example.com", "nodot@example", "", "   "]) {
      expect({ email, code: (await rpc(t.admin, "add_member", { tenant_id: t.tenantId, email, role: "viewer" })).error?.code }).toEqual({ email, code: "22023" });
    }
    expect((await rpc(t.admin, "add_member", { tenant_id: t.tenantId, email: viewer.email, role: "owner" })).error?.code).toBe("22023");
    expect((await rpc(t.admin, "add_member", { tenant_id: t.tenantId, email: viewer.email, role: null })).error?.code).toBe("22023");
    expect((await rpc(t.admin, "add_member", { tenant_id: t.tenantId, email: "x".repeat(300), role: "viewer" })).error?.code).toBe("22023");
  });

  test("set_member_role: only for members (404), bad role 400", async () => {
    const outsider = await newUser("outsider");
    expect(await rpc(t.admin, "set_member_role", { tenant_id: t.tenantId, user_id: outsider.id, role: "viewer" })).toMatchObject({
      status: 404,
      error: { code: "PT404", message: "member not found" },
    });
    expect((await rpc(t.admin, "set_member_role", { tenant_id: t.tenantId, user_id: viewer.id, role: "owner" })).error?.code).toBe("22023");
    expect((await rpc(t.admin, "set_member_role", { tenant_id: t.tenantId, user_id: null, role: "viewer" })).error?.code).toBe("22023");
  });

  test("create_tenant rejects blank and over-long names", async () => {
    for (const name of [null, "", "   ", "n".repeat(201)]) {
      expect((await rpc(t.admin, "create_tenant", { name })).status).toBe(400);
    }
  });
});
