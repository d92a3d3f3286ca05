-- migrate:up
-- Sign-in protections that live in the database, so every path to api.sign_in meets them:
-- the embedded engine, a real PostgREST, and direct SQL as the authenticator.
--
-- 1. Email normalization (auth.normalize_email): btrim of ASCII whitespace, Unicode NFC,
--    lower case (Unicode simple case mapping, collation pg_c_utf8: the cluster's C locale would
--    lower ASCII only). Refused: control characters (Cc), format and invisible characters
--    (soft hyphen, zero-width space/joiners, bidi controls, word joiner, BOM, tags, variation
--    selectors), non-ASCII spaces, and anything NFKC would change (fullwidth letters,
--    ligatures, other compatibility forms). So a lookalike of an address either is refused or
--    is the same account: NFD 'é' becomes NFC 'é', 'ÉVA' becomes 'éva'.
--
-- 2. Failed sign-in accounting, inside api.sign_in, in auth.sign_in_throttle keyed by
--    (email, client). email is the normalized address, also for unknown accounts (a refused
--    address is keyed by its trimmed lower-cased text), so answers never tell whether an
--    account exists. client is the last entry of X-Forwarded-For in request.headers (the
--    gateway sets it to the address it saw; '' on direct SQL).
--    * Per pair: the first N failures in a window cost nothing; the N-th failure and every
--      one after it blocks the pair for 1 s, 2 s, 4 s … (at most max_delay). An attempt while
--      the pair is blocked is refused before any bcrypt work: 429 with Retry-After.
--      With the defaults one address gets 5 guesses at once and at most 14 per window.
--    * Per account: when the failures of all addresses in their windows reach the ceiling,
--      every address (the owner's too) gets the same 429 until the window ends. One address
--      can only lock itself out of an account; locking out the owner takes the ceiling from
--      many addresses (with the defaults: 100 failures, at least 8 addresses, 20 when each
--      stops at its 5 free guesses).
--    * A successful sign-in deletes its pair's row; the rows of the other addresses (the
--      attack signal) stay and keep counting against the account.
--    * The pair's row is locked (insert … on conflict do update) for the whole attempt, so
--      parallel guesses from one address on one account run one after the other and cannot
--      all pass the check. The per-account sum is read without a lock.
--    * A failure does not raise (that would roll the count back): it answers 401 through
--      response.status with the same body and WWW-Authenticate header as a raised PT401.
--    * Settings (current_setting, like autoaudit.bcrypt_cost): autoaudit.sign_in_free_failures
--      (5), autoaudit.sign_in_window_seconds (900), autoaudit.sign_in_max_delay_seconds (900),
--      autoaudit.sign_in_account_ceiling (100). Every sign-in prunes up to 3 rows idle for a
--      day (window and delay are capped at a day, so such rows count for nothing).
--    * A read-only call (GET /rpc/sign_in) cannot record a failure, so it checks no password.
--
-- 3. Revocation is published by the database: NOTIFY autoaudit_session_revoked with
--    {"sid", "sub"} when a session's revoked_at is set, or when an active session is deleted,
--    whatever revoked it (any function, plain SQL, a deleted user).
set local role auth_admin;

create table auth.sign_in_throttle (
  email             text not null check (length(email) <= 254),
  client            text not null check (length(client) <= 64),
  -- failures in the window that started at window_started_at
  failures          int not null default 0 check (failures >= 0),
  window_started_at timestamptz not null default now(),
  blocked_until     timestamptz,
  updated_at        timestamptz not null default now(),
  primary key (email, client)
);
create index sign_in_throttle_by_updated_at on auth.sign_in_throttle (updated_at);

-- ── helpers (not exposed) ────────────────────────────────────────────────

-- The normalized address, or null when it is refused (see the top of this file).
create function auth.email_or_null(raw text) returns text
language plpgsql immutable set search_path = '' as $$
declare
  trimmed text := btrim(raw, E' \t\n\r\f\v');
  composed text;
  normalized text;
begin
  if trimmed is null
     or trimmed ~ '[\u0001-\u001f\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e0fff]' then
    return null;
  end if;
  composed := normalize(trimmed, nfc);
  if normalize(composed, nfkc) <> composed then
    return null;
  end if;
  normalized := normalize(lower(composed collate "pg_c_utf8"), nfc);
  if normalize(normalized, nfkc) <> normalized or length(normalized) > 254
     or normalized !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' then
    return null;
  end if;
  return normalized;
end
$$;

create function auth.normalize_email(raw text) returns text
language plpgsql immutable set search_path = '' as $$
declare
  normalized text := auth.email_or_null(raw);
begin
  if normalized is null then
    raise exception using errcode = '22023', message = 'email is not a valid address',
      hint = 'Use an address like name@example.com of at most 254 characters, without control, '
             'invisible or non-ASCII space characters and without compatibility forms such as fullwidth letters.';
  end if;
  return normalized;
end
$$;

-- An integer database setting within [low, high]; fallback when unset or not an integer.
create function auth.setting_int(name text, fallback int, low int, high int) returns int
language sql stable set search_path = '' as $$
  select least(greatest(coalesce(case when pg_input_is_valid(v, 'int4') then v::int end, fallback), low), high)
    from (select nullif(btrim(current_setting(name, true)), '') as v) s
$$;

-- The client address: the last entry of X-Forwarded-For in request.headers (set by PostgREST
-- and the engine; the gateway overwrites the header with the address it saw), '' without one.
create function auth.request_client() returns text
language sql stable set search_path = '' as $$
  select coalesce(left(btrim(regexp_replace(h.headers ->> 'x-forwarded-for', '^.*,', ''), E' \t'), 64), '')
    from (select case when pg_input_is_valid(raw, 'json') and json_typeof(raw::json) = 'object' then raw::json end as headers
            from (select nullif(current_setting('request.headers', true), '') as raw) r) h
$$;

-- 429 with Retry-After, in the RAISE SQLSTATE 'PGRST' form PostgREST (and the engine) read.
create function auth.refuse_throttled(wait interval) returns void
language plpgsql volatile set search_path = '' as $$
declare
  seconds int := greatest(ceil(extract(epoch from wait))::int, 1);
begin
  raise sqlstate 'PGRST' using
    message = format('{"code":"PT429","message":"too many failed sign-ins","details":null,"hint":"Retry after %s seconds."}', seconds),
    detail = format('{"status":429,"headers":{"Retry-After":"%s"}}', seconds);
end
$$;

create function auth.notify_session_revoked() returns trigger
language plpgsql set search_path = '' as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('autoaudit_session_revoked', json_build_object('sid', old.id, 'sub', old.user_id)::text);
    return old;
  end if;
  perform pg_notify('autoaudit_session_revoked', json_build_object('sid', new.id, 'sub', new.user_id)::text);
  return new;
end
$$;

create trigger sessions_notify_revoked after update of revoked_at on auth.sessions
  for each row when (old.revoked_at is null and new.revoked_at is not null)
  execute function auth.notify_session_revoked();
-- A session already revoked was announced then; deleting it (cleanup) says nothing new.
create trigger sessions_notify_deleted after delete on auth.sessions
  for each row when (old.revoked_at is null)
  execute function auth.notify_session_revoked();

-- Accounts created before this migration were lowered in ASCII only: bring them to the new
-- form where it is valid and taken by no other account (the others keep their address).
update auth.users u set email = n.email, updated_at = now()
  from (select distinct on (c.email) c.id, c.email
          from (select x.id, auth.email_or_null(x.email) as email, x.created_at from auth.users x) c
         where c.email is not null order by c.email, c.created_at) n
 where n.id = u.id and n.email <> u.email
   and not exists (select from auth.users o where o.email = n.email);

-- ── the API ──────────────────────────────────────────────────────────────

create or replace function api.sign_up(email text, password text, first_name text, last_name text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  normalized text := auth.normalize_email(email);
  created auth.users;
begin
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

-- See the top of this file for the throttling design.
create or replace function api.sign_in(email text, password text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  normalized text := auth.email_or_null(email);
  -- unknown and refused addresses are counted like real ones
  throttle_email text := coalesce(normalized, lower(left(btrim(coalesce(email, ''), E' \t\n\r\f\v'), 254)));
  throttle_client text := auth.request_client();
  free_failures int := auth.setting_int('autoaudit.sign_in_free_failures', 5, 0, 1000);
  window_length interval := make_interval(secs => auth.setting_int('autoaudit.sign_in_window_seconds', 900, 1, 86400));
  max_delay int := auth.setting_int('autoaudit.sign_in_max_delay_seconds', 900, 1, 86400);
  account_ceiling int := auth.setting_int('autoaudit.sign_in_account_ceiling', 100, 1, 1000000000);
  pair auth.sign_in_throttle;
  attempt_at timestamptz;
  account_failures bigint;
  account_window_end timestamptz;
  found_user auth.users;
  valid boolean := false;
  session uuid;
  issued record;
begin
  if current_setting('transaction_read_only') = 'on' then
    raise exception using errcode = '25006', message = 'cannot execute sign_in in a read-only transaction',
      hint = 'Use POST: a sign-in records its failures.';
  end if;

  -- Locks the pair until the end of the attempt: parallel guesses wait here.
  insert into auth.sign_in_throttle as t (email, client) values (throttle_email, throttle_client)
  on conflict on constraint sign_in_throttle_pkey do update set updated_at = t.updated_at
  returning * into pair;
  attempt_at := clock_timestamp();
  if pair.blocked_until > attempt_at then
    perform auth.refuse_throttled(pair.blocked_until - attempt_at);
  end if;
  select coalesce(sum(t.failures), 0), max(t.window_started_at) + window_length
    into account_failures, account_window_end
    from auth.sign_in_throttle t
   where t.email = throttle_email and t.failures > 0 and t.window_started_at > attempt_at - window_length;
  if account_failures >= account_ceiling then
    perform auth.refuse_throttled(account_window_end - attempt_at);
  end if;
  delete from auth.sign_in_throttle t
   where (t.email, t.client) in (select o.email, o.client from auth.sign_in_throttle o
                                  where o.updated_at < attempt_at - interval '1 day' limit 3 for update skip locked);

  if normalized is not null and password is not null and octet_length(password) <= 72 then
    select * into found_user from auth.users u where u.email = normalized;
  end if;
  if found_user.id is null then
    -- Same work as a real check, so response time does not reveal whether the email exists.
    perform extensions.crypt(password, extensions.gen_salt('bf', auth.bcrypt_cost()));
  else
    valid := extensions.crypt(password, found_user.password_hash) = found_user.password_hash;
  end if;

  if not valid then
    if pair.failures = 0 or pair.window_started_at <= attempt_at - window_length then
      pair.failures := 1;
      pair.window_started_at := attempt_at;
    else
      pair.failures := pair.failures + 1;
    end if;
    update auth.sign_in_throttle t
       set failures = pair.failures, window_started_at = pair.window_started_at, updated_at = attempt_at,
           blocked_until = case when pair.failures >= free_failures then
             attempt_at + make_interval(secs => least(power(2, least(pair.failures - free_failures, 30)), max_delay)) end
     where t.email = throttle_email and t.client = throttle_client;
    -- Not raised: that would roll the count back. The status, headers and body (byte for byte)
    -- of a raised PT401, as PostgREST and the engine render it.
    perform set_config('response.status', '401', true);
    perform set_config('response.headers', '[{"WWW-Authenticate":"Bearer"},{"Proxy-Status":"PostgREST; error=PT401"}]', true);
    return '{"code":"PT401","details":null,"hint":null,"message":"invalid email or password"}'::json;
  end if;

  delete from auth.sign_in_throttle t where t.email = throttle_email and t.client = throttle_client;
  update auth.users set last_login_at = now() where id = found_user.id returning * into found_user;
  insert into auth.sessions (user_id) values (found_user.id) returning id into session;
  issued := auth.new_refresh_token(session);
  return auth.session_json(found_user, session, issued.token, issued.expires_at);
end
$$;

comment on table auth.sign_in_throttle is 'Failed sign-ins per (normalized email, client address); see api.sign_in.';
comment on function api.sign_up(text, text, text, text) is 'Create an account. 409 when the email is taken.';
comment on function api.sign_in(text, text) is 'Open a session: returns the user and a refresh token.';

revoke all on table auth.sign_in_throttle from public;
revoke all on function auth.email_or_null(text), auth.normalize_email(text), auth.setting_int(text, int, int, int),
  auth.request_client(), auth.refuse_throttled(interval), auth.notify_session_revoked() from public;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;

create or replace function api.sign_up(email text, password text, first_name text, last_name text) returns json
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

create or replace function api.sign_in(email text, password text) returns json
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

comment on function api.sign_up(text, text, text, text) is 'Create an account. 409 when the email is taken.';
comment on function api.sign_in(text, text) is 'Open a session: returns the user and a refresh token.';

drop trigger sessions_notify_deleted on auth.sessions;
drop trigger sessions_notify_revoked on auth.sessions;
drop function auth.notify_session_revoked();
drop function auth.refuse_throttled(interval);
drop function auth.request_client();
drop function auth.setting_int(text, int, int, int);
drop function auth.normalize_email(text);
drop function auth.email_or_null(text);
drop table auth.sign_in_throttle;

reset role;
notify pgrst, 'reload schema';
