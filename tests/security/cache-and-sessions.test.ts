// Attack classes 6, 7 and 8: cached answers a removed member could still read (tags from raw
// text, body shapes that evicted nothing, Range outside the key), and session answers reused
// for another user's token.
import { describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { adminSql, DEMO_RULES } from "../compliance/support";
import { call, mintToken, newUser, signIn, signUp, type Tokens } from "../api/helpers";
import { testStack } from "../support/stack";

async function user(): Promise<Tokens> {
  const u = newUser();
  await signUp(u);
  return signIn(u);
}

/** A tenant administered by `admin`, with rules and one scan, and `member` as a viewer (added in SQL). */
async function sharedTenant(admin: Tokens, member: Tokens): Promise<string> {
  const tenant = await call("/rpc/create_tenant", { token: admin.access_token, body: { name: `Shared ${randomUUID()}` } });
  expect(tenant.status).toBe(200);
  const tenantId = tenant.json.id as string;
  expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "cis-m365", rules: DEMO_RULES } })).status).toBe(200);
  const findings = DEMO_RULES.map((r) => ({ rule: r.key, result: "pass" }));
  expect((await call("/rpc/submit_scan", { token: admin.access_token, body: { tenant_id: tenantId, framework: "cis-m365", findings } })).status).toBe(200);
  const sql = adminSql(1);
  await sql`insert into compliance.tenant_members (tenant_id, user_id, role) values (${tenantId}, ${member.user.id}, 'viewer')`;
  await sql.end();
  return tenantId;
}

describe("cache keys and eviction from canonical values", () => {
  test("a removed member cannot read a cached answer through another spelling of the tenant id", async () => {
    const admin = await user();
    const member = await user();
    const tenantId = await sharedTenant(admin, member);
    const spellings = [tenantId.toUpperCase(), `{${tenantId}}`, tenantId.replaceAll("-", ""), tenantId];
    for (const spelling of spellings) {
      const path = `/rpc/latest_scan?tenant_id=${encodeURIComponent(spelling)}`;
      expect((await call(path, { token: member.access_token })).status).toBe(200);
      expect((await call(path, { token: member.access_token })).headers.get("x-cache")).toBe("HIT");
    }
    const removed = await call("/rpc/remove_member", { token: admin.access_token, body: { tenant_id: tenantId, user_id: member.user.id } });
    expect(removed.status).toBe(200);
    for (const spelling of spellings) {
      const after = await call(`/rpc/latest_scan?tenant_id=${encodeURIComponent(spelling)}`, { token: member.access_token });
      expect({ spelling, status: after.status, cache: after.headers.get("x-cache") }).toEqual({ spelling, status: 404, cache: "MISS" });
    }
  });

  test("a write evicts whatever the spelling of its tenant id and the shape of its body", async () => {
    const admin = await user();
    const member = await user();
    const tenantId = await sharedTenant(admin, member);
    const path = `/rpc/list_rules?tenant_id=${tenantId}`;
    const findings = DEMO_RULES.map((r) => ({ rule: r.key, result: "fail" }));
    const writes: unknown[] = [
      { tenant_id: tenantId.toUpperCase(), framework: "cis-m365", rules: DEMO_RULES },
      [{ tenant_id: `{${tenantId}}`, framework: "cis-m365", rules: DEMO_RULES }],
    ];
    for (const body of writes) {
      await call(path, { token: admin.access_token });
      expect((await call(path, { token: admin.access_token })).headers.get("x-cache")).toBe("HIT");
      expect((await call("/rpc/upsert_rules", { token: admin.access_token, body })).status).toBe(200);
      expect((await call(path, { token: admin.access_token })).headers.get("x-cache")).toBe("MISS");
    }
    // A scan submitted with an upper-case id evicts the tenant's cached latest scan.
    const latest = `/rpc/latest_scan?tenant_id=${tenantId}`;
    const first = await call(latest, { token: admin.access_token });
    const submitted = await call("/rpc/submit_scan", { token: admin.access_token, body: { tenant_id: tenantId.toUpperCase(), framework: "cis-m365", findings } });
    expect(submitted.status).toBe(200);
    const second = await call(latest, { token: admin.access_token });
    expect(second.headers.get("x-cache")).toBe("MISS");
    expect(second.json.id).not.toBe(first.json.id);
  });

  test("Range is part of the key", async () => {
    const admin = await user();
    const member = await user();
    const tenantId = await sharedTenant(admin, member);
    const path = `/rpc/list_rules?tenant_id=${tenantId}`;
    const whole = await call(path, { token: admin.access_token });
    const ranged = await call(path, { token: admin.access_token, headers: { Range: "0-0" } });
    expect(ranged.headers.get("x-cache")).toBe("MISS");
    expect(ranged.text).toBe(whole.text); // a scalar json result: Range applies to rows, not to its content
    const again = await call(path, { token: admin.access_token, headers: { Range: "0-0" } });
    expect(again.headers.get("x-cache")).toBe("HIT");
  });

  test("a repeated or malformed tenant id is never cached", async () => {
    const admin = await user();
    const member = await user();
    const tenantId = await sharedTenant(admin, member);
    for (const query of [`tenant_id=${tenantId}&tenant_id=${randomUUID()}`, `tenant_id=${tenantId}x`]) {
      await call(`/rpc/list_rules?${query}`, { token: admin.access_token });
      const again = await call(`/rpc/list_rules?${query}`, { token: admin.access_token });
      expect(again.headers.get("x-cache")).not.toBe("HIT");
    }
  });
});

describe("session checks", () => {
  test("a token whose sid is another user's active session is refused", async () => {
    const victim = await user();
    const other = await user();
    // The victim's session is known active to every layer.
    expect((await call("/rpc/me", { token: victim.access_token })).status).toBe(200);
    const victimSid = JSON.parse(Buffer.from(victim.access_token.split(".")[1]!, "base64url").toString()).sid;
    const forged = await mintToken({
      sub: other.user.id, sid: victimSid, role: "authenticated", aud: testStack().jwtAudience, exp: Math.floor(Date.now() / 1000) + 300,
    });
    const answer = await call("/rpc/me", { token: forged });
    expect(answer.status).toBe(401);
    expect(answer.json.code).toBe("AA301");
    // The victim's own session is untouched.
    expect((await call("/rpc/me", { token: victim.access_token })).status).toBe(200);
  });
});
