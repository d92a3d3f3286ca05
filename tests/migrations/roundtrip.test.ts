import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import postgres from "postgres";
import { startEmbeddedPostgres, type RunningPostgres } from "../../api/src/stack/embedded-postgres";
import { dbmate, dbmateUrl, MIGRATIONS_DIR, migrateDownToZero } from "../../api/src/stack/migrate";

// Roles are cluster-wide, so going down to zero runs on a cluster of its own.
let cluster: RunningPostgres;
let sql: postgres.Sql;
beforeAll(async () => {
  cluster = await startEmbeddedPostgres({ database: "roundtrip" });
  sql = postgres(cluster.url, { max: 1, onnotice: () => {} });
}, 60_000);
afterAll(async () => {
  await sql?.end();
  await cluster?.stop();
});

/** Everything migrations define, as text without OIDs, so two builds can be compared. */
async function schemaSnapshot() {
  const userSchemas = sql`n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and n.nspname not like 'pg_temp%' and n.nspname not like 'pg_toast_temp%'`;
  return {
    schemas: await sql`select n.nspname, pg_get_userbyid(n.nspowner) as owner, n.nspacl::text as acl from pg_namespace n where ${userSchemas} order by 1`,
    relations: await sql`
      select n.nspname, c.relname, c.relkind, c.relrowsecurity, pg_get_userbyid(c.relowner) as owner, c.relacl::text as acl,
             (select json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod), 'notnull', a.attnotnull,
                      'default', pg_get_expr(d.adbin, d.adrelid), 'identity', a.attidentity) order by a.attnum)
                from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
               where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns,
             case when c.relkind = 'v' then pg_get_viewdef(c.oid) end as view
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where ${userSchemas} and c.relkind in ('r', 'v', 'm', 'S', 'p') order by 1, 2`,
    constraints: await sql`
      select n.nspname, c.conrelid::regclass::text as rel, c.conname, pg_get_constraintdef(c.oid) as def
        from pg_constraint c join pg_namespace n on n.oid = c.connamespace where ${userSchemas} order by 1, 2, 3`,
    indexes: await sql`select schemaname, indexname, indexdef from pg_indexes where schemaname not in ('pg_catalog') order by 1, 2`,
    functions: await sql`
      select p.oid::regprocedure::text as sig, pg_get_functiondef(p.oid) as def, p.proacl::text as acl, pg_get_userbyid(p.proowner) as owner
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where ${userSchemas} and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e') order by 1`,
    policies: await sql`select schemaname, tablename, policyname, cmd, roles::text, qual, with_check from pg_policies order by 1, 2, 3`,
    triggers: await sql`select tgrelid::regclass::text as rel, tgname, pg_get_triggerdef(oid) as def from pg_trigger where not tgisinternal order by 1, 2`,
    extensions: await sql`select e.extname, n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace order by 1`,
    roles: await sql`select rolname, rolcanlogin, rolinherit, rolsuper from pg_roles where rolname !~ '^pg_' and rolname <> 'postgres' order by 1`,
    memberships: await sql`select r.rolname as role, m.rolname as member from pg_auth_members a join pg_roles r on r.oid = a.roleid join pg_roles m on m.oid = a.member where r.rolname !~ '^pg_' order by 1, 2`,
    defaultAcls: await sql`select pg_get_userbyid(defaclrole) as role, defaclobjtype, defaclacl::text from pg_default_acl order by 1, 2`,
  };
}

test("dbmate up, down to zero, and up again leaves the same schema", async () => {
  await dbmate(cluster.url, "up");
  const first = await schemaSnapshot();
  expect(first.functions.length).toBeGreaterThan(0);

  await migrateDownToZero(cluster.url);
  expect(await dbmate(cluster.url, "status")).toMatch(/Applied: 0/);
  const empty = await schemaSnapshot();
  expect(empty.schemas.map((s) => s.nspname)).toEqual(["public"]);
  expect(empty.relations.map((r) => r.relname)).toEqual(["schema_migrations"]);
  expect(empty.functions.length).toBe(0);
  expect(empty.roles.length).toBe(0);
  expect(empty.extensions.map((e) => e.extname)).toEqual(["plpgsql"]);

  await dbmate(cluster.url, "up");
  expect(await schemaSnapshot()).toEqual(first);
}, 60_000);

test("rolling back the latest migration gives exactly the schema of the migrations before it", async () => {
  // the cluster is migrated up by the test above
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith(".sql")).sort();
  expect(files.length).toBeGreaterThan(1);
  await dbmate(cluster.url, "rollback");
  const rolledBack = await schemaSnapshot();

  await migrateDownToZero(cluster.url);
  const dir = mkdtempSync(join(tmpdir(), "migrations-"));
  try {
    for (const file of files.slice(0, -1)) copyFileSync(join(MIGRATIONS_DIR, file), join(dir, file));
    const dbmateBin = resolve(import.meta.dir, "../../node_modules/.bin/dbmate");
    const proc = Bun.spawn([dbmateBin, "--url", dbmateUrl(cluster.url), "--migrations-dir", dir, "--no-dump-schema", "up"], {
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, DATABASE_URL: "" },
    });
    const [err, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    expect({ code, err }).toEqual({ code: 0, err: "" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(await schemaSnapshot()).toEqual(rolledBack);
  await dbmate(cluster.url, "up");
}, 60_000);
