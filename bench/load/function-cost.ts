/**
 * PostgreSQL time per request transaction of the API's hot SQL functions, measured inside the
 * database (a DO loop that COMMITs after every call, so each call pays its per-transaction
 * costs as a request does), next to single-function variants that read the JWT claim inline.
 * A diagnostic for the load report's "PostgreSQL ms/req" column; not part of `bun run load`.
 *
 *   bun bench/load/function-cost.ts          # throwaway embedded PostgreSQL, migrated
 */
import postgres from "postgres";
import { startEmbeddedPostgres } from "../../api/src/stack/embedded-postgres";
import { dbmate } from "../../api/src/stack/migrate";

const CALLS = Number(process.env.CALLS ?? 3000);

const pg = await startEmbeddedPostgres({ database: "autoaudit_function_cost" });
const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
try {
  await dbmate(pg.url, "up");
  const [user] = await sql`insert into auth.users (email, password_hash, first_name, last_name)
                           values ('cost@example.com', 'x', 'Cost', 'Probe') returning id`;
  const [session] = await sql`insert into auth.sessions (user_id) values (${user!.id}) returning id`;
  const claims = JSON.stringify({ sub: user!.id, sid: session!.id, role: "authenticated", email: "cost@example.com" });
  // The variants live in a scratch schema of this throwaway database only.
  await sql.unsafe(`
    create schema cost;
    -- api.me() with the claim read in the query and no nested helper functions.
    create function cost.me_inline() returns json language plpgsql stable security definer set search_path = '' as $$
    declare found_user auth.users;
    begin
      select * into found_user from auth.users u
       where u.id = (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid;
      if found_user.id is null then raise exception using errcode = 'PT401', message = 'sign in required'; end if;
      return json_build_object('id', found_user.id, 'email', found_user.email, 'first_name', found_user.first_name,
        'last_name', found_user.last_name, 'last_login_at', found_user.last_login_at, 'created_at', found_user.created_at);
    end $$;
    -- api.session_active() the same way.
    create function cost.session_active_inline() returns boolean language sql stable security definer set search_path = '' as $$
      select exists (select from auth.sessions s
        where s.id::text = nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sid'
          and s.user_id::text = nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
          and s.revoked_at is null) $$;
  `);

  const perTransaction = async (expression: string): Promise<number> => {
    const loop = (n: number) => `do $$ begin for i in 1..${n} loop
        perform set_config('request.jwt.claims', '${claims}', true);
        perform ${expression};
        commit;
      end loop; end $$`;
    await sql.unsafe(loop(200)); // warm the session's caches
    const started = performance.now();
    await sql.unsafe(loop(CALLS));
    return ((performance.now() - started) / CALLS) * 1000;
  };

  const rows: [string, string][] = [
    ["empty transaction (set_config + commit)", "1"],
    ["api.me() as migrated", "api.me()"],
    ["me, claim read inline, no helper calls", "cost.me_inline()"],
    ["api.session_active() as migrated", "api.session_active()"],
    ["session_active, claims read inline", "cost.session_active_inline()"],
    ["auth.current_user_id() alone", "auth.current_user_id()"],
  ];
  console.log(`PostgreSQL time per request transaction, ${CALLS} committed transactions each (µs, lower is better)\n`);
  for (const [label, expression] of rows) {
    const samples = [await perTransaction(expression), await perTransaction(expression), await perTransaction(expression)].sort((a, b) => a - b);
    console.log(`${label.padEnd(45)} ${samples[1]!.toFixed(0).padStart(6)} µs   (min ${samples[0]!.toFixed(0)}, max ${samples[2]!.toFixed(0)})`);
  }
} finally {
  await sql.end();
  await pg.stop();
}
