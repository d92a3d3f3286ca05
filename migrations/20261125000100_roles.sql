-- migrate:up
-- PostgREST-style roles. Passwords are never set here: the authenticator's password comes
-- from the environment (AUTHENTICATOR_PASSWORD), applied by `bun run migrate` or, in
-- docker-compose, by db/init/ when the cluster is first created.
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
  -- Owns the private schemas and the SECURITY DEFINER functions, so they never run as a superuser.
  if not exists (select from pg_roles where rolname = 'auth_admin') then
    create role auth_admin nologin noinherit;
  end if;
end
$$;

grant anon, authenticated to authenticator;
alter role authenticator set statement_timeout = '15s';

create schema extensions;
create extension if not exists pgcrypto with schema extensions;
grant usage on schema extensions to auth_admin;

do $$
begin
  execute format('grant create, connect on database %I to auth_admin', current_database());
  execute format('grant connect on database %I to authenticator', current_database());
end
$$;

-- The API schema: the only one PostgREST exposes. Functions only, no tables.
create schema api authorization auth_admin;
grant usage on schema api to anon, authenticated;
-- Functions are not callable by everyone by default: each one is granted on purpose.
alter default privileges for role auth_admin revoke execute on functions from public;

-- migrate:down
alter default privileges for role auth_admin grant execute on functions to public;
drop schema api cascade;
drop extension if exists pgcrypto;
drop schema extensions cascade;
do $$
begin
  execute format('revoke all on database %I from auth_admin, authenticator', current_database());
end
$$;
revoke anon, authenticated from authenticator;
alter role authenticator reset statement_timeout;
drop role if exists auth_admin;
drop role if exists authenticator;
drop role if exists authenticated;
drop role if exists anon;
