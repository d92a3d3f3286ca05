import { expect, test } from "bun:test";
import postgres from "postgres";
import { testStack } from "../support/stack";

test("migrations create the api functions", async () => {
  const sql = postgres(testStack().databaseUrl, { max: 1 });
  const rows = await sql`select proname from pg_proc where pronamespace = 'api'::regnamespace order by 1`;
  expect(rows.map((r) => r.proname)).toEqual(["issue_token", "me", "revoke_all_tokens", "revoke_token", "session_active", "sign_in", "sign_up", "validate_token"]);
  await sql.end();
});
