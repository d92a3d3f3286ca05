-- migrate:up
-- Everything below is owned by auth_admin, so the SECURITY DEFINER functions run with
-- exactly the privileges of the auth tables and nothing more.
set local role auth_admin;

create schema auth;

create table auth.users (
  id            uuid primary key default gen_random_uuid(),
  -- stored trimmed and lower-cased: uniqueness is case-insensitive by construction
  email         text not null unique
                check (email = lower(btrim(email)) and length(email) between 3 and 254),
  password_hash text not null,
  first_name    text not null check (length(btrim(first_name)) between 1 and 100),
  last_name     text not null check (length(btrim(last_name)) between 1 and 100),
  last_login_at timestamptz,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

-- A session is one sign-in: the family of refresh tokens that rotation produces.
create table auth.sessions (
  id             uuid primary key default gen_random_uuid(),
  user_id        uuid not null references auth.users (id) on delete cascade,
  created_at     timestamptz not null default now(),
  revoked_at     timestamptz,
  revoked_reason text check (revoked_reason in ('logout', 'logout_all', 'reuse_detected')),
  check ((revoked_at is null) = (revoked_reason is null))
);
create index sessions_active_by_user on auth.sessions (user_id) where revoked_at is null;

-- Only the sha256 digest of a refresh token is stored: a leaked table holds no live token.
create table auth.refresh_tokens (
  id          bigint generated always as identity primary key,
  session_id  uuid not null references auth.sessions (id) on delete cascade,
  token_hash  bytea not null unique check (octet_length(token_hash) = 32),
  issued_at   timestamptz not null default now(),
  expires_at  timestamptz not null,
  -- set when the token is rotated or its session revoked; presenting it again is reuse
  retired_at  timestamptz,
  replaced_by bigint references auth.refresh_tokens (id)
);
create index refresh_tokens_by_session on auth.refresh_tokens (session_id);

-- ── helpers (not exposed) ────────────────────────────────────────────────

-- The bcrypt cost: 12 unless the database sets autoaudit.bcrypt_cost (tests use 4).
create function auth.bcrypt_cost() returns int
language sql stable set search_path = '' as $$
  select least(greatest(coalesce(nullif(current_setting('autoaudit.bcrypt_cost', true), '')::int, 12), 4), 15)
$$;

-- auth.claim and auth.claim_uuid have no SET clause and qualify every builtin, so PostgreSQL
-- inlines them into the calling query (a SET clause forbids inlining and costs a plan per call); inlined,
-- they run under the caller's fixed, empty search_path.
create function auth.claim(name text) returns text
language sql stable as $$
  select nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb operator(pg_catalog.->>) name
$$;

-- A uuid claim (`sub`, `sid`), or null when it is missing or not a uuid.
create function auth.claim_uuid(name text) returns uuid
language sql stable as $$
  select case when auth.claim(name) operator(pg_catalog.~) '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
              then auth.claim(name)::uuid end
$$;

-- The signed-in user, from the `sub` claim PostgREST puts in request.jwt.claims.
create function auth.current_user_id() returns uuid
language plpgsql stable set search_path = '' as $$
declare
  sub text := auth.claim('sub');
begin
  if sub is null or sub !~ '^[0-9a-fA-F-]{36}$' then
    raise exception using errcode = 'PT401', message = 'sign in required';
  end if;
  return sub::uuid;
end
$$;

create function auth.token_digest(token text) returns bytea
language sql immutable set search_path = '' as $$
  select extensions.digest(convert_to(token, 'UTF8'), 'sha256')
$$;

-- Opens a token in a session: 256 random bits, returned once, stored as a digest.
create function auth.new_refresh_token(session uuid, out token text, out expires_at timestamptz)
language plpgsql volatile set search_path = '' as $$
begin
  token := rtrim(translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/', '-_'), '=');
  expires_at := now() + interval '60 days';
  insert into auth.refresh_tokens (session_id, token_hash, expires_at)
  values (session, auth.token_digest(token), expires_at);
end
$$;

-- plpgsql: called with a row variable, a SQL function would be planned anew at every call.
create function auth.user_json(u auth.users) returns json
language plpgsql immutable set search_path = '' as $$
begin
  return json_build_object(
    'id', u.id, 'email', u.email, 'first_name', u.first_name, 'last_name', u.last_name,
    'last_login_at', u.last_login_at, 'created_at', u.created_at);
end
$$;

create function auth.session_json(u auth.users, session uuid, token text, expires_at timestamptz) returns json
language sql immutable set search_path = '' as $$
  select json_build_object(
    'user', auth.user_json(u), 'session_id', session,
    'refresh_token', token, 'refresh_expires_at', expires_at)
$$;

create function auth.revoke_session(session uuid, reason text) returns boolean
language plpgsql volatile set search_path = '' as $$
declare
  changed boolean;
begin
  update auth.sessions set revoked_at = now(), revoked_reason = reason
   where id = session and revoked_at is null;
  changed := found;
  update auth.refresh_tokens set retired_at = now()
   where session_id = session and retired_at is null;
  return changed;
end
$$;

-- ── the API (exposed by PostgREST under /rpc) ────────────────────────────

create function api.sign_up(email text, password text, first_name text, last_name text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  normalized text := lower(btrim(email));
  created auth.users;
begin
  if normalized is null or length(normalized) > 254
     or normalized !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' then
    raise exception using errcode = '22023', message = 'email is not a valid address',
      hint = 'Use an address like name@example.com of at most 254 characters.';
  end if;
  if password is null or length(password) < 8 then
    raise exception using errcode = '22023', message = 'password is too short',
      hint = 'Use at least 8 characters.';
  end if;
  if octet_length(password) > 72 then
    raise exception using errcode = '22023', message = 'password is too long',
      hint = 'Use at most 72 bytes (bcrypt ignores the rest).';
  end if;
  if coalesce(length(btrim(first_name)), 0) not between 1 and 100
     or coalesce(length(btrim(last_name)), 0) not between 1 and 100 then
    raise exception using errcode = '22023', message = 'first_name and last_name are required',
      hint = 'Each name must be 1 to 100 characters.';
  end if;

  insert into auth.users (email, password_hash, first_name, last_name)
  values (normalized, extensions.crypt(password, extensions.gen_salt('bf', auth.bcrypt_cost())),
          btrim(first_name), btrim(last_name))
  on conflict on constraint users_email_key do nothing
  returning * into created;

  if created.id is null then
    raise exception using errcode = 'PT409', message = 'an account with this email already exists',
      hint = 'Sign in instead.';
  end if;
  return auth.user_json(created);
end
$$;

create function api.sign_in(email text, password text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  found_user auth.users;
  session uuid;
  issued record;
begin
  if email is null or password is null or octet_length(password) > 72 or length(email) > 254 then
    raise exception using errcode = 'PT401', message = 'invalid email or password';
  end if;
  select * into found_user from auth.users u where u.email = lower(btrim(sign_in.email));
  if found_user.id is null then
    -- Same work as a real check, so response time does not reveal whether the email exists.
    perform extensions.crypt(password, extensions.gen_salt('bf', auth.bcrypt_cost()));
    raise exception using errcode = 'PT401', message = 'invalid email or password';
  end if;
  if extensions.crypt(password, found_user.password_hash) <> found_user.password_hash then
    raise exception using errcode = 'PT401', message = 'invalid email or password';
  end if;

  update auth.users set last_login_at = now() where id = found_user.id returning * into found_user;
  insert into auth.sessions (user_id) values (found_user.id) returning id into session;
  issued := auth.new_refresh_token(session);
  return auth.session_json(found_user, session, issued.token, issued.expires_at);
end
$$;

create function api.issue_token(refresh_token text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  presented auth.refresh_tokens;
  owner auth.users;
  issued record;
begin
  select * into presented from auth.refresh_tokens t
   where t.token_hash = auth.token_digest(coalesce(refresh_token, ''))
   for update;
  if presented.id is null or presented.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;

  if presented.retired_at is not null then
    -- A retired token presented again means two parties hold the family: revoke all of it.
    -- Raising would roll the revocation back, so answer 401 through PostgREST's response.status.
    if auth.revoke_session(presented.session_id, 'reuse_detected') then
      perform set_config('response.status', '401', true);
      return json_build_object(
        'code', 'PT401', 'message', 'refresh token reuse detected; the session was revoked',
        'details', json_build_object('session_id', presented.session_id)::text,
        'hint', 'Sign in again.');
    end if;
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;

  select u.* into owner from auth.users u join auth.sessions s on s.user_id = u.id
   where s.id = presented.session_id and s.revoked_at is null;
  if owner.id is null then
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;

  issued := auth.new_refresh_token(presented.session_id);
  update auth.refresh_tokens
     set retired_at = now(),
         replaced_by = (select id from auth.refresh_tokens where token_hash = auth.token_digest(issued.token))
   where id = presented.id;
  return auth.session_json(owner, presented.session_id, issued.token, issued.expires_at);
end
$$;

create function api.validate_token(refresh_token text) returns json
language sql stable security definer set search_path = '' as $$
  select coalesce(
    (select json_build_object('active', true, 'user_id', s.user_id, 'session_id', s.id,
                              'expires_at', t.expires_at)
       from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id
      where t.token_hash = auth.token_digest(coalesce(refresh_token, ''))
        and t.retired_at is null and s.revoked_at is null and t.expires_at > now()),
    json_build_object('active', false, 'user_id', null, 'session_id', null, 'expires_at', null))
$$;

-- Logout of one session. Idempotent, and silent about tokens it does not know.
create function api.revoke_token(refresh_token text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  session uuid;
begin
  select t.session_id into session from auth.refresh_tokens t
   where t.token_hash = auth.token_digest(coalesce(refresh_token, ''));
  if session is not null then
    perform auth.revoke_session(session, 'logout');
  end if;
  return json_build_object('session_id', session);
end
$$;

create function api.revoke_all_tokens() returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  revoked uuid[];
begin
  select coalesce(array_agg(s.id), '{}') into revoked
    from auth.sessions s where s.user_id = auth.current_user_id() and s.revoked_at is null;
  perform auth.revoke_session(id, 'logout_all') from unnest(revoked) as id;
  return json_build_object('revoked_sessions', to_json(revoked));
end
$$;

create function api.me() returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  sub text := auth.claim('sub');
  found_user auth.users;
begin
  if pg_catalog.pg_input_is_valid(sub, 'uuid') then
    select * into found_user from auth.users u where u.id = sub::uuid;
  end if;
  if found_user.id is null then
    raise exception using errcode = 'PT401', message = 'sign in required';
  end if;
  return auth.user_json(found_user);
end
$$;

-- Whether the session named by the access token's `sid` claim is still active.
-- plpgsql rather than sql: it keeps its plan for the session, where a SQL function is planned anew at every call.
create function api.session_active() returns boolean
language plpgsql stable security definer set search_path = '' as $$
begin
  return exists (
    select from auth.sessions s
     where s.id = auth.claim_uuid('sid') and s.user_id = auth.claim_uuid('sub') and s.revoked_at is null);
end
$$;

comment on function api.sign_up(text, text, text, text) is 'Create an account. 409 when the email is taken.';
comment on function api.sign_in(text, text) is 'Open a session: returns the user and a refresh token.';
comment on function api.issue_token(text) is 'Rotate a refresh token. Reusing a retired token revokes its session.';
comment on function api.validate_token(text) is 'Whether a refresh token belongs to an active session.';
comment on function api.revoke_token(text) is 'Sign out of the session of a refresh token. Idempotent.';
comment on function api.revoke_all_tokens() is 'Sign the current user out of every session.';
comment on function api.me() is 'The signed-in user''s profile.';
comment on function api.session_active() is 'Whether the access token''s session is still active.';

revoke all on all functions in schema auth from public;
revoke all on all functions in schema api from public;
grant execute on function api.sign_up(text, text, text, text), api.sign_in(text, text),
  api.issue_token(text), api.validate_token(text), api.revoke_token(text) to anon, authenticated;
grant execute on function api.revoke_all_tokens(), api.me(), api.session_active() to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
drop function api.session_active();
drop function api.me();
drop function api.revoke_all_tokens();
drop function api.revoke_token(text);
drop function api.validate_token(text);
drop function api.issue_token(text);
drop function api.sign_in(text, text);
drop function api.sign_up(text, text, text, text);
drop schema auth cascade;
notify pgrst, 'reload schema';
