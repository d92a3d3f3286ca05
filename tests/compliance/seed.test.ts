import { afterAll, expect, test } from "bun:test";
import { DEMO_EMAIL, DEMO_TENANT_ID, seed } from "../../api/src/cli/seed";
import { testStack } from "../support/stack";
import { adminSql, rpcOk, signInUser } from "./support";

const sql = adminSql(2);
afterAll(() => sql.end());

test("the seed loads a demo tenant, CIS M365 rules and two scans, and a second run changes nothing", async () => {
  const first = await seed(testStack().databaseUrl, "demo-password-for-tests");
  expect(first).toMatchObject({ email: DEMO_EMAIL, tenantId: DEMO_TENANT_ID, scans: 2 });
  expect(first.rules).toBeGreaterThanOrEqual(20);

  const snapshot = () => sql`
    select (select json_agg(s order by s.seq) from compliance.scans s where s.tenant_id = ${DEMO_TENANT_ID}) as scans,
           (select count(*) from compliance.issues where tenant_id = ${DEMO_TENANT_ID})::int as issues,
           (select json_agg(r order by r.id) from compliance.rules r where r.tenant_id = ${DEMO_TENANT_ID}) as rules`;
  const before = await snapshot();
  const second = await seed(testStack().databaseUrl);
  expect(second).toEqual({ ...first, password: undefined });
  expect(await snapshot()).toEqual(before);

  // A demo user seeded before this run (an external stack) keeps the password it was seeded with.
  const password = first.password ?? process.env.SEED_DEMO_PASSWORD;
  if (!password) throw new Error(`${DEMO_EMAIL} existed before this run: set SEED_DEMO_PASSWORD to its password`);
  const demo = await signInUser(DEMO_EMAIL, password);
  const latest = await rpcOk(demo, "latest_scan", { tenant_id: DEMO_TENANT_ID });
  expect(latest.findings).toHaveLength(first.rules);
  expect(latest.score).toBeGreaterThan((await rpcOk(demo, "list_scans", { tenant_id: DEMO_TENANT_ID })).scans[1].score);
});
