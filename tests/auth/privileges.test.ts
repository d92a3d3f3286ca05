import { afterAll, describe, expect, test } from "bun:test";
import { connectPostgres } from "../../api/src/db/connection";
import { adminSql, call, callAs } from "./support";
import { testStack } from "../support/stack";

const sql = adminSql();
afterAll(() => sql.end());

describe("privileges", () => {
  for (const role of ["anon", "authenticated"] as const) {
    for (const table of ["auth.users", "auth.sessions", "auth.refresh_tokens"]) {
      test(`${role} cannot read ${table}`, async () => {
        const result = await callAs(sql, role, null, (tx) => tx.unsafe(`select * from ${table}`));
        expect(result.error?.code).toBe("42501");
      });
    }
  }

  test("anon may not call the signed-in functions (PostgREST's 401 for the anonymous role)", async () => {
    for (const fn of ["me", "revoke_all_tokens", "session_active"]) {
      const result = await call(fn, {});
      expect({ fn, status: result.status, body: result.body }).toEqual({
        fn,
        status: 401,
        body: { code: "42501", details: null, hint: null, message: `permission denied for function ${fn}` },
      });
    }
  });

  test("PUBLIC has EXECUTE on no function of api or auth", async () => {
    const rows = await sql`
      select p.oid::regprocedure::text as fn from pg_proc p
       where p.pronamespace in ('api'::regnamespace, 'auth'::regnamespace)
         and has_function_privilege('public', p.oid, 'execute')`;
    expect(rows.map((r) => r.fn)).toEqual([]);
  });

  test("every api function is SECURITY DEFINER with a fixed empty search_path, owned by auth_admin", async () => {
    const rows = await sql`
      select p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) as owner
        from pg_proc p where p.pronamespace = 'api'::regnamespace and p.proname in
        ('sign_up','sign_in','issue_token','validate_token','revoke_token','revoke_all_tokens','me','session_active')`;
    expect(rows).toHaveLength(8);
    for (const row of rows) {
      expect(row).toMatchObject({ prosecdef: true, proconfig: ['search_path=""'], owner: "auth_admin" });
    }
  });

  test("the authenticator logs in, cannot read auth tables, and can become anon and authenticated", async () => {
    const auth = connectPostgres(testStack().authenticatorUrl, { max: 1, onnotice: () => {} });
    try {
      const [me] = await auth`select current_user as u, (select rolinherit from pg_roles where rolname = current_user) as inherit, (select rolsuper from pg_roles where rolname = current_user) as super`;
      expect(me).toEqual({ u: "authenticator", inherit: false, super: false });
      expect(auth`select * from auth.users`).rejects.toMatchObject({ code: "42501" });
      await auth.begin(async (tx) => {
        await tx`set local role anon`;
        await tx`set local role authenticated`;
      });
    } finally {
      await auth.end();
    }
  });
});
