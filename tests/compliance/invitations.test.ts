// Membership by invitation, at the SQL level: add_member only invites, the invitee accepts or
// declines, and nothing about the invitee reaches the tenant before they accept.
import { afterAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { addMember, adminSql, invite, newUser, rpc, rpcOk, tenantWithRules, type Sql } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

const memberIds = async (tenantId: string, asUser: string) =>
  (await rpcOk<{ user_id: string }[]>(sql, asUser, "list_members", { tenant_id: tenantId })).map((m) => m.user_id);

/** add_member as `userId` in one transaction with autoaudit.invitations_per_hour set locally. */
async function inviteWithLimit(db: Sql, userId: string, tenantId: string, email: string, perHour: string) {
  return db
    .begin(async (tx) => {
      await tx`select set_config('role', 'authenticated', true),
                      set_config('request.jwt.claims', ${JSON.stringify({ sub: userId, role: "authenticated" })}, true),
                      set_config('autoaudit.invitations_per_hour', ${perHour}, true)`;
      const [row] = await tx`select api.add_member(${tenantId}::uuid, ${email}, 'viewer') as v`;
      return { value: row!.v };
    })
    .catch((error) => ({ error: error as postgres.PostgresError }));
}

describe("membership invitations", () => {
  test("an invitation makes nobody a member; accepting does, with the invited role, once", async () => {
    const t = await tenantWithRules(sql, "inviter");
    const invitee = await newUser(sql, "invitee");
    const answer = await invite(sql, t.admin.id, t.tenantId, invitee.email, "auditor");
    expect(answer).toEqual({ tenant_id: t.tenantId, email: invitee.email, role: "auditor", status: "invited", expires_at: expect.any(String) });
    const days = (Date.parse(answer.expires_at) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(13.9);
    expect(days).toBeLessThanOrEqual(14);

    expect(await memberIds(t.tenantId, t.admin.id)).toEqual([t.admin.id]);
    expect((await rpc(sql, invitee.id, "latest_scan", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(sql, invitee.id, "my_tenants")).toEqual([]);
    expect(await rpcOk(sql, invitee.id, "my_invitations")).toEqual([
      { tenant_id: t.tenantId, tenant_name: "Tenant of inviter", role: "auditor", invited_at: expect.any(String), expires_at: answer.expires_at },
    ]);

    expect(await rpcOk(sql, invitee.id, "accept_invitation", { tenant_id: t.tenantId })).toEqual({
      tenant_id: t.tenantId, tenant_name: "Tenant of inviter", role: "auditor", previous_role: null,
    });
    expect(await memberIds(t.tenantId, t.admin.id)).toEqual([t.admin.id, invitee.id]);
    expect(await rpcOk(sql, invitee.id, "my_tenants")).toEqual([expect.objectContaining({ id: t.tenantId, role: "auditor" })]);
    expect(await rpcOk(sql, invitee.id, "my_invitations")).toEqual([]);
    // consumed: neither a second accept nor a decline finds it
    for (const fn of ["accept_invitation", "decline_invitation"]) {
      expect(await rpc(sql, invitee.id, fn, { tenant_id: t.tenantId })).toMatchObject({ status: 404, error: { code: "PT404", message: "invitation not found" } });
    }
    expect(await rpcOk(sql, t.admin.id, "list_invitations", { tenant_id: t.tenantId })).toEqual([]);
  });

  test("an address without an account can be invited; whoever signs up with it later sees and accepts it", async () => {
    const t = await tenantWithRules(sql, "early");
    const email = `later-${randomUUID()}@example.com`;
    await invite(sql, t.admin.id, t.tenantId, email.toUpperCase(), "viewer");
    const later = await rpcOk<{ id: string; email: string }>(sql, null, "sign_up", { email, password: "correct horse battery", first_name: "Late", last_name: "Comer" });
    expect(await rpcOk(sql, later.id, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId, role: "viewer" })]);
    await rpcOk(sql, later.id, "accept_invitation", { tenant_id: t.tenantId });
    expect(await memberIds(t.tenantId, t.admin.id)).toContain(later.id);
  });

  test("addresses are normalized like auth stores them: spaces, case and Unicode NFC", async () => {
    const t = await tenantWithRules(sql, "unicode");
    const tag = randomUUID();
    const nfc = `jos\u00e9-${tag}@example.com`;
    // signed up decomposed (e + combining acute), which auth stores composed
    const user = await rpcOk<{ id: string; email: string }>(sql, null, "sign_up", {
      email: `jose\u0301-${tag}@example.com`, password: "correct horse battery", first_name: "José", last_name: "N",
    });
    expect(user.email).toBe(nfc);
    // typed composed, with spaces and upper-case ASCII (lower() of non-ASCII letters depends on the database's locale)
    const typed = `  jos\u00e9-${tag.toUpperCase()}@EXAMPLE.COM `;
    expect((await invite(sql, t.admin.id, t.tenantId, typed, "viewer")).email).toBe(nfc);
    expect(await rpcOk(sql, t.admin.id, "list_invitations", { tenant_id: t.tenantId })).toEqual([
      { email: nfc, role: "viewer", invited_by: t.admin.id, invited_at: expect.any(String), expires_at: expect.any(String) },
    ]);
    expect(await rpcOk(sql, user.id, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId })]);
    await rpcOk(sql, user.id, "accept_invitation", { tenant_id: t.tenantId });
    expect(await memberIds(t.tenantId, t.admin.id)).toContain(user.id);
  });

  test("auth.normalize_email is what addresses are normalized with; what it refuses is no address", async () => {
    const [row] = await sql`select compliance.normalize_email(' A@Example.COM ') as typed,
                                   auth.normalize_email(' A@Example.COM ') as auth,
                                   compliance.normalize_email(${"ada\u200b@example.com"}) as invisible,
                                   compliance.normalize_email('no-at-sign') as shapeless`;
    expect(row).toEqual({ typed: "a@example.com", auth: "a@example.com", invisible: null, shapeless: null });
  });

  test("declining leaves no membership, and to the tenant a declined invitation looks pending until it expires", async () => {
    const t = await tenantWithRules(sql, "decliner-tenant");
    const invitee = await newUser(sql, "decliner");
    await invite(sql, t.admin.id, t.tenantId, invitee.email, "viewer");
    const listedBefore = await rpcOk(sql, t.admin.id, "list_invitations", { tenant_id: t.tenantId });
    expect(await rpcOk(sql, invitee.id, "decline_invitation", { tenant_id: t.tenantId })).toEqual({ tenant_id: t.tenantId, status: "declined" });
    expect(await memberIds(t.tenantId, t.admin.id)).toEqual([t.admin.id]);
    expect(await rpcOk(sql, invitee.id, "my_invitations")).toEqual([]);
    expect((await rpc(sql, invitee.id, "accept_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(sql, t.admin.id, "list_invitations", { tenant_id: t.tenantId })).toEqual(listedBefore);

    // inviting again makes it pending again, with the new role
    await invite(sql, t.admin.id, t.tenantId, invitee.email, "auditor");
    expect(await rpcOk(sql, invitee.id, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId, role: "auditor" })]);
  });

  test("only the addressee can accept: another user gets the same 404 as for a tenant without invitation", async () => {
    const t = await tenantWithRules(sql, "addressed");
    const invitee = await newUser(sql, "addressee");
    const other = await newUser(sql, "interloper");
    await invite(sql, t.admin.id, t.tenantId, invitee.email, "admin");
    const stolen = await rpc(sql, other.id, "accept_invitation", { tenant_id: t.tenantId });
    expect(stolen).toMatchObject({ status: 404, error: { code: "PT404", message: "invitation not found" } });
    expect(stolen.error).toEqual((await rpc(sql, other.id, "accept_invitation", { tenant_id: randomUUID() })).error!);
    expect((await rpc(sql, other.id, "decline_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(sql, other.id, "my_invitations")).toEqual([]);
    // the admin (not the addressee) cannot accept it on their behalf either
    expect((await rpc(sql, t.admin.id, "accept_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await memberIds(t.tenantId, t.admin.id)).toEqual([t.admin.id]);
    // and the invitation is still there for its addressee
    await rpcOk(sql, invitee.id, "accept_invitation", { tenant_id: t.tenantId });
  });

  test("an expired invitation cannot be accepted or declined and is listed nowhere", async () => {
    const t = await tenantWithRules(sql, "expiring");
    const invitee = await newUser(sql, "late");
    await invite(sql, t.admin.id, t.tenantId, invitee.email, "viewer");
    await sql`update compliance.invitations set created_at = now() - interval '15 days', expires_at = now() - interval '1 second'
               where tenant_id = ${t.tenantId}`;
    expect(await rpcOk(sql, invitee.id, "my_invitations")).toEqual([]);
    expect(await rpcOk(sql, t.admin.id, "list_invitations", { tenant_id: t.tenantId })).toEqual([]);
    for (const fn of ["accept_invitation", "decline_invitation"]) {
      expect((await rpc(sql, invitee.id, fn, { tenant_id: t.tenantId })).status).toBe(404);
    }
    expect(await memberIds(t.tenantId, t.admin.id)).toEqual([t.admin.id]);
  });

  test("an existing member who accepts gets the invited role; the last admin cannot accept a lower one (409)", async () => {
    const t = await tenantWithRules(sql, "regrade");
    const member = await newUser(sql, "regraded");
    await addMember(sql, t.admin.id, t.tenantId, member, "viewer");
    await invite(sql, t.admin.id, t.tenantId, member.email, "auditor");
    expect(await rpcOk(sql, member.id, "accept_invitation", { tenant_id: t.tenantId })).toMatchObject({ role: "auditor", previous_role: "viewer" });

    await invite(sql, t.admin.id, t.tenantId, t.admin.email, "viewer");
    expect(await rpc(sql, t.admin.id, "accept_invitation", { tenant_id: t.tenantId })).toMatchObject({ status: 409, error: { code: "PT409" } });
    expect(await rpcOk(sql, t.admin.id, "my_tenants")).toEqual([expect.objectContaining({ id: t.tenantId, role: "admin" })]);
    await rpcOk(sql, t.admin.id, "decline_invitation", { tenant_id: t.tenantId });
  });

  test("invitations are limited per inviter per hour (429 with Retry-After), counted across tenants and re-sends", async () => {
    const t = await tenantWithRules(sql, "limited");
    const second = await rpcOk<{ id: string }>(sql, t.admin.id, "create_tenant", { name: "Second tenant" });
    const peer = await tenantWithRules(sql, "peer");
    const target = `same-${randomUUID()}@example.com`;
    expect("value" in (await inviteWithLimit(sql, t.admin.id, t.tenantId, target, "3"))).toBe(true);
    expect("value" in (await inviteWithLimit(sql, t.admin.id, t.tenantId, target, "3"))).toBe(true);
    expect("value" in (await inviteWithLimit(sql, t.admin.id, second.id, `other-${randomUUID()}@example.com`, "3"))).toBe(true);
    const refused = await inviteWithLimit(sql, t.admin.id, second.id, `fourth-${randomUUID()}@example.com`, "3");
    expect("error" in refused).toBe(true);
    const error = (refused as { error: postgres.PostgresError }).error;
    expect(error.code).toBe("PGRST");
    expect(JSON.parse(error.message)).toMatchObject({ code: "PT429", message: "too many invitations" });
    const detail = JSON.parse(error.detail!);
    expect(detail.status).toBe(429);
    expect(Number(detail.headers["Retry-After"])).toBeGreaterThan(3500);
    expect(Number(detail.headers["Retry-After"])).toBeLessThanOrEqual(3600);
    // the refused invitation was not recorded; another inviter is not affected
    expect(await sql`select 1 from compliance.invitations where tenant_id = ${second.id} and email like 'fourth-%'`).toHaveLength(0);
    expect("value" in (await inviteWithLimit(sql, peer.admin.id, peer.tenantId, target, "3"))).toBe(true);
    // a send older than an hour no longer counts
    await sql`update compliance.invitation_sends set sent_at = now() - interval '61 minutes'
               where id = (select min(id) from compliance.invitation_sends where inviter = ${t.admin.id})`;
    expect("value" in (await inviteWithLimit(sql, t.admin.id, second.id, `fifth-${randomUUID()}@example.com`, "3"))).toBe(true);
  });

  test("the default limit (20 an hour) holds under concurrent requests", async () => {
    const t = await tenantWithRules(sql, "burst");
    const results = await Promise.all(
      Array.from({ length: 26 }, (_, i) => rpc(sql, t.admin.id, "add_member", { tenant_id: t.tenantId, email: `burst-${i}-${randomUUID()}@example.com`, role: "viewer" })),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(20);
    expect(results.filter((r) => r.status === 429)).toHaveLength(6);
    const [row] = await sql`select count(*)::int as n from compliance.invitations where tenant_id = ${t.tenantId}`;
    expect(row!.n).toBe(20);
  });

  test("authenticated can read neither invitations nor sends, nor call the helpers", async () => {
    const t = await tenantWithRules(sql, "private");
    await invite(sql, t.admin.id, t.tenantId, `someone-${randomUUID()}@example.com`, "viewer");
    for (const statement of [
      "select * from compliance.invitations",
      "select * from compliance.invitation_sends",
      "select compliance.normalize_email('a@example.com')",
      "select compliance.caller_email()",
      `select compliance.count_invitation_send('${t.admin.id}')`,
      `select compliance.my_pending_invitation('${t.tenantId}')`,
    ]) {
      const error = await sql
        .begin(async (tx) => {
          await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: t.admin.id, role: "authenticated" })}, true)`;
          await tx.unsafe(statement);
        })
        .then(() => undefined, (e) => e);
      expect({ statement, code: error?.code }).toEqual({ statement, code: "42501" });
    }
    const [policies] = await sql`select bool_and(relrowsecurity) as rls from pg_class
                                  where oid in ('compliance.invitations'::regclass, 'compliance.invitation_sends'::regclass)`;
    expect(policies!.rls).toBe(true);
  });
});
