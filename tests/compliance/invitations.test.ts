// Membership by invitation, at the SQL level: add_member only invites, the invitee accepts or
// declines, and nothing about the invitee reaches the tenant before they accept.
import { afterAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { addMember, adminSql, invite, newUser, PASSWORD, rpc, rpcAnswer, rpcOk, signInUser, tenantWithRules, type TestUser } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

const memberIds = async (tenantId: string, asUser: TestUser) =>
  (await rpcOk<{ user_id: string }[]>(asUser, "list_members", { tenant_id: tenantId })).map((m) => m.user_id);

/** add_member as `user`, through an engine whose sessions have autoaudit.invitations_per_hour = `perHour`. */
function inviteWithLimit(user: TestUser, tenantId: string, email: string, perHour: string) {
  return rpcAnswer(user, "add_member", { tenant_id: tenantId, email, role: "viewer" }, { settings: { "autoaudit.invitations_per_hour": perHour } });
}

describe("membership invitations", () => {
  test("an invitation makes nobody a member; accepting does, with the invited role, once", async () => {
    const t = await tenantWithRules("inviter");
    const invitee = await newUser("invitee");
    const answer = await invite(t.admin, t.tenantId, invitee.email, "auditor");
    expect(answer).toEqual({ tenant_id: t.tenantId, email: invitee.email, role: "auditor", status: "invited", expires_at: expect.any(String) });
    const days = (Date.parse(answer.expires_at) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(13.9);
    expect(days).toBeLessThanOrEqual(14);

    expect(await memberIds(t.tenantId, t.admin)).toEqual([t.admin.id]);
    expect((await rpc(invitee, "latest_scan", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(invitee, "my_tenants")).toEqual([]);
    expect(await rpcOk(invitee, "my_invitations")).toEqual([
      { tenant_id: t.tenantId, tenant_name: "Tenant of inviter", role: "auditor", invited_at: expect.any(String), expires_at: answer.expires_at },
    ]);

    expect(await rpcOk(invitee, "accept_invitation", { tenant_id: t.tenantId })).toEqual({
      tenant_id: t.tenantId, tenant_name: "Tenant of inviter", role: "auditor", previous_role: null,
    });
    expect(await memberIds(t.tenantId, t.admin)).toEqual([t.admin.id, invitee.id]);
    expect(await rpcOk(invitee, "my_tenants")).toEqual([expect.objectContaining({ id: t.tenantId, role: "auditor" })]);
    expect(await rpcOk(invitee, "my_invitations")).toEqual([]);
    // consumed: neither a second accept nor a decline finds it
    for (const fn of ["accept_invitation", "decline_invitation"]) {
      expect(await rpc(invitee, fn, { tenant_id: t.tenantId })).toMatchObject({ status: 404, error: { code: "PT404", message: "invitation not found" } });
    }
    expect(await rpcOk(t.admin, "list_invitations", { tenant_id: t.tenantId })).toEqual([]);
  });

  test("an address without an account can be invited; whoever signs up with it later sees and accepts it", async () => {
    const t = await tenantWithRules("early");
    const email = `later-${randomUUID()}@example.com`;
    await invite(t.admin, t.tenantId, email.toUpperCase(), "viewer");
    await rpcOk(null, "sign_up", { email, password: PASSWORD, first_name: "Late", last_name: "Comer" });
    const later = await signInUser(email, PASSWORD);
    expect(await rpcOk(later, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId, role: "viewer" })]);
    await rpcOk(later, "accept_invitation", { tenant_id: t.tenantId });
    expect(await memberIds(t.tenantId, t.admin)).toContain(later.id);
  });

  test("addresses are normalized like auth stores them: spaces, case and Unicode NFC", async () => {
    const t = await tenantWithRules("unicode");
    const tag = randomUUID();
    const nfc = `jos\u00e9-${tag}@example.com`;
    // signed up decomposed (e + combining acute), which auth stores composed
    const signedUp = await rpcOk<{ id: string; email: string }>(null, "sign_up", {
      email: `jose\u0301-${tag}@example.com`, password: PASSWORD, first_name: "José", last_name: "N",
    });
    expect(signedUp.email).toBe(nfc);
    const user = await signInUser(nfc, PASSWORD);
    // typed composed, with spaces and upper-case ASCII (lower() of non-ASCII letters depends on the database's locale)
    const typed = `  jos\u00e9-${tag.toUpperCase()}@EXAMPLE.COM `;
    expect((await invite(t.admin, t.tenantId, typed, "viewer")).email).toBe(nfc);
    expect(await rpcOk(t.admin, "list_invitations", { tenant_id: t.tenantId })).toEqual([
      { email: nfc, role: "viewer", invited_by: t.admin.id, invited_at: expect.any(String), expires_at: expect.any(String) },
    ]);
    expect(await rpcOk(user, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId })]);
    await rpcOk(user, "accept_invitation", { tenant_id: t.tenantId });
    expect(await memberIds(t.tenantId, t.admin)).toContain(user.id);
  });

  test("auth.normalize_email is what addresses are normalized with; what it refuses is no address", async () => {
    const [row] = await sql`select compliance.normalize_email(' A@Example.COM ') as typed,
                                   auth.normalize_email(' A@Example.COM ') as auth,
                                   compliance.normalize_email(${"ada\u200b@example.com"}) as invisible,
                                   compliance.normalize_email('no-at-sign') as shapeless`;
    expect(row).toEqual({ typed: "a@example.com", auth: "a@example.com", invisible: null, shapeless: null });
  });

  test("declining leaves no membership, and to the tenant a declined invitation looks pending until it expires", async () => {
    const t = await tenantWithRules("decliner-tenant");
    const invitee = await newUser("decliner");
    await invite(t.admin, t.tenantId, invitee.email, "viewer");
    const listedBefore = await rpcOk(t.admin, "list_invitations", { tenant_id: t.tenantId });
    expect(await rpcOk(invitee, "decline_invitation", { tenant_id: t.tenantId })).toEqual({ tenant_id: t.tenantId, status: "declined" });
    expect(await memberIds(t.tenantId, t.admin)).toEqual([t.admin.id]);
    expect(await rpcOk(invitee, "my_invitations")).toEqual([]);
    expect((await rpc(invitee, "accept_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(t.admin, "list_invitations", { tenant_id: t.tenantId })).toEqual(listedBefore);

    // inviting again makes it pending again, with the new role
    await invite(t.admin, t.tenantId, invitee.email, "auditor");
    expect(await rpcOk(invitee, "my_invitations")).toEqual([expect.objectContaining({ tenant_id: t.tenantId, role: "auditor" })]);
  });

  test("only the addressee can accept: another user gets the same 404 as for a tenant without invitation", async () => {
    const t = await tenantWithRules("addressed");
    const invitee = await newUser("addressee");
    const other = await newUser("interloper");
    await invite(t.admin, t.tenantId, invitee.email, "admin");
    const stolen = await rpc(other, "accept_invitation", { tenant_id: t.tenantId });
    expect(stolen).toMatchObject({ status: 404, error: { code: "PT404", message: "invitation not found" } });
    expect(stolen.error).toEqual((await rpc(other, "accept_invitation", { tenant_id: randomUUID() })).error!);
    expect((await rpc(other, "decline_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await rpcOk(other, "my_invitations")).toEqual([]);
    // the admin (not the addressee) cannot accept it on their behalf either
    expect((await rpc(t.admin, "accept_invitation", { tenant_id: t.tenantId })).status).toBe(404);
    expect(await memberIds(t.tenantId, t.admin)).toEqual([t.admin.id]);
    // and the invitation is still there for its addressee
    await rpcOk(invitee, "accept_invitation", { tenant_id: t.tenantId });
  });

  test("an expired invitation cannot be accepted or declined and is listed nowhere", async () => {
    const t = await tenantWithRules("expiring");
    const invitee = await newUser("late");
    await invite(t.admin, t.tenantId, invitee.email, "viewer");
    await sql`update compliance.invitations set created_at = now() - interval '15 days', expires_at = now() - interval '1 second'
               where tenant_id = ${t.tenantId}`;
    expect(await rpcOk(invitee, "my_invitations")).toEqual([]);
    expect(await rpcOk(t.admin, "list_invitations", { tenant_id: t.tenantId })).toEqual([]);
    for (const fn of ["accept_invitation", "decline_invitation"]) {
      expect((await rpc(invitee, fn, { tenant_id: t.tenantId })).status).toBe(404);
    }
    expect(await memberIds(t.tenantId, t.admin)).toEqual([t.admin.id]);
  });

  test("an existing member who accepts gets the invited role; the last admin cannot accept a lower one (409)", async () => {
    const t = await tenantWithRules("regrade");
    const member = await newUser("regraded");
    await addMember(t.admin, t.tenantId, member, "viewer");
    await invite(t.admin, t.tenantId, member.email, "auditor");
    expect(await rpcOk(member, "accept_invitation", { tenant_id: t.tenantId })).toMatchObject({ role: "auditor", previous_role: "viewer" });

    await invite(t.admin, t.tenantId, t.admin.email, "viewer");
    expect(await rpc(t.admin, "accept_invitation", { tenant_id: t.tenantId })).toMatchObject({ status: 409, error: { code: "PT409" } });
    expect(await rpcOk(t.admin, "my_tenants")).toEqual([expect.objectContaining({ id: t.tenantId, role: "admin" })]);
    await rpcOk(t.admin, "decline_invitation", { tenant_id: t.tenantId });
  });

  test("invitations are limited per inviter per hour (429 with Retry-After), counted across tenants and re-sends", async () => {
    const t = await tenantWithRules("limited");
    const second = await rpcOk<{ id: string }>(t.admin, "create_tenant", { name: "Second tenant" });
    const peer = await tenantWithRules("peer");
    const target = `same-${randomUUID()}@example.com`;
    const accepted = async (answer: Promise<{ status: number }>) => (await answer).status;
    expect(await accepted(inviteWithLimit(t.admin, t.tenantId, target, "3"))).toBe(200);
    expect(await accepted(inviteWithLimit(t.admin, t.tenantId, target, "3"))).toBe(200);
    expect(await accepted(inviteWithLimit(t.admin, second.id, `other-${randomUUID()}@example.com`, "3"))).toBe(200);
    const refused = await inviteWithLimit(t.admin, second.id, `fourth-${randomUUID()}@example.com`, "3");
    const retryAfter = Number(refused.headers["retry-after"]);
    expect({ status: refused.status, body: refused.body }).toEqual({
      status: 429,
      body: { code: "PT429", message: "too many invitations", details: "at most 3 invitations per hour per inviter", hint: `Try again in ${retryAfter} seconds.` },
    });
    expect(retryAfter).toBeGreaterThan(3500);
    expect(retryAfter).toBeLessThanOrEqual(3600);
    // the refused invitation was not recorded; another inviter is not affected
    expect(await sql`select 1 from compliance.invitations where tenant_id = ${second.id} and email like 'fourth-%'`).toHaveLength(0);
    expect(await accepted(inviteWithLimit(peer.admin, peer.tenantId, target, "3"))).toBe(200);
    // a send older than an hour no longer counts
    await sql`update compliance.invitation_sends set sent_at = now() - interval '61 minutes'
               where id = (select min(id) from compliance.invitation_sends where inviter = ${t.admin.id})`;
    expect(await accepted(inviteWithLimit(t.admin, second.id, `fifth-${randomUUID()}@example.com`, "3"))).toBe(200);
  });

  test("the default limit (20 an hour) holds under concurrent requests", async () => {
    const t = await tenantWithRules("burst");
    const results = await Promise.all(
      Array.from({ length: 26 }, (_, i) => rpc(t.admin, "add_member", { tenant_id: t.tenantId, email: `burst-${i}-${randomUUID()}@example.com`, role: "viewer" })),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(20);
    expect(results.filter((r) => r.status === 429)).toHaveLength(6);
    const [row] = await sql`select count(*)::int as n from compliance.invitations where tenant_id = ${t.tenantId}`;
    expect(row!.n).toBe(20);
  });

  test("authenticated can read neither invitations nor sends, nor call the helpers", async () => {
    const t = await tenantWithRules("private");
    await invite(t.admin, t.tenantId, `someone-${randomUUID()}@example.com`, "viewer");
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
