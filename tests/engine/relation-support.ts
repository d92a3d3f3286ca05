// A throwaway schema with a small table and an RLS-protected one, and an engine exposing it,
// for the relation-read suites. Everything lives in its own schema and is dropped afterwards.
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { SignJWT } from "jose";
import { createEngine, type Engine } from "../../api/src/engine";
import { defaultEngineConfig, type EngineConfig } from "../../api/src/config";
import { testStack } from "../support/stack";

export const JWT_SECRET = "relation-reads-test-secret-0123456789abcdef";

export interface RelationFixture {
  schema: string;
  engine: Engine;
  admin: postgres.Sql;
  get(path: string, init?: { method?: string; headers?: Record<string, string> }): Promise<Response>;
  token(claims: Record<string, unknown>): Promise<string>;
  stop(): Promise<void>;
}

export async function startRelationFixture(overrides: Partial<EngineConfig> = {}): Promise<RelationFixture> {
  const stack = testStack();
  const schema = `relread_${randomBytes(4).toString("hex")}`;
  const admin = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
  await admin.begin(async (tx) => {
    await tx.unsafe(`
      create schema ${schema};
      grant usage on schema ${schema} to anon, authenticated;
      create table ${schema}.people (
        id int primary key, name text not null, team text, score int, data jsonb, born date
      );
      insert into ${schema}.people values
        (1, 'Ada',     'red',  90,   '{"lang":"en","tags":["x","y"],"n":1}', '1815-12-10'),
        (2, 'Brian',   'blue', 75,   '{"lang":"fr","n":2}',                  '1942-01-08'),
        (3, 'Carla',   'red',  null, null,                                    null),
        (4, 'Dmitri',  'green', 60,  '{"lang":"ru","n":4}',                  '1834-02-08'),
        (5, 'O''Hara', null,   75,   '{"lang":"en","n":5}',                  '1900-01-01');
      grant select on ${schema}.people to anon, authenticated;

      create table ${schema}.notes (id int primary key, owner text not null, body text not null);
      insert into ${schema}.notes values (1, 'alice', 'a1'), (2, 'bob', 'b1'), (3, 'alice', 'a2'), (4, 'carol', 'c1');
      alter table ${schema}.notes enable row level security;
      create policy notes_owner on ${schema}.notes for select to authenticated
        using (owner = current_setting('request.jwt.claims', true)::json->>'sub');
      grant select on ${schema}.notes to authenticated;

      create table ${schema}.secrets (id int);
      create table ${schema}.empty_things (id int);
      grant select on ${schema}.empty_things to anon;
      create view ${schema}.red_team as select id, name from ${schema}.people where team = 'red';
      grant select on ${schema}.red_team to anon;
    `);
  });

  const config = defaultEngineConfig({
    dbSchemas: [schema],
    dbAnonRole: "anon",
    jwtSecret: JWT_SECRET,
    dbExtraSearchPath: ["public"],
    ...overrides,
  });
  const engine = await createEngine(config, { databaseUrl: stack.authenticatorUrl, log: () => {} });
  const key = new TextEncoder().encode(JWT_SECRET);

  return {
    schema,
    engine,
    admin,
    get(path, init = {}) {
      return engine.fetch(new Request(`http://engine${path}`, { method: init.method ?? "GET", headers: init.headers }));
    },
    token(claims) {
      return new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(key);
    },
    async stop() {
      await engine.close();
      await admin.unsafe(`drop schema ${schema} cascade`);
      await admin.end();
    },
  };
}

/** A checksum of every row of the fixture tables, to prove a request changed nothing. */
export async function fixtureChecksum(f: RelationFixture): Promise<string> {
  const [row] = await f.admin.unsafe(
    `select md5(string_agg(t::text, '|' order by t::text)) as sum from (
       select 'p' || p::text as t from ${f.schema}.people p
       union all select 'n' || n::text from ${f.schema}.notes n
       union all select 's' || s::text from ${f.schema}.secrets s
       union all select 'c' || count(*)::text from pg_class c join pg_namespace ns on ns.oid = c.relnamespace where ns.nspname = '${f.schema}'
     ) x`,
  );
  return row!.sum as string;
}
