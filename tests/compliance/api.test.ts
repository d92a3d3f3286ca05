// The compliance functions through the API (gateway + engine or PostgREST): tenant isolation
// survives the cache, a submit evicts the tenant's cached answers, and so does a scan recorded
// by the worker.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import postgres from "postgres";
import { testStack } from "../support/stack";
import { call, signedInUser, type Tokens } from "../api/helpers";

const ROOT = resolve(import.meta.dir, "../..");
const RULES = [
  { key: "1.1.1", title: "Ensure Administrative accounts are cloud-only", severity: "high" },
  { key: "5.2.2.1", title: "Ensure multifactor authentication is enabled for all users in administrative roles", severity: "critical" },
];

const sql = postgres(testStack().databaseUrl, { max: 2, onnotice: () => {} });
afterAll(() => sql.end());

async function post(fn: string, token: string, body: unknown) {
  return call(`/rpc/${fn}`, { token, body });
}

async function get(fn: string, token: string | undefined, args: Record<string, string | number>) {
  return call(`/rpc/${fn}?${new URLSearchParams(Object.entries(args).map(([k, v]) => [k, String(v)]))}`, { token });
}

async function tenantFor(user: Tokens, name: string): Promise<string> {
  const tenant = await post("create_tenant", user.access_token, { name });
  expect(tenant.status).toBe(200);
  expect((await post("upsert_rules", user.access_token, { tenant_id: tenant.json.id, framework: "cis-m365", rules: RULES })).status).toBe(200);
  return tenant.json.id;
}

let alice: Tokens;
let bob: Tokens;
let aliceTenant: string;
let bobTenant: string;

beforeAll(async () => {
  alice = await signedInUser();
  bob = await signedInUser();
  aliceTenant = await tenantFor(alice, "Alice Ltd");
  bobTenant = await tenantFor(bob, "Bob GmbH");
});

describe("compliance over the API", () => {
  test("submit_scan through the API evicts the tenant's cached latest_scan, list_scans and rule_trend", async () => {
    const token = bob.access_token;
    const first = await post("submit_scan", token, {
      tenant_id: bobTenant,
      framework: "cis-m365",
      findings: [{ rule: "1.1.1", result: "fail" }, { rule: "5.2.2.1", result: "fail" }],
    });
    expect(first.status).toBe(200);
    expect(first.json.score).toBe(0);

    const reads = [
      ["latest_scan", { tenant_id: bobTenant }],
      ["list_scans", { tenant_id: bobTenant, page_size: 10 }],
      ["rule_trend", { tenant_id: bobTenant, last_n: 5 }],
    ] as const;
    for (const [fn, args] of reads) {
      expect((await get(fn, token, args)).headers.get("x-cache")).toBe("MISS");
      expect((await get(fn, token, args)).headers.get("x-cache")).toBe("HIT");
    }

    const second = await post("submit_scan", token, {
      tenant_id: bobTenant,
      framework: "cis-m365",
      findings: [{ rule: "1.1.1", result: "pass" }, { rule: "5.2.2.1", result: "fail" }],
    });
    expect(second.status).toBe(200);

    const latest = await get("latest_scan", token, { tenant_id: bobTenant });
    expect(latest.headers.get("x-cache")).toBe("MISS");
    expect(latest.json).toMatchObject({ id: second.json.id, score: 50 });
    const listed = await get("list_scans", token, { tenant_id: bobTenant, page_size: 10 });
    expect(listed.headers.get("x-cache")).toBe("MISS");
    expect(listed.json.scans.map((s: { id: string }) => s.id)).toEqual([second.json.id, first.json.id]);
    const trend = await get("rule_trend", token, { tenant_id: bobTenant, last_n: 5 });
    expect(trend.headers.get("x-cache")).toBe("MISS");
    expect(trend.json.rules[0]).toMatchObject({ rule: "1.1.1", results: ["fail", "pass"], latest: "pass" });
  });

  test("user A cannot read tenant B through the cache, by tenant id, scan id or listing", async () => {
    const scan = (await get("latest_scan", bob.access_token, { tenant_id: bobTenant })).json;
    // B's answers are cached now.
    expect((await get("latest_scan", bob.access_token, { tenant_id: bobTenant })).headers.get("x-cache")).toBe("HIT");

    const notFound = { code: "PT404", details: null, hint: expect.any(String), message: "tenant not found" };
    for (const [fn, args] of [
      ["latest_scan", { tenant_id: bobTenant }],
      ["list_scans", { tenant_id: bobTenant }],
      ["rule_trend", { tenant_id: bobTenant }],
      ["list_members", { tenant_id: bobTenant }],
    ] as const) {
      const stolen = await get(fn, alice.access_token, args);
      expect({ fn, status: stolen.status, body: stolen.json }).toEqual({ fn, status: 404, body: notFound });
      expect(stolen.text).not.toContain(scan.id);
    }
    const byId = await get("scan", alice.access_token, { scan_id: scan.id });
    expect(byId.status).toBe(404);
    expect(byId.json).toEqual({ code: "PT404", details: null, hint: null, message: "scan not found" });
    expect(await get("scan", alice.access_token, { scan_id: randomUUID() }).then((r) => r.json)).toEqual(byId.json);

    const write = await post("submit_scan", alice.access_token, { tenant_id: bobTenant, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass" }] });
    expect(write.status).toBe(404);
    // A's failed write evicted nothing of B, and B's data is unchanged.
    const again = await get("latest_scan", bob.access_token, { tenant_id: bobTenant });
    expect(again.headers.get("x-cache")).toBe("HIT");
    expect(again.json.id).toBe(scan.id);

    const anonymous = await get("latest_scan", undefined, { tenant_id: bobTenant });
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).not.toContain(scan.id);
  });

  test("bad input over HTTP is a 4xx in PostgREST's shape, never a 500", async () => {
    const token = alice.access_token;
    const cases: [string, unknown][] = [
      ["submit_scan", { tenant_id: "not-a-uuid", framework: "cis-m365", findings: [] }],
      ["submit_scan", { tenant_id: aliceTenant, framework: "cis-m365", findings: "lots" }],
      ["submit_scan", { tenant_id: aliceTenant, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass", evidence: 7 }] }],
      ["submit_scan", { tenant_id: aliceTenant, framework: "cis-m365", findings: Array.from({ length: 6000 }, () => ({ rule: "1.1.1", result: "pass" })) }],
      ["submit_scan", { tenant_id: aliceTenant, framework: "x".repeat(10_000), findings: [] }],
      ["list_scans", { tenant_id: aliceTenant, page_size: "ten" }],
      ["list_scans", { tenant_id: aliceTenant, before: 1e30 }],
      ["rule_trend", { tenant_id: aliceTenant, last_n: -1 }],
      ["request_scan", { tenant_id: aliceTenant, framework: "cis-m365", options: [1, 2] }],
      ["add_member", { tenant_id: aliceTenant, email: null, role: "viewer" }],
      ["create_tenant", { name: "x".repeat(5000) }],
    ];
    for (const [fn, body] of cases) {
      const result = await post(fn, token, body);
      expect({ fn, ok: result.status >= 400 && result.status < 500 }).toEqual({ fn, ok: true });
      expect(Object.keys(result.json)).toEqual(["code", "details", "hint", "message"]);
    }
    expect((await get("list_scans", token, { tenant_id: "nope" })).status).toBe(400);
  });

  test("a scan recorded by the worker evicts the tenant's cached answers too", async () => {
    const token = alice.access_token;
    const empty = await get("latest_scan", token, { tenant_id: aliceTenant });
    expect(empty.status).toBe(200);
    expect((await get("latest_scan", token, { tenant_id: aliceTenant })).headers.get("x-cache")).toBe("HIT");

    const requested = await post("request_scan", token, { tenant_id: aliceTenant, framework: "cis-m365" });
    expect(requested.status).toBe(200);
    expect(requested.json).toMatchObject({ status: "queued", attempts: 0 });
    const before = await get("latest_scan", token, { tenant_id: aliceTenant });
    expect(before.headers.get("x-cache")).toBe("MISS");
    expect((await get("latest_scan", token, { tenant_id: aliceTenant })).headers.get("x-cache")).toBe("HIT");

    const worker = Bun.spawn(["bun", "api/src/cli/worker.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        DATABASE_URL: testStack().databaseUrl,
        REDIS_URL: testStack().redisUrl,
        SCAN_JOB_STREAM: `test:scan-jobs:${randomUUID()}`,
        SCAN_WORKER_NAME: "api-test-worker",
      },
      stdout: "ignore",
      stderr: "inherit",
    });
    try {
      const deadline = Date.now() + 20_000;
      let job;
      do {
        await Bun.sleep(50);
        job = (await get("scan_job", token, { job_id: requested.json.id })).json;
      } while (job.status !== "done" && Date.now() < deadline);
      expect(job).toMatchObject({ status: "done", attempts: 1 });
      const latest = await get("latest_scan", token, { tenant_id: aliceTenant });
      expect(latest.headers.get("x-cache")).toBe("MISS");
      expect(latest.json.id).toBe(job.scan_id);
    } finally {
      worker.kill("SIGTERM");
      await worker.exited;
    }
  }, 30_000);
});
