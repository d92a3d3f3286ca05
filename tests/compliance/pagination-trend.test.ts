import { afterAll, describe, expect, test } from "bun:test";
import { adminSql, rpc, rpcOk, submit, tenantWithRules, type Result } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

describe("list_scans", () => {
  test("paging while scans are added concurrently: every earlier scan exactly once, newest first", async () => {
    const t = await tenantWithRules("pager");
    const original: string[] = [];
    for (let i = 0; i < 23; i++) original.push((await submit(t.admin, t.tenantId, [i % 2 ? "pass" : "fail"])).id);

    // A second writer keeps adding scans for the whole time the reader pages.
    let writing = true;
    const added: string[] = [];
    const writer = (async () => {
      while (writing) added.push((await submit(t.admin, t.tenantId, ["pass"])).id);
    })();

    const seen: string[] = [];
    let before: number | null = null;
    let pages = 0;
    do {
      const page: any = await rpcOk(t.admin, "list_scans", { tenant_id: t.tenantId, page_size: 4, ...(before ? { before } : {}) });
      seen.push(...page.scans.map((s: { id: string }) => s.id));
      before = page.next_before;
      pages++;
      // let the writer commit between pages
      await Bun.sleep(5);
    } while (before !== null);
    writing = false;
    await writer;

    expect(added.length).toBeGreaterThan(0);
    expect(new Set(seen).size).toBe(seen.length);
    const firstPage = seen.filter((id) => !original.includes(id));
    // Only scans that already existed when paging began can appear after the first page.
    expect(seen.slice(seen.length - original.length)).toEqual([...original].reverse());
    expect(firstPage.every((id) => added.includes(id))).toBe(true);
    expect(pages).toBeGreaterThanOrEqual(6);
  });

  test("the last page ends the listing; page_size is bounded", async () => {
    const t = await tenantWithRules("pager-bounds");
    for (let i = 0; i < 4; i++) await submit(t.admin, t.tenantId, ["pass"]);
    const first = await rpcOk(t.admin, "list_scans", { tenant_id: t.tenantId, page_size: 2 });
    expect(first.scans).toHaveLength(2);
    const second = await rpcOk(t.admin, "list_scans", { tenant_id: t.tenantId, page_size: 2, before: first.next_before });
    expect(second.scans).toHaveLength(2);
    expect(second.next_before).toBeNull();
    for (const page_size of [0, -1, 101, null, "ten", 1e12]) {
      const result = await rpc(t.admin, "list_scans", { tenant_id: t.tenantId, page_size });
      expect({ page_size, status: result.status }).toEqual({ page_size, status: 400 });
    }
  });
});

describe("rule_trend", () => {
  test("per-rule results over the last N scans, oldest first, with counts and the latest result", async () => {
    const t = await tenantWithRules("trend");
    const history: Result[][] = [
      ["fail", "fail", "pass"],
      ["fail", "pass", "pass"],
      ["pass", "pass", "not_tested"],
      ["pass", "fail"],
    ];
    const scans = [];
    for (const results of history) scans.push(await submit(t.admin, t.tenantId, results));

    const trend = await rpcOk(t.admin, "rule_trend", { tenant_id: t.tenantId, last_n: 3 });
    expect(trend.scans.map((s: { id: string }) => s.id)).toEqual(scans.slice(1).map((s) => s.id));
    const byRule = Object.fromEntries(trend.rules.map((r: { rule: string }) => [r.rule, r]));
    expect(byRule["1.1.1"]).toMatchObject({ results: ["fail", "pass", "pass"], pass: 2, fail: 1, not_tested: 0, latest: "pass" });
    expect(byRule["1.1.3"]).toMatchObject({ results: ["pass", "pass", "fail"], pass: 2, fail: 1, latest: "fail" });
    expect(byRule["1.3.1"]).toMatchObject({ results: ["pass", "not_tested", null], pass: 1, not_tested: 1, latest: "not_tested" });
    expect(byRule["2.1.1"]).toMatchObject({ results: [null, null, null], pass: 0, fail: 0, latest: null });
    expect(trend.rules.map((r: { rule: string }) => r.rule)).toEqual(["1.1.1", "1.1.3", "1.3.1", "2.1.1", "3.1.1", "5.2.2.1"]);
  });

  test("last_n must be 1 to 100", async () => {
    const t = await tenantWithRules("trend-bounds");
    for (const last_n of [0, 101, null, "x"]) {
      expect((await rpc(t.admin, "rule_trend", { tenant_id: t.tenantId, last_n })).status).toBe(400);
    }
    expect(await rpcOk(t.admin, "rule_trend", { tenant_id: t.tenantId })).toEqual({ tenant_id: t.tenantId, scans: [], rules: [] });
  });
});
