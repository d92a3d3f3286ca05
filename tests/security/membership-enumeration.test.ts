// Security finding: add_member answered 404 "no user with this email" for an unknown address and
// the user id for a known one, unthrottled, so any tenant admin could enumerate accounts; then
// list_members showed the person's name; and the person was added without agreeing.
// Over real HTTP through the API: add_member only invites, answering the same for every address,
// at most 20 times an hour per inviter; the invitee accepts or declines.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { testStack } from "../support/stack";
import { call, signedInUser, type CallResult, type TestUser, type Tokens } from "../api/helpers";

type User = TestUser & Tokens;

const sql = postgres(testStack().databaseUrl, { max: 2, onnotice: () => {} });
afterAll(() => sql.end());

const post = (fn: string, user: User, body: unknown) => call(`/rpc/${fn}`, { token: user.access_token, body });
const get = (fn: string, user: User, args: Record<string, string> = {}) =>
  call(`/rpc/${fn}${Object.keys(args).length ? `?${new URLSearchParams(args)}` : ""}`, { token: user.access_token });

async function tenantOf(admin: User, name = `Tenant ${randomUUID()}`): Promise<string> {
  const created = await post("create_tenant", admin, { name });
  expect(created.status).toBe(200);
  return created.json.id;
}

async function inviteOk(admin: User, tenantId: string, email: string, role = "viewer"): Promise<CallResult> {
  const answer = await post("add_member", admin, { tenant_id: tenantId, email, role });
  expect({ status: answer.status, body: answer.json }).toEqual({ status: 200, body: expect.objectContaining({ status: "invited" }) });
  return answer;
}

/** Status, headers and body of an answer, with the echoed email and expiry blanked out. */
function shapeOf(answer: CallResult) {
  const ignored = new Set(["date", "x-request-id", "content-length"]);
  const headers: [string, string][] = [];
  answer.headers.forEach((value, name) => {
    if (!ignored.has(name)) headers.push([name, value]);
  });
  const body = answer.text.replace(JSON.stringify(answer.json.email), '"<email>"').replace(JSON.stringify(answer.json.expires_at), '"<expires>"');
  return { status: answer.status, headers: headers.sort(), body };
}

let admin: User;
let tenantId: string;

beforeAll(async () => {
  admin = await signedInUser();
  tenantId = await tenantOf(admin, "Enumeration Target Ltd");
});

describe("add_member cannot enumerate accounts", () => {
  test("a known account, an unknown address and an existing member get byte-identical answers", async () => {
    const known = await signedInUser();
    const member = await signedInUser();
    await inviteOk(admin, tenantId, member.email);
    expect((await post("accept_invitation", member, { tenant_id: tenantId })).status).toBe(200);
    const unknownEmail = `nobody-${randomUUID()}@example.com`;

    const answers = {
      known: await post("add_member", admin, { tenant_id: tenantId, email: known.email, role: "auditor" }),
      unknown: await post("add_member", admin, { tenant_id: tenantId, email: unknownEmail, role: "auditor" }),
      member: await post("add_member", admin, { tenant_id: tenantId, email: member.email, role: "auditor" }),
    };
    for (const [kind, answer] of Object.entries(answers)) {
      expect({ kind, status: answer.status }).toEqual({ kind, status: 200 });
      expect(Object.keys(answer.json)).toEqual(["tenant_id", "email", "role", "status", "expires_at"]);
    }
    expect(answers.known.json).toEqual({ tenant_id: tenantId, email: known.email, role: "auditor", status: "invited", expires_at: expect.any(String) });
    expect(answers.unknown.json.email).toBe(unknownEmail);
    expect(shapeOf(answers.unknown)).toEqual(shapeOf(answers.known));
    expect(shapeOf(answers.member)).toEqual(shapeOf(answers.known));
    // no user id, name or "previous role" anywhere
    expect(answers.known.text).not.toContain(known.user.id);
    expect(answers.member.text).not.toContain(member.user.id);
    expect(answers.member.text).not.toContain("previous_role");

    // list_invitations shows what the admin typed, the same way for both
    const listed = await get("list_invitations", admin, { tenant_id: tenantId });
    expect(listed.status).toBe(200);
    const byEmail = new Map(listed.json.map((i: { email: string }) => [i.email, i]));
    expect(Object.keys(byEmail.get(known.email) as object)).toEqual(Object.keys(byEmail.get(unknownEmail) as object));
    expect(listed.text).not.toContain(known.user.id);
  });

  test("before accepting, the tenant sees nothing of the invitee: no name, no user id, no membership", async () => {
    const t = await tenantOf(admin);
    const invitee = await signedInUser();
    const before = await get("list_members", admin, { tenant_id: t });
    await inviteOk(admin, t, invitee.email.toUpperCase());
    const after = await get("list_members", admin, { tenant_id: t });
    expect(after.status).toBe(200);
    expect(after.json).toEqual(before.json);
    expect(after.json.map((m: { user_id: string }) => m.user_id)).toEqual([admin.user.id]);
    expect(after.text).not.toContain(invitee.user.id);
    expect(after.text).not.toContain(invitee.email);
    // and the invitee is no member either: the tenant does not exist for them
    expect((await get("list_members", invitee, { tenant_id: t })).status).toBe(404);
    expect((await get("my_tenants", invitee)).json).toEqual([]);
  });

  test("my_invitations shows the invitation to the invitee, fresh on every call", async () => {
    const invitee = await signedInUser();
    const first = await get("my_invitations", invitee);
    expect({ status: first.status, body: first.json, cache: first.headers.get("x-cache") }).toEqual({ status: 200, body: [], cache: null });
    const t = await tenantOf(admin, "Invitations Shown Ltd");
    const invitation = await inviteOk(admin, t, ` ${invitee.email} `, "auditor");
    const second = await get("my_invitations", invitee);
    expect(second.headers.get("x-cache")).toBeNull();
    expect(second.json).toEqual([
      { tenant_id: t, tenant_name: "Invitations Shown Ltd", role: "auditor", invited_at: expect.any(String), expires_at: invitation.json.expires_at },
    ]);
    // the inviter is not named
    expect(second.text).not.toContain(admin.email);
    expect(second.text).not.toContain(admin.user.id);
    // nobody else sees it
    expect((await get("my_invitations", admin)).json).toEqual([]);
  });

  test("accepting makes the invitee a member with the invited role and evicts the tenant's cached list_members", async () => {
    const t = await tenantOf(admin);
    const invitee = await signedInUser();
    await inviteOk(admin, t, invitee.email, "auditor");
    expect((await get("list_members", admin, { tenant_id: t })).headers.get("x-cache")).toBe("MISS");
    expect((await get("list_members", admin, { tenant_id: t })).headers.get("x-cache")).toBe("HIT");

    const accepted = await post("accept_invitation", invitee, { tenant_id: t });
    expect(accepted.status).toBe(200);
    expect(accepted.json).toMatchObject({ tenant_id: t, role: "auditor" });

    const members = await get("list_members", admin, { tenant_id: t });
    expect(members.headers.get("x-cache")).toBe("MISS");
    expect(members.json).toContainEqual(expect.objectContaining({ user_id: invitee.user.id, email: invitee.email, role: "auditor" }));
    expect((await get("my_tenants", invitee)).json).toEqual([expect.objectContaining({ id: t, role: "auditor" })]);
    expect((await get("my_invitations", invitee)).json).toEqual([]);
    // an auditor may now submit to the tenant
    expect((await get("list_scans", invitee, { tenant_id: t })).status).toBe(200);
    // consumed
    expect((await post("accept_invitation", invitee, { tenant_id: t })).status).toBe(404);
  });

  test("declining leaves no membership and tells the tenant nothing, not even through the cache", async () => {
    const t = await tenantOf(admin);
    const invitee = await signedInUser();
    await inviteOk(admin, t, invitee.email);
    const invitationsBefore = await get("list_invitations", admin, { tenant_id: t });
    expect((await get("list_members", admin, { tenant_id: t })).headers.get("x-cache")).toBe("MISS");

    const declined = await post("decline_invitation", invitee, { tenant_id: t });
    expect({ status: declined.status, body: declined.json }).toEqual({ status: 200, body: { tenant_id: t, status: "declined" } });

    const members = await get("list_members", admin, { tenant_id: t });
    expect(members.headers.get("x-cache")).toBe("HIT");
    expect(members.json.map((m: { user_id: string }) => m.user_id)).toEqual([admin.user.id]);
    const invitationsAfter = await get("list_invitations", admin, { tenant_id: t });
    expect(invitationsAfter.text).toBe(invitationsBefore.text);
    expect((await get("list_members", invitee, { tenant_id: t })).status).toBe(404);
    expect((await get("my_invitations", invitee)).json).toEqual([]);
    expect((await post("accept_invitation", invitee, { tenant_id: t })).status).toBe(404);
  });

  test("nobody can accept an invitation addressed to another email", async () => {
    const t = await tenantOf(admin);
    const invitee = await signedInUser();
    const thief = await signedInUser();
    await inviteOk(admin, t, invitee.email, "admin");
    const stolen = await post("accept_invitation", thief, { tenant_id: t });
    const random = await post("accept_invitation", thief, { tenant_id: randomUUID() });
    expect(stolen.status).toBe(404);
    expect(stolen.json).toMatchObject({ code: "PT404", message: "invitation not found" });
    expect(stolen.text).toBe(random.text);
    expect((await post("decline_invitation", thief, { tenant_id: t })).status).toBe(404);
    expect((await get("list_members", thief, { tenant_id: t })).status).toBe(404);
    const members = await get("list_members", admin, { tenant_id: t });
    expect(members.json.map((m: { user_id: string }) => m.user_id)).toEqual([admin.user.id]);
    // the addressee still can
    expect((await post("accept_invitation", invitee, { tenant_id: t })).status).toBe(200);
  });

  test("only tenant admins can invite: viewers and auditors 403, outsiders 404", async () => {
    const t = await tenantOf(admin);
    const viewer = await signedInUser();
    const auditor = await signedInUser();
    const outsider = await signedInUser();
    for (const [user, role] of [[viewer, "viewer"], [auditor, "auditor"]] as const) {
      await inviteOk(admin, t, user.email, role);
      expect((await post("accept_invitation", user, { tenant_id: t })).status).toBe(200);
    }
    const target = `target-${randomUUID()}@example.com`;
    for (const user of [viewer, auditor]) {
      const refused = await post("add_member", user, { tenant_id: t, email: target, role: "viewer" });
      expect({ status: refused.status, code: refused.json.code }).toEqual({ status: 403, code: "PT403" });
    }
    const stranger = await post("add_member", outsider, { tenant_id: t, email: target, role: "viewer" });
    expect({ status: stranger.status, code: stranger.json.code, message: stranger.json.message }).toEqual({ status: 404, code: "PT404", message: "tenant not found" });
    expect((await get("list_invitations", admin, { tenant_id: t })).json.map((i: { email: string }) => i.email)).not.toContain(target);
  });

  test("an inviter gets 429 with Retry-After after 20 invitations in an hour; other inviters do not", async () => {
    const inviter = await signedInUser();
    const t = await tenantOf(inviter);
    for (let i = 0; i < 20; i++) await inviteOk(inviter, t, `bulk-${i}-${randomUUID()}@example.com`);
    const refused = await post("add_member", inviter, { tenant_id: t, email: `bulk-21-${randomUUID()}@example.com`, role: "viewer" });
    expect(refused.status).toBe(429);
    expect(refused.json).toMatchObject({ code: "PT429", message: "too many invitations" });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(3000);
    expect(retryAfter).toBeLessThanOrEqual(3600);
    // re-sending to an address already invited is a send too, and another tenant of the same inviter shares the quota
    const other = await tenantOf(inviter);
    expect((await post("add_member", inviter, { tenant_id: other, email: `again-${randomUUID()}@example.com`, role: "viewer" })).status).toBe(429);
    // refused before anything about the address is looked at: known and unknown alike
    expect((await post("add_member", inviter, { tenant_id: t, email: admin.email, role: "viewer" })).status).toBe(429);
    // another admin is not throttled by this one
    await inviteOk(admin, tenantId, `unaffected-${randomUUID()}@example.com`);
  });

  test("an expired invitation cannot be accepted", async () => {
    const t = await tenantOf(admin);
    const invitee = await signedInUser();
    await inviteOk(admin, t, invitee.email);
    await sql`update compliance.invitations set created_at = now() - interval '15 days', expires_at = now() - interval '1 minute'
               where tenant_id = ${t}`;
    expect((await get("my_invitations", invitee)).json).toEqual([]);
    const accepted = await post("accept_invitation", invitee, { tenant_id: t });
    expect({ status: accepted.status, code: accepted.json.code }).toEqual({ status: 404, code: "PT404" });
    expect((await get("list_members", invitee, { tenant_id: t })).status).toBe(404);
    // inviting again gives a fresh one
    await inviteOk(admin, t, invitee.email);
    expect((await post("accept_invitation", invitee, { tenant_id: t })).status).toBe(200);
  });
});
