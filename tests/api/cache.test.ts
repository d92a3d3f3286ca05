// The GET /rpc cache: STABLE answers cached per caller and arguments, and evicted by the
// generic tenant rule when a write to that tenant succeeds.
import { afterAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { testStack } from "../support/stack";
import { call, signedInUser } from "./helpers";

const sql = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
afterAll(() => sql.end());

async function tenantWithRules(token: string) {
  const tenant = await call("/rpc/create_tenant", { token, body: { name: "Cache Test Ltd" } });
  expect(tenant.status).toBe(200);
  const rules = [{ key: "1.1.1", title: "MFA for admins", severity: "high" }];
  const upsert = await call("/rpc/upsert_rules", { token, body: { tenant_id: tenant.json.id, framework: "cis-m365", rules } });
  expect(upsert.status).toBe(200);
  return tenant.json.id as string;
}

describe("GET /rpc cache", () => {
  test("MISS then HIT for the same caller and arguments, in any order", async () => {
    const user = await signedInUser();
    const tenantId = await tenantWithRules(user.access_token);
    const first = await call(`/rpc/list_rules?tenant_id=${tenantId}&framework=cis-m365`, { token: user.access_token });
    expect(first.status).toBe(200);
    expect(first.headers.get("x-cache")).toBe("MISS");
    expect(first.json).toHaveLength(1);
    const second = await call(`/rpc/list_rules?framework=cis-m365&tenant_id=${tenantId}`, { token: user.access_token });
    expect(second.headers.get("x-cache")).toBe("HIT");
    expect(second.text).toBe(first.text);
    expect(second.headers.get("content-type")).toBe(first.headers.get("content-type"));
  });

  test("the answer is really served from the cache, and a write to the tenant evicts it", async () => {
    const user = await signedInUser();
    const tenantId = await tenantWithRules(user.access_token);
    const path = `/rpc/list_rules?tenant_id=${tenantId}`;
    expect((await call(path, { token: user.access_token })).headers.get("x-cache")).toBe("MISS");

    // Changed behind the API's back: the cached answer still shows the old title.
    await sql`update compliance.rules set title = 'changed directly' where tenant_id = ${tenantId}`;
    const cached = await call(path, { token: user.access_token });
    expect(cached.headers.get("x-cache")).toBe("HIT");
    expect(cached.json[0].title).toBe("MFA for admins");

    // A successful POST naming the tenant evicts every cached answer of that tenant.
    const write = await call("/rpc/upsert_rules", {
      token: user.access_token,
      body: { tenant_id: tenantId, framework: "cis-m365", rules: [{ key: "1.1.2", title: "Block legacy auth", severity: "medium" }] },
    });
    expect(write.status).toBe(200);
    const fresh = await call(path, { token: user.access_token });
    expect(fresh.headers.get("x-cache")).toBe("MISS");
    expect(fresh.json.map((r: { title: string }) => r.title).sort()).toEqual(["Block legacy auth", "changed directly"]);
  });

  test("a failed write evicts nothing", async () => {
    const user = await signedInUser();
    const tenantId = await tenantWithRules(user.access_token);
    const path = `/rpc/list_rules?tenant_id=${tenantId}`;
    await call(path, { token: user.access_token });
    const bad = await call("/rpc/upsert_rules", { token: user.access_token, body: { tenant_id: tenantId, framework: "cis-m365", rules: [] } });
    expect(bad.status).toBe(400);
    expect((await call(path, { token: user.access_token })).headers.get("x-cache")).toBe("HIT");
  });

  test("answers are per caller: another user never gets a cached answer of the first", async () => {
    const owner = await signedInUser();
    const stranger = await signedInUser();
    const tenantId = await tenantWithRules(owner.access_token);
    const path = `/rpc/list_rules?tenant_id=${tenantId}`;
    await call(path, { token: owner.access_token });
    expect((await call(path, { token: owner.access_token })).headers.get("x-cache")).toBe("HIT");
    const other = await call(path, { token: stranger.access_token });
    expect(other.headers.get("x-cache")).toBe("MISS");
    expect(other.status).not.toBe(200);
    expect(other.text).not.toContain("MFA for admins");
    const anonymous = await call(path);
    expect(anonymous.status).not.toBe(200);
    expect(anonymous.text).not.toContain("MFA for admins");
  });

  test("volatile functions, POST calls and the identity functions are never cached", async () => {
    const user = await signedInUser();
    const me = await call("/rpc/me", { token: user.access_token });
    expect(me.status).toBe(200);
    expect(me.headers.get("x-cache")).toBeNull();
    const tenantId = await tenantWithRules(user.access_token);
    const post = await call("/rpc/list_rules", { token: user.access_token, body: { tenant_id: tenantId } });
    expect(post.status).toBe(200);
    expect(post.headers.get("x-cache")).toBeNull();
    // Answers that change without a POST through the gateway: memberships, a scan a removed member must lose.
    const tenants = await call("/rpc/my_tenants", { token: user.access_token });
    expect(tenants.status).toBe(200);
    expect(tenants.headers.get("x-cache")).toBeNull();
  });
});
