import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { adminSql, DEMO_RULES, findings, rpc, rpcOk, submit, tenantWithRules, type TenantFixture } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

let t: TenantFixture;
beforeAll(async () => {
  t = await tenantWithRules("submitter");
});

async function stored() {
  const [row] = await sql`
    select (select count(*) from compliance.scans where tenant_id = ${t.tenantId})::int as scans,
           (select count(*) from compliance.issues where tenant_id = ${t.tenantId})::int as issues`;
  return row;
}

describe("submit_scan", () => {
  test("counts and score are computed by the database: pass / (pass + fail), not_tested excluded", async () => {
    const scan = await submit(t.admin, t.tenantId, ["pass", "pass", "pass", "fail", "not_tested", "not_tested"]);
    expect(scan).toMatchObject({ status: "completed", pass_count: 3, fail_count: 1, not_tested_count: 2, score: 75, framework: "cis-m365" });
    const thirds = await submit(t.admin, t.tenantId, ["pass", "fail", "fail"]);
    expect(thirds.score).toBe(33.33);
    const untested = await submit(t.admin, t.tenantId, ["not_tested", "not_tested"]);
    expect(untested).toMatchObject({ score: null, pass_count: 0, fail_count: 0, not_tested_count: 2 });
  });

  test("a client cannot supply counts or a score", async () => {
    const result = await rpc(t.admin, "submit_scan", {
      tenant_id: t.tenantId,
      framework: "cis-m365",
      findings: [{ rule: "1.1.1", result: "fail", score: 100, pass_count: 9 }],
    });
    expect(result).toMatchObject({ status: 400, error: { code: "22023", message: "findings[0] has unknown keys (allowed: rule, result, priority, evidence)" } });
  });

  test("latest_scan returns the newest scan with its findings in rule order, priority defaulting to severity", async () => {
    const submitted = await rpcOk(t.admin, "submit_scan", {
      tenant_id: t.tenantId,
      framework: "cis-m365",
      findings: [
        { rule: "5.2.2.1", result: "fail", evidence: { users_without_mfa: ["a@contoso.com"] } },
        { rule: "1.1.1", result: "pass", priority: "low" },
      ],
      started_at: "2026-11-25T10:00:00Z",
      finished_at: "2026-11-25T10:05:00Z",
    });
    const latest = await rpcOk(t.admin, "latest_scan", { tenant_id: t.tenantId });
    expect(latest).toMatchObject({
      id: submitted.id,
      score: 50,
      started_at: "2026-11-25T10:00:00+00:00",
      finished_at: "2026-11-25T10:05:00+00:00",
      submitted_by: t.admin.id,
      findings: [
        { rule: "1.1.1", title: DEMO_RULES[0]!.title, severity: "high", result: "pass", priority: "low", evidence: {} },
        { rule: "5.2.2.1", severity: "critical", result: "fail", priority: "critical", evidence: { users_without_mfa: ["a@contoso.com"] } },
      ],
    });
    expect(await rpcOk(t.admin, "scan", { scan_id: submitted.id })).toEqual(latest);
  });

  test("latest_scan of a tenant without scans is null", async () => {
    const empty = await tenantWithRules("empty");
    expect(await rpc(empty.admin, "latest_scan", { tenant_id: empty.tenantId })).toEqual({ value: null, status: 200 });
  });

  test("one bad finding in the middle: 400 naming it, and nothing is written", async () => {
    const before = await stored();
    const batch = findings(["pass", "fail", "pass", "pass", "fail", "pass"]);
    (batch[3] as Record<string, unknown>).result = "maybe";
    const result = await rpc(t.admin, "submit_scan", { tenant_id: t.tenantId, framework: "cis-m365", findings: batch });
    expect(result).toEqual({
      status: 400,
      error: {
        code: "22023",
        message: "findings[3] result must be one of pass, fail, not_tested",
        details: "findings[3]",
        hint: "Nothing was recorded; fix the finding and submit the whole scan again.",
      },
    });
    expect(await stored()).toEqual(before);
  });

  test("bad input of every kind is a 4xx and writes nothing", async () => {
    const before = await stored();
    const good = findings(["pass"]);
    const cases: Record<string, unknown>[] = [
      { tenant_id: null, framework: "cis-m365", findings: good },
      { tenant_id: "not-a-uuid", framework: "cis-m365", findings: good },
      { tenant_id: t.tenantId, framework: null, findings: good },
      { tenant_id: t.tenantId, framework: "CIS M365; drop table x", findings: good },
      { tenant_id: t.tenantId, framework: "f".repeat(65), findings: good },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: null },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: {} },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: "[]" },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: Array.from({ length: 5001 }, () => good[0]) },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [1] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [null] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [[]] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ result: "pass" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: 111, result: "pass" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "9.9.9", result: "pass" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "x".repeat(100_000), result: "pass" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: true }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass", priority: "urgent" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass", priority: 3 }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass", evidence: "text" }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass", evidence: { blob: "x".repeat(70_000) } }] },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: [{ rule: "1.1.1", result: "pass" }, { rule: "1.1.1", result: "fail" }] },
      { tenant_id: t.tenantId, framework: "other-framework", findings: good },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: good, started_at: "yesterday-ish" },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: good, started_at: "infinity" },
      { tenant_id: t.tenantId, framework: "cis-m365", findings: good, started_at: "2026-01-02T00:00:00Z", finished_at: "2026-01-01T00:00:00Z" },
    ];
    for (const args of cases) {
      const result = await rpc(t.admin, "submit_scan", args);
      expect({ args: JSON.stringify(args).slice(0, 160), status: result.status >= 400 && result.status < 500, code: result.error?.code }).toEqual({
        args: JSON.stringify(args).slice(0, 160),
        status: true,
        code: expect.stringMatching(/^(22023|22P02|22007|22008)$/),
      });
    }
    expect(await stored()).toEqual(before);
  });
});

describe("rules", () => {
  test("upsert_rules inserts, then updates in place; list_rules keeps the admin's order", async () => {
    const f = await tenantWithRules("rules");
    const again = await rpcOk(f.admin, "upsert_rules", {
      tenant_id: f.tenantId,
      framework: "cis-m365",
      rules: [
        { key: "1.1.1", title: "Ensure Administrative accounts are cloud-only", severity: "critical", description: "Hybrid admins widen the attack surface." },
        { key: "0.1", title: "A new first rule", severity: "low" },
      ],
    });
    expect(again).toEqual({ tenant_id: f.tenantId, framework: "cis-m365", inserted: 1, updated: 1, unchanged: 0 });
    const rules = await rpcOk(f.admin, "list_rules", { tenant_id: f.tenantId, framework: "cis-m365" });
    expect(rules).toHaveLength(DEMO_RULES.length + 1);
    expect(rules[0]).toMatchObject({ key: "1.1.1", severity: "critical", description: "Hybrid admins widen the attack surface." });
  });

  test("one bad rule rejects the whole upsert", async () => {
    const f = await tenantWithRules("rules-bad");
    const before = await rpcOk(f.admin, "list_rules", { tenant_id: f.tenantId });
    for (const rules of [
      [{ key: "1.1.1", title: "changed", severity: "low" }, { key: "2.2", title: "", severity: "low" }],
      [{ key: "1.1.1", title: "changed", severity: "low" }, { key: "bad key!", title: "t", severity: "low" }],
      [{ key: "1.1.1", title: "changed", severity: "severe" }],
      [{ key: "1.1.1", title: "changed", severity: "low", extra: 1 }],
      [{ key: "1.1.1", title: "a", severity: "low" }, { key: "1.1.1", title: "b", severity: "low" }],
      [{ key: "1.1.1", title: "t".repeat(501), severity: "low" }],
      [],
      { key: "1.1.1" },
    ]) {
      const result = await rpc(f.admin, "upsert_rules", { tenant_id: f.tenantId, framework: "cis-m365", rules });
      expect(result).toMatchObject({ status: 400, error: { code: "22023" } });
    }
    expect(await rpcOk(f.admin, "list_rules", { tenant_id: f.tenantId })).toEqual(before);
  });
});
