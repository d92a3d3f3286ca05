-- migrate:up
-- Multi-factor authentication: TOTP factors, recovery codes and assurance levels (aal1/aal2)
-- that the database enforces. The design in one place (docs/decisions/0003-mfa-secrets.md
-- says why the cryptography is here):
--
-- * TOTP (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits, ±1 step) is computed here with pgcrypto's
--   hmac(), so every path to the functions (gateway, a real PostgREST, SQL as the authenticator)
--   meets the same checks, throttling and replay protection, in the transaction that acts on
--   the result. A code is accepted once: its step must be later than the factor's
--   last_used_step, so neither a replay nor an older code of the window works after a newer one.
-- * Secrets (20 random bytes) are stored encrypted (pgp_sym_encrypt_bytea, AES-256) with the
--   key of MFA_ENCRYPTION_KEY, which the functions that need it receive per request in their
--   mfa_key argument; the gateway fills it in from its environment and overwrites whatever a
--   client sent. The key is never stored in the database. Without the right key nothing
--   decrypts, so a call that bypasses the gateway fails closed. The secret is returned once,
--   by mfa_enroll_totp.
-- * Recovery codes: ten, 60 bits each, returned once when the account's first factor is
--   verified (and by mfa_regenerate_recovery_codes), stored as HMAC-SHA256 digests under the
--   same key (a leaked table cannot be brute-forced offline), single use.
-- * Sessions carry aal and amr ([{method, timestamp[, provider]}]). A session opens at aal1
--   with the method that opened it (password, or oidc with its provider: a trigger sees the
--   authorization code exchange_auth_code used in the same transaction). mfa_verify,
--   mfa_verify_enrollment and mfa_use_recovery_code raise it to aal2, append the method and
--   rotate its refresh tokens. auth.session_json reports aal, amr, mfa_required and the
--   verified factors, so sign_in, exchange_auth_code, issue_token (a refreshed token keeps the
--   session's aal and amr) answer them without their text changing; the gateway puts aal and
--   amr in the access token, and SQL reads them back from the claims (auth.aal()).
-- * Enforcement: auth.require_aal2() (always) and auth.require_aal2_if_enrolled() (when the
--   caller has a verified factor) guard factor management, password and email changes
--   (trigger on auth.users) and tenant administration (compliance.require_role for 'admin',
--   and a trigger on tenant_members and rules). A tenant's require_mfa (set by its admins, at
--   aal2) hides the tenant from aal1 sessions in RLS (compliance.my_tenant_ids) and makes
--   compliance.require_role answer 403 naming the missing step.
-- * Throttling, like sign-in's: per factor, the first autoaudit.mfa_free_failures (5) failures
--   in a window cost nothing, then each one blocks the factor for 1 s, 2 s, 4 s … (at most
--   autoaudit.mfa_max_delay_seconds, 900); per account, autoaudit.mfa_account_ceiling (20)
--   failures in autoaudit.mfa_window_seconds (900), factors and recovery codes together, block
--   every second step until the window ends. A failed code is answered 422 through
--   response.status (a raise would roll the count back); a blocked attempt is a 429 with
--   Retry-After, before any code is checked.
-- * The clock: now(), or the epoch seconds of the setting autoaudit.mfa_clock (tests choose
--   the time with it; no API caller can set a setting).
-- * The audit trail records enrolment, verification, the second step, failures, recovery-code
--   use and regeneration, unenrolment and require_mfa changes (triggers, account chain; the
--   require_mfa change in the tenant's chain).
set local role auth_admin;

alter table auth.sessions
  add column aal text not null default 'aal1' check (aal in ('aal1', 'aal2')),
  add column amr jsonb not null default '[]' check (jsonb_typeof(amr) = 'array');

alter table compliance.tenants add column require_mfa boolean not null default false;

create table auth.mfa_factors (
  id                uuid primary key default gen_random_uuid(),
  user_id           uuid not null references auth.users (id) on delete cascade,
  factor_type       text not null default 'totp' check (factor_type = 'totp'),
  friendly_name     text not null check (length(friendly_name) between 1 and 100 and friendly_name = btrim(friendly_name)),
  secret_encrypted  bytea not null,
  status            text not null default 'unverified' check (status in ('unverified', 'verified')),
  -- the RFC 6238 step of the last accepted code: a code is accepted only for a later step
  last_used_step    bigint,
  last_used_at      timestamptz,
  failures          int not null default 0 check (failures >= 0),
  window_started_at timestamptz not null default now(),
  blocked_until     timestamptz,
  created_at        timestamptz not null default now(),
  verified_at       timestamptz,
  constraint mfa_factors_user_name_key unique (user_id, friendly_name)
);
create index mfa_factors_by_user on auth.mfa_factors (user_id);

create table auth.mfa_challenges (
  id          uuid primary key default gen_random_uuid(),
  factor_id   uuid not null references auth.mfa_factors (id) on delete cascade,
  user_id     uuid not null references auth.users (id) on delete cascade,
  session_id  uuid not null references auth.sessions (id) on delete cascade,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  verified_at timestamptz
);
create index mfa_challenges_by_user on auth.mfa_challenges (user_id, expires_at);

create table auth.mfa_recovery_codes (
  id         bigint generated always as identity primary key,
  user_id    uuid not null references auth.users (id) on delete cascade,
  code_hash  bytea not null unique check (octet_length(code_hash) = 32),
  created_at timestamptz not null default now(),
  used_at    timestamptz
);
create index mfa_recovery_codes_by_user on auth.mfa_recovery_codes (user_id) where used_at is null;

-- Failed second steps per account (all factors and recovery codes together).
create table auth.mfa_throttle (
  user_id           uuid primary key references auth.users (id) on delete cascade,
  failures          int not null default 0 check (failures >= 0),
  window_started_at timestamptz not null default now(),
  blocked_until     timestamptz,
  -- what the latest failure was, for the audit trail
  last_method       text check (last_method in ('totp', 'recovery_code')),
  last_factor_id    uuid,
  updated_at        timestamptz not null default now()
);

-- ── helpers (not exposed) ────────────────────────────────────────────────

-- The assurance level of the caller's access token: aal2 only when the claim says so.
create function auth.aal() returns text
language sql stable as $$
  select case when auth.claim('aal') operator(pg_catalog.=) 'aal2' then 'aal2' else 'aal1' end
$$;

create function auth.has_verified_factor(account uuid) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (select from auth.mfa_factors f where f.user_id = account and f.status = 'verified')
$$;

-- 403 naming the missing step unless the caller's token is at aal2.
create function auth.require_aal2() returns void
language plpgsql stable set search_path = '' as $$
begin
  if auth.aal() <> 'aal2' then
    raise exception using errcode = 'PT403', message = 'this action requires multi-factor authentication (aal2)',
      detail = 'your session is at aal1',
      hint = case when auth.has_verified_factor(auth.current_user_id())
                  then 'Verify a second factor first: mfa_challenge, then mfa_verify (or mfa_use_recovery_code).'
                  else 'Enrol a factor with mfa_enroll_totp and verify it with mfa_verify_enrollment first.' end;
  end if;
end
$$;

-- aal2 for callers who have a verified factor; accounts without one are not asked for it.
create function auth.require_aal2_if_enrolled() returns void
language plpgsql stable set search_path = '' as $$
begin
  if auth.aal() <> 'aal2' and auth.has_verified_factor(auth.current_user_id()) then
    perform auth.require_aal2();
  end if;
end
$$;

-- The clock of the second step, in epoch seconds (see the top of this file).
create function auth.mfa_now() returns double precision
language sql stable set search_path = '' as $$
  select coalesce(case when pg_input_is_valid(v, 'float8') then v::float8 end, extract(epoch from now())::float8)
    from (select nullif(btrim(current_setting('autoaudit.mfa_clock', true)), '') as v) s
$$;

-- aal2 reached by a second factor within autoaudit.mfa_fresh_seconds (600), from the token's amr.
create function auth.require_fresh_aal2() returns void
language plpgsql stable set search_path = '' as $$
declare
  claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  latest double precision;
  fresh int := auth.setting_int('autoaudit.mfa_fresh_seconds', 600, 1, 86400);
begin
  perform auth.require_aal2();
  select max((e ->> 'timestamp')::float8) into latest
    from jsonb_array_elements(case when jsonb_typeof(claims -> 'amr') = 'array' then claims -> 'amr' else '[]' end) e
   where jsonb_typeof(e) = 'object' and e ->> 'method' in ('totp', 'recovery_code')
     and jsonb_typeof(e -> 'timestamp') = 'number';
  if latest is null or latest < auth.mfa_now() - fresh then
    raise exception using errcode = 'PT403', message = 'this action requires a recent second-factor verification',
      detail = format('your last second-factor verification is older than %s seconds', fresh),
      hint = 'Verify a factor again: mfa_challenge, then mfa_verify.';
  end if;
end
$$;

-- 503 unless the request carries a key (the gateway's MFA_ENCRYPTION_KEY).
create function auth.mfa_require_key(mfa_key text) returns void
language plpgsql immutable set search_path = '' as $$
begin
  if mfa_key is null or length(mfa_key) < 32 then
    raise exception using errcode = 'PT503', message = 'multi-factor authentication is not configured',
      hint = 'The API sets this argument from MFA_ENCRYPTION_KEY; call the function through the API.';
  end if;
end
$$;

create function auth.mfa_encrypt(secret bytea, mfa_key text) returns bytea
language sql volatile set search_path = '' as $$
  select extensions.pgp_sym_encrypt_bytea(secret, mfa_key, 'cipher-algo=aes256')
$$;

create function auth.mfa_decrypt(encrypted bytea, mfa_key text) returns bytea
language plpgsql stable set search_path = '' as $$
begin
  return extensions.pgp_sym_decrypt_bytea(encrypted, mfa_key);
exception when others then
  -- a key other than the one the secret was encrypted with: a configuration error
  raise exception using errcode = 'PT500', message = 'the factor''s secret cannot be decrypted',
    hint = 'MFA_ENCRYPTION_KEY differs from the key the factor was enrolled with.';
end
$$;

-- RFC 4648 base32 (no padding) of a secret whose length is a multiple of 5 bytes.
create function auth.base32(data bytea) returns text
language sql immutable set search_path = '' as $$
  select string_agg(substr('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567',
                           substring(b.bits from i * 5 + 1 for 5)::bit(5)::int + 1, 1), '' order by i)
    from (select ('x' || encode(data, 'hex'))::bit varying as bits) b,
         generate_series(0, octet_length(data) * 8 / 5 - 1) i
$$;

-- Percent-encoding of everything but RFC 3986's unreserved characters (and @ in labels).
create function auth.uri_encode(value text) returns text
language sql immutable set search_path = '' as $$
  select coalesce(string_agg(case when c ~ '^[A-Za-z0-9._~@-]$' then c
                                  else upper(regexp_replace(encode(convert_to(c, 'UTF8'), 'hex'), '(..)', '%\1', 'g')) end,
                             '' order by n), '')
    from regexp_split_to_table(value, '') with ordinality as t (c, n)
$$;

-- The 6-digit code of a step (RFC 4226 dynamic truncation of HMAC-SHA1).
create function auth.totp_code(secret bytea, step bigint) returns text
language plpgsql immutable set search_path = '' as $$
declare
  h bytea := extensions.hmac(int8send(step), secret, 'sha1');
  o int := get_byte(h, 19) & 15;
begin
  return lpad((((get_byte(h, o) & 127) * 16777216 + get_byte(h, o + 1) * 65536
                + get_byte(h, o + 2) * 256 + get_byte(h, o + 3)) % 1000000)::text, 6, '0');
end
$$;

create function auth.mfa_check_code(code text) returns void
language plpgsql immutable set search_path = '' as $$
begin
  if code is null or code !~ '^[0-9]{6}$' then
    raise exception using errcode = '22023', message = 'code must be 6 digits',
      hint = 'Send the current code of your authenticator app, e.g. "123456".';
  end if;
end
$$;

-- The later step within ±1 of now whose code matches, or null (also for a used step).
create function auth.totp_match(secret bytea, code text, after_step bigint) returns bigint
language sql stable set search_path = '' as $$
  select max(s) from generate_series(floor(auth.mfa_now() / 30)::bigint - 1, floor(auth.mfa_now() / 30)::bigint + 1) s
   where auth.totp_code(secret, s) = code and (after_step is null or s > after_step)
$$;

create function auth.recovery_digest(account uuid, code text, mfa_key text) returns bytea
language sql immutable set search_path = '' as $$
  select extensions.hmac(convert_to(account::text || ':' || code, 'UTF8'), convert_to(mfa_key, 'UTF8'), 'sha256')
$$;

-- Ten new codes (xxxx-xxxx-xxxx of a 32-letter alphabet without l, o, 0, 1); the unused ones go.
create function auth.issue_recovery_codes(account uuid, mfa_key text) returns text[]
language plpgsql volatile set search_path = '' as $$
declare
  alphabet constant text := 'abcdefghijkmnpqrstuvwxyz23456789';
  codes text[] := '{}';
  random bytea;
  code text;
begin
  delete from auth.mfa_recovery_codes c where c.user_id = account and c.used_at is null;
  for n in 1..10 loop
    random := extensions.gen_random_bytes(12);
    code := (select string_agg(substr(alphabet, get_byte(random, i) % 32 + 1, 1), '' order by i) from generate_series(0, 11) i);
    codes := codes || code;
  end loop;
  insert into auth.mfa_recovery_codes (user_id, code_hash)
  select account, auth.recovery_digest(account, c, mfa_key) from unnest(codes) c;
  return array(select substr(c, 1, 4) || '-' || substr(c, 5, 4) || '-' || substr(c, 9, 4) from unnest(codes) c);
end
$$;

-- 429 with Retry-After (raised: a blocked attempt records nothing).
create function auth.mfa_refuse_throttled(wait interval) returns void
language plpgsql volatile set search_path = '' as $$
declare
  seconds int := greatest(ceil(extract(epoch from wait))::int, 1);
begin
  raise sqlstate 'PGRST' using
    message = format('{"code":"PT429","message":"too many failed verification codes","details":null,"hint":"Retry after %s seconds."}', seconds),
    detail = format('{"status":429,"headers":{"Retry-After":"%s"}}', seconds);
end
$$;

create function auth.mfa_window() returns interval
language sql stable set search_path = '' as $$
  select make_interval(secs => auth.setting_int('autoaudit.mfa_window_seconds', 900, 1, 86400))
$$;

-- Refuses (429) while the account or the factor is blocked. Locks the account's row (and the
-- caller has locked the factor's), so parallel guesses are judged one after the other.
create function auth.mfa_check_throttle(account uuid, factor auth.mfa_factors) returns void
language plpgsql volatile set search_path = '' as $$
declare
  account_row auth.mfa_throttle;
  attempt_at timestamptz := clock_timestamp();
begin
  insert into auth.mfa_throttle as t (user_id) values (account)
  on conflict (user_id) do update set updated_at = t.updated_at
  returning * into account_row;
  if account_row.blocked_until > attempt_at then
    perform auth.mfa_refuse_throttled(account_row.blocked_until - attempt_at);
  end if;
  if factor.id is not null and factor.blocked_until > attempt_at then
    perform auth.mfa_refuse_throttled(factor.blocked_until - attempt_at);
  end if;
end
$$;

-- Counts a failed code against the factor (when given) and the account, and answers 422
-- through response.status: returned, not raised, so the counts are committed.
create function auth.mfa_failed(account uuid, factor_id uuid, method text) returns json
language plpgsql volatile set search_path = '' as $$
declare
  attempt_at timestamptz := clock_timestamp();
  window_length interval := auth.mfa_window();
  free_failures int := auth.setting_int('autoaudit.mfa_free_failures', 5, 0, 1000);
  max_delay int := auth.setting_int('autoaudit.mfa_max_delay_seconds', 900, 1, 86400);
  account_ceiling int := auth.setting_int('autoaudit.mfa_account_ceiling', 20, 1, 1000000);
begin
  if factor_id is not null then
    update auth.mfa_factors f
       set failures = case when f.window_started_at <= attempt_at - window_length then 1 else f.failures + 1 end,
           window_started_at = case when f.window_started_at <= attempt_at - window_length then attempt_at else f.window_started_at end
     where f.id = factor_id;
    update auth.mfa_factors f
       set blocked_until = case when f.failures >= free_failures
                                then attempt_at + make_interval(secs => least(power(2, least(f.failures - free_failures, 30)), max_delay)) end
     where f.id = factor_id;
  end if;
  update auth.mfa_throttle t
     set failures = case when t.window_started_at <= attempt_at - window_length then 1 else t.failures + 1 end,
         window_started_at = case when t.window_started_at <= attempt_at - window_length then attempt_at else t.window_started_at end,
         last_method = method, last_factor_id = factor_id, updated_at = attempt_at
   where t.user_id = account;
  update auth.mfa_throttle t
     set blocked_until = case when t.failures >= account_ceiling then t.window_started_at + window_length end
   where t.user_id = account;
  perform set_config('response.status', '422', true);
  perform set_config('response.headers', '[{"Proxy-Status":"PostgREST; error=PT422"}]', true);
  return json_build_object('code', 'PT422', 'details', null,
    'hint', 'Use the current code of your authenticator app (each code works once) or an unused recovery code.',
    'message', 'invalid verification code');
end
$$;

-- The caller's session (sid claim), active; 401 otherwise.
create function auth.mfa_caller_session() returns uuid
language plpgsql stable set search_path = '' as $$
declare
  sid uuid := auth.claim_uuid('sid');
begin
  if not exists (select from auth.sessions s where s.id = sid and s.user_id = auth.current_user_id() and s.revoked_at is null) then
    raise exception using errcode = 'PT401', message = 'an active session is required',
      hint = 'Sign in again.';
  end if;
  return sid;
end
$$;

-- Raises the session to aal2 with `method`, rotates its refresh tokens (a token issued at
-- aal1 must not refresh into aal2) and returns the session as sign_in does.
create function auth.mfa_elevate(session uuid, method text) returns json
language plpgsql volatile set search_path = '' as $$
declare
  owner auth.users;
  issued record;
  fresh bigint;
begin
  update auth.sessions s
     set aal = 'aal2', amr = s.amr || jsonb_build_array(jsonb_build_object('method', method, 'timestamp', floor(auth.mfa_now())::bigint))
   where s.id = session;
  issued := auth.new_refresh_token(session);
  select t.id into fresh from auth.refresh_tokens t where t.token_hash = auth.token_digest(issued.token);
  update auth.refresh_tokens t set retired_at = now(), replaced_by = fresh
   where t.session_id = session and t.retired_at is null and t.id <> fresh;
  select u.* into owner from auth.users u join auth.sessions s on s.user_id = u.id where s.id = session;
  return auth.session_json(owner, session, issued.token, issued.expires_at);
end
$$;

create function auth.factor_json(f auth.mfa_factors) returns json
language sql immutable set search_path = '' as $$
  select json_build_object('id', f.id, 'factor_type', f.factor_type, 'friendly_name', f.friendly_name,
    'status', f.status, 'created_at', f.created_at, 'verified_at', f.verified_at, 'last_used_at', f.last_used_at)
$$;

-- The caller's factor (locked), or 404 whether it does not exist or is someone else's.
create function auth.mfa_own_factor(factor_id uuid) returns auth.mfa_factors
language plpgsql volatile set search_path = '' as $$
declare
  found_factor auth.mfa_factors;
begin
  select * into found_factor from auth.mfa_factors f
   where f.id = factor_id and f.user_id = auth.current_user_id() for update;
  if found_factor.id is null then
    raise exception using errcode = 'PT404', message = 'no factor of yours has this id',
      hint = 'List them with mfa_factors.';
  end if;
  return found_factor;
end
$$;

-- Sessions open at aal1 with the method that opened them (see the top of this file).
create function auth.session_initial_amr() returns trigger
language plpgsql set search_path = '' as $$
declare
  provider text;
begin
  if new.amr = '[]'::jsonb then
    select i.provider into provider
      from auth.identity_auth_codes c join auth.identities i on i.id = c.identity_id
     where i.user_id = new.user_id and c.used_at = now() limit 1;
    new.amr := jsonb_build_array(case when provider is null
      then jsonb_build_object('method', 'password', 'timestamp', floor(extract(epoch from now()))::bigint)
      else jsonb_build_object('method', 'oidc', 'provider', provider, 'timestamp', floor(extract(epoch from now()))::bigint) end);
  end if;
  new.aal := 'aal1';
  return new;
end
$$;
create trigger sessions_initial_amr before insert on auth.sessions
  for each row execute function auth.session_initial_amr();

-- Was: the user, session and refresh token. Now also the session's aal and amr, and whether a
-- second step is needed (with the factors that can take it).
create or replace function auth.session_json(u auth.users, session uuid, token text, expires_at timestamptz) returns json
language plpgsql stable set search_path = '' as $$
declare
  s auth.sessions;
  factors json;
begin
  select * into s from auth.sessions x where x.id = session;
  select coalesce(json_agg(json_build_object('id', f.id, 'factor_type', f.factor_type, 'friendly_name', f.friendly_name)
                           order by f.created_at, f.id), '[]')
    into factors from auth.mfa_factors f where f.user_id = u.id and f.status = 'verified';
  return json_build_object(
    'user', auth.user_json(u), 'session_id', session,
    'refresh_token', token, 'refresh_expires_at', expires_at,
    'aal', coalesce(s.aal, 'aal1'), 'amr', coalesce(s.amr, '[]'),
    'mfa_required', coalesce(s.aal, 'aal1') = 'aal1' and json_array_length(factors) > 0,
    'factors', factors);
end
$$;

-- Self-service changes of the password or the address need aal2 once a factor is verified.
-- (A reset by mailed token runs without the account's token, and the second factor still
-- guards the next sign-in.)
create function auth.users_require_aal2() returns trigger
language plpgsql set search_path = '' as $$
begin
  if auth.claim_uuid('sub') = old.id
     and (new.password_hash is distinct from old.password_hash or new.email is distinct from old.email) then
    perform auth.require_aal2_if_enrolled();
  end if;
  return new;
end
$$;
create trigger users_require_aal2 before update of password_hash, email on auth.users
  for each row execute function auth.users_require_aal2();

-- ── tenants: administration at aal2, require_mfa ──────────────────────────

-- Was: the tenants of the signed-in user. Now without the tenants that require MFA while the
-- caller's token is at aal1: RLS hides their rows.
create or replace function compliance.my_tenant_ids() returns setof uuid
language sql stable security definer set search_path = '' as $$
  select m.tenant_id from compliance.tenant_members m join compliance.tenants t on t.id = m.tenant_id
   where m.user_id = auth.current_user_id() and (not t.require_mfa or auth.aal() = 'aal2')
$$;

-- Was: 404 for non-members, 403 below `needed`. Now also 403 at aal1 in a tenant that requires
-- MFA, and aal2 for the admin role's actions when the caller has a verified factor.
create or replace function compliance.require_role(tenant uuid, needed text) returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  role text;
begin
  if tenant is null then
    raise exception using errcode = '22023', message = 'tenant_id is required';
  end if;
  role := compliance.caller_role(tenant);
  if role is null then
    raise exception using errcode = 'PT404', message = 'tenant not found',
      hint = 'Check the tenant id; you only see tenants you are a member of.';
  end if;
  if auth.aal() <> 'aal2' and exists (select from compliance.tenants t where t.id = tenant and t.require_mfa) then
    raise exception using errcode = 'PT403', message = 'this tenant requires multi-factor authentication (aal2)',
      detail = 'your session is at aal1',
      hint = case when auth.has_verified_factor(auth.current_user_id())
                  then 'Verify a second factor first: mfa_challenge, then mfa_verify (or mfa_use_recovery_code).'
                  else 'Enrol a factor with mfa_enroll_totp and verify it with mfa_verify_enrollment first.' end;
  end if;
  if compliance.role_rank(role) < compliance.role_rank(needed) then
    raise exception using errcode = 'PT403', message = format('this requires the %s role in the tenant', needed),
      detail = format('your role is %s', role);
  end if;
  if needed = 'admin' then
    perform auth.require_aal2_if_enrolled();
  end if;
  return role;
end
$$;

-- Another member's membership or role, and rules, change only at aal2 for callers with a
-- factor, whichever function does it (remove_member checks only the viewer role itself).
create function compliance.require_admin_aal2() returns trigger
language plpgsql set search_path = '' as $$
begin
  if auth.claim_uuid('sub') is not null then
    if tg_table_name <> 'tenant_members' then
      perform auth.require_aal2_if_enrolled();
    elsif (case when tg_op = 'DELETE' then old.user_id else new.user_id end) is distinct from auth.claim_uuid('sub') then
      perform auth.require_aal2_if_enrolled();
    end if;
  end if;
  return coalesce(new, old);
end
$$;
create trigger tenant_members_require_aal2 before insert or update or delete on compliance.tenant_members
  for each row execute function compliance.require_admin_aal2();
create trigger rules_require_aal2 before insert or update or delete on compliance.rules
  for each row execute function compliance.require_admin_aal2();

-- ── audit trail ──────────────────────────────────────────────────────────

-- The actions of this migration join whatever the constraint lists (20261202000600 adds
-- 'trail_pruned'; it is added here too when missing, so either order of merging keeps it).
do $$
declare
  def text;
  added text := '';
  action text;
begin
  select pg_get_constraintdef(c.oid) into def from pg_constraint c
   where c.conrelid = 'audit.events'::regclass and c.conname = 'events_action_check';
  foreach action in array array['trail_pruned', 'mfa_factor_enrolled', 'mfa_factor_verified', 'mfa_factor_unenrolled',
                                'mfa_verified', 'mfa_failed', 'mfa_recovery_code_used', 'mfa_recovery_codes_issued',
                                'tenant_require_mfa_changed'] loop
    if position(format('%L::text', action) in def) = 0 then
      added := added || format(', %L::text', action);
    end if;
  end loop;
  execute format('alter table audit.events drop constraint events_action_check, add constraint events_action_check %s',
                 regexp_replace(def, '\]\)\)\)$', added || '])))'));
end
$$;

create function audit.on_mfa_factor() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform audit.append('mfa_factor_enrolled', coalesce(auth.claim_uuid('sub'), new.user_id), null, new.user_id, new.id::text,
                         jsonb_build_object('factor_type', new.factor_type, 'friendly_name', new.friendly_name));
  elsif tg_op = 'DELETE' then
    perform audit.append('mfa_factor_unenrolled', coalesce(auth.claim_uuid('sub'), old.user_id), null, old.user_id, old.id::text,
                         jsonb_build_object('factor_type', old.factor_type, 'friendly_name', old.friendly_name, 'status', old.status));
  elsif old.status = 'unverified' and new.status = 'verified' then
    perform audit.append('mfa_factor_verified', coalesce(auth.claim_uuid('sub'), new.user_id), null, new.user_id, new.id::text,
                         jsonb_build_object('factor_type', new.factor_type, 'friendly_name', new.friendly_name));
  end if;
  return null;
end
$$;
create trigger audit_mfa_factors after insert or update or delete on auth.mfa_factors
  for each row execute function audit.on_mfa_factor();

create function audit.on_mfa_session() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.amr is distinct from old.amr then
    perform audit.append('mfa_verified', new.user_id, null, new.user_id, new.id::text,
                         jsonb_build_object('method', new.amr -> -1 ->> 'method', 'aal', new.aal), new.id);
  end if;
  return null;
end
$$;
create trigger audit_mfa_sessions after update of amr on auth.sessions
  for each row execute function audit.on_mfa_session();

create function audit.on_mfa_failure() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.updated_at is distinct from old.updated_at and new.failures > 0
     and (new.failures, new.window_started_at) is distinct from (old.failures, old.window_started_at) then
    perform audit.append('mfa_failed', new.user_id, null, new.user_id, coalesce(new.last_factor_id::text, new.user_id::text),
                         jsonb_build_object('method', new.last_method, 'factor_id', new.last_factor_id,
                                            'failures', new.failures, 'blocked_until', new.blocked_until));
  end if;
  return null;
end
$$;
create trigger audit_mfa_failures after update on auth.mfa_throttle
  for each row execute function audit.on_mfa_failure();

create function audit.on_recovery_code() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if old.used_at is null and new.used_at is not null then
    perform audit.append('mfa_recovery_code_used', new.user_id, null, new.user_id, new.user_id::text,
                         jsonb_build_object('remaining', (select count(*) from auth.mfa_recovery_codes c
                                                           where c.user_id = new.user_id and c.used_at is null)));
  end if;
  return null;
end
$$;
create trigger audit_recovery_codes_used after update of used_at on auth.mfa_recovery_codes
  for each row execute function audit.on_recovery_code();

create function audit.on_recovery_codes_issued() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  t record;
begin
  for t in select c.user_id, count(*) as n from issued c group by c.user_id loop
    perform audit.append('mfa_recovery_codes_issued', coalesce(auth.claim_uuid('sub'), t.user_id), null, t.user_id,
                         t.user_id::text, jsonb_build_object('count', t.n));
  end loop;
  return null;
end
$$;
create trigger audit_recovery_codes_issued after insert on auth.mfa_recovery_codes referencing new table as issued
  for each statement execute function audit.on_recovery_codes_issued();

create function audit.on_tenant_require_mfa() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.require_mfa is distinct from old.require_mfa then
    perform audit.append('tenant_require_mfa_changed', auth.claim_uuid('sub'), new.id, null, new.id::text,
                         jsonb_build_object('require_mfa', new.require_mfa));
  end if;
  return null;
end
$$;
create trigger audit_tenant_require_mfa after update of require_mfa on compliance.tenants
  for each row execute function audit.on_tenant_require_mfa();

-- ── the API ──────────────────────────────────────────────────────────────

create function api.mfa_enroll_totp(friendly_name text, mfa_key text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  account auth.users;
  clean_name text := btrim(friendly_name);
  secret bytea := extensions.gen_random_bytes(20);
  created auth.mfa_factors;
  encoded text;
begin
  perform auth.mfa_require_key(mfa_key);
  select * into account from auth.users u where u.id = uid for update;
  perform auth.require_aal2_if_enrolled();
  if clean_name is null or length(clean_name) not between 1 and 100 or clean_name ~ '[[:cntrl:]]' then
    raise exception using errcode = '22023', message = 'friendly_name must be 1 to 100 characters',
      hint = 'Name the device, e.g. "Work phone".';
  end if;
  if (select count(*) from auth.mfa_factors f where f.user_id = uid) >= 10 then
    raise exception using errcode = 'PT422', message = 'too many factors',
      hint = 'Unenrol a factor you no longer use (unverified ones too) first.';
  end if;
  insert into auth.mfa_factors (user_id, friendly_name, secret_encrypted)
  values (uid, clean_name, auth.mfa_encrypt(secret, mfa_key))
  on conflict on constraint mfa_factors_user_name_key do nothing
  returning * into created;
  if created.id is null then
    raise exception using errcode = 'PT409', message = 'a factor with this friendly_name exists',
      hint = 'Choose another name, or unenrol that factor first.';
  end if;
  encoded := auth.base32(secret);
  return (auth.factor_json(created)::jsonb || jsonb_build_object('totp', jsonb_build_object(
    'secret', encoded,
    'uri', format('otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=6&period=30',
                  'AutoAudit', auth.uri_encode(account.email), encoded, 'AutoAudit'))))::json;
end
$$;

create function api.mfa_verify_enrollment(factor_id uuid, code text, mfa_key text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  session uuid;
  factor auth.mfa_factors;
  step bigint;
  first_factor boolean;
  codes text[];
  answer jsonb;
begin
  perform auth.mfa_require_key(mfa_key);
  perform auth.mfa_check_code(code);
  session := auth.mfa_caller_session();
  factor := auth.mfa_own_factor(factor_id);
  if factor.status = 'verified' then
    raise exception using errcode = 'PT409', message = 'this factor is already verified';
  end if;
  perform auth.require_aal2_if_enrolled();
  perform auth.mfa_check_throttle(uid, factor);
  step := auth.totp_match(auth.mfa_decrypt(factor.secret_encrypted, mfa_key), code, factor.last_used_step);
  if step is null then
    return auth.mfa_failed(uid, factor.id, 'totp');
  end if;
  first_factor := not auth.has_verified_factor(uid);
  update auth.mfa_factors f
     set status = 'verified', verified_at = now(), last_used_step = step, last_used_at = now(),
         failures = 0, blocked_until = null
   where f.id = factor.id returning * into factor;
  if first_factor or not exists (select from auth.mfa_recovery_codes c where c.user_id = uid and c.used_at is null) then
    codes := auth.issue_recovery_codes(uid, mfa_key);
  end if;
  answer := auth.mfa_elevate(session, 'totp')::jsonb;
  return (answer || jsonb_build_object('factor', auth.factor_json(factor), 'recovery_codes', to_jsonb(codes)))::json;
end
$$;

create function api.mfa_factors() returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
begin
  return json_build_object(
    'factors', coalesce((select json_agg(auth.factor_json(f) order by f.created_at, f.id)
                           from auth.mfa_factors f where f.user_id = uid), '[]'),
    'recovery_codes_remaining', (select count(*) from auth.mfa_recovery_codes c where c.user_id = uid and c.used_at is null),
    'aal', auth.aal());
end
$$;

create function api.mfa_challenge(factor_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  session uuid := auth.mfa_caller_session();
  factor auth.mfa_factors := auth.mfa_own_factor(factor_id);
  created auth.mfa_challenges;
begin
  if factor.status <> 'verified' then
    raise exception using errcode = '22023', message = 'this factor is not verified yet',
      hint = 'Verify it with mfa_verify_enrollment.';
  end if;
  delete from auth.mfa_challenges c where c.user_id = uid and c.expires_at < to_timestamp(auth.mfa_now()) - interval '1 hour';
  insert into auth.mfa_challenges (factor_id, user_id, session_id, expires_at)
  values (factor.id, uid, session, to_timestamp(auth.mfa_now()) + make_interval(secs => auth.setting_int('autoaudit.mfa_challenge_seconds', 300, 10, 3600)))
  returning * into created;
  return json_build_object('id', created.id, 'factor_id', created.factor_id, 'expires_at', created.expires_at);
end
$$;

create function api.mfa_verify(challenge_id uuid, code text, mfa_key text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  session uuid;
  challenge auth.mfa_challenges;
  factor auth.mfa_factors;
  step bigint;
begin
  perform auth.mfa_require_key(mfa_key);
  perform auth.mfa_check_code(code);
  session := auth.mfa_caller_session();
  -- another user's or another session's challenge is one that does not exist
  select * into challenge from auth.mfa_challenges c
   where c.id = challenge_id and c.user_id = uid and c.session_id = session for update;
  if challenge.id is null then
    raise exception using errcode = 'PT404', message = 'no challenge of this session has this id',
      hint = 'Ask for one with mfa_challenge.';
  end if;
  if challenge.verified_at is not null or challenge.expires_at <= to_timestamp(auth.mfa_now()) then
    raise exception using errcode = '22023', message = 'the challenge has expired or was already used',
      hint = 'Ask for a new one with mfa_challenge.';
  end if;
  select * into factor from auth.mfa_factors f where f.id = challenge.factor_id for update;
  perform auth.mfa_check_throttle(uid, factor);
  step := auth.totp_match(auth.mfa_decrypt(factor.secret_encrypted, mfa_key), code, factor.last_used_step);
  if step is null then
    return auth.mfa_failed(uid, factor.id, 'totp');
  end if;
  update auth.mfa_factors f set last_used_step = step, last_used_at = now(), failures = 0, blocked_until = null
   where f.id = factor.id;
  update auth.mfa_challenges c set verified_at = now() where c.id = challenge.id;
  return auth.mfa_elevate(session, 'totp');
end
$$;

create function api.mfa_use_recovery_code(code text, mfa_key text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  session uuid;
  normalized text := lower(regexp_replace(coalesce(code, ''), '[[:space:]-]', '', 'g'));
  used bigint;
  answer jsonb;
  no_factor auth.mfa_factors;
begin
  perform auth.mfa_require_key(mfa_key);
  if code is null or length(code) > 40 or normalized !~ '^[a-km-np-z2-9]{12}$' then
    raise exception using errcode = '22023', message = 'code is not a recovery code',
      hint = 'Recovery codes look like abcd-efgh-jkmn.';
  end if;
  session := auth.mfa_caller_session();
  if not auth.has_verified_factor(uid) then
    raise exception using errcode = '22023', message = 'this account has no multi-factor authentication';
  end if;
  perform auth.mfa_check_throttle(uid, no_factor);
  -- the conditions in the update itself: a parallel use of the same code finds it used
  update auth.mfa_recovery_codes c set used_at = now()
   where c.code_hash = auth.recovery_digest(uid, normalized, mfa_key) and c.user_id = uid and c.used_at is null
  returning c.id into used;
  if used is null then
    return auth.mfa_failed(uid, null, 'recovery_code');
  end if;
  answer := auth.mfa_elevate(session, 'recovery_code')::jsonb;
  return (answer || jsonb_build_object('recovery_codes_remaining',
    (select count(*) from auth.mfa_recovery_codes c where c.user_id = uid and c.used_at is null)))::json;
end
$$;

create function api.mfa_regenerate_recovery_codes(mfa_key text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
begin
  perform auth.mfa_require_key(mfa_key);
  perform auth.require_aal2();
  if not auth.has_verified_factor(uid) then
    raise exception using errcode = '22023', message = 'this account has no multi-factor authentication';
  end if;
  return json_build_object('recovery_codes', to_json(auth.issue_recovery_codes(uid, mfa_key)));
end
$$;

create function api.mfa_unenroll(factor_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  factor auth.mfa_factors := auth.mfa_own_factor(factor_id);
begin
  if factor.status = 'verified' then
    perform auth.require_fresh_aal2();
  else
    perform auth.require_aal2_if_enrolled();
  end if;
  delete from auth.mfa_factors f where f.id = factor.id;
  if not auth.has_verified_factor(uid) then
    delete from auth.mfa_recovery_codes c where c.user_id = uid;
  end if;
  return json_build_object('id', factor.id, 'friendly_name', factor.friendly_name);
end
$$;

create function api.set_tenant_require_mfa(tenant_id uuid, require_mfa boolean) returns json
language plpgsql volatile security definer set search_path = '' as $$
begin
  perform compliance.require_role(set_tenant_require_mfa.tenant_id, 'admin');
  perform auth.require_aal2();
  if require_mfa is null then
    raise exception using errcode = '22023', message = 'require_mfa must be true or false';
  end if;
  update compliance.tenants t set require_mfa = set_tenant_require_mfa.require_mfa where t.id = set_tenant_require_mfa.tenant_id;
  return json_build_object('tenant_id', set_tenant_require_mfa.tenant_id, 'require_mfa', set_tenant_require_mfa.require_mfa);
end
$$;

comment on function api.mfa_enroll_totp(text, text) is
  'Enrol a TOTP factor: its secret, otpauth:// URI and QR code (SVG), shown this once. Unverified until mfa_verify_enrollment. aal2 when a factor is verified already.';
comment on function api.mfa_verify_enrollment(uuid, text, text) is
  'Verify a new factor with its current code: the session reaches aal2 (new tokens); the first verified factor also returns ten recovery codes, shown this once.';
comment on function api.mfa_factors() is 'The signed-in user''s factors, the unused recovery codes left, and the token''s aal.';
comment on function api.mfa_challenge(uuid) is 'Start the second step with a verified factor: a challenge for mfa_verify (valid 5 minutes).';
comment on function api.mfa_verify(uuid, text, text) is 'Answer a challenge with the factor''s current code: the session reaches aal2 (new tokens). 422 for a wrong or used code; throttled.';
comment on function api.mfa_use_recovery_code(text, text) is 'Use a recovery code as the second step (once): the session reaches aal2 (new tokens).';
comment on function api.mfa_regenerate_recovery_codes(text) is 'aal2: ten new recovery codes, shown this once; the unused old ones stop working.';
comment on function api.mfa_unenroll(uuid) is 'Remove a factor (a verified one needs an aal2 verification of the last 10 minutes).';
comment on function api.set_tenant_require_mfa(uuid, boolean) is 'Admin, at aal2: whether every member needs aal2 for the tenant''s data.';
comment on table auth.mfa_factors is 'TOTP factors; secrets encrypted with MFA_ENCRYPTION_KEY (see migration 20261202000700_mfa).';

revoke all on table auth.mfa_factors, auth.mfa_challenges, auth.mfa_recovery_codes, auth.mfa_throttle from public;
revoke all on all functions in schema auth from public;
revoke all on function audit.on_mfa_factor(), audit.on_mfa_session(), audit.on_mfa_failure(), audit.on_recovery_code(),
  audit.on_recovery_codes_issued(), audit.on_tenant_require_mfa(), compliance.require_admin_aal2() from public;
revoke all on function api.mfa_enroll_totp(text, text), api.mfa_verify_enrollment(uuid, text, text), api.mfa_factors(),
  api.mfa_challenge(uuid), api.mfa_verify(uuid, text, text), api.mfa_use_recovery_code(text, text),
  api.mfa_regenerate_recovery_codes(text), api.mfa_unenroll(uuid), api.set_tenant_require_mfa(uuid, boolean) from public;
grant execute on function api.mfa_enroll_totp(text, text), api.mfa_verify_enrollment(uuid, text, text), api.mfa_factors(),
  api.mfa_challenge(uuid), api.mfa_verify(uuid, text, text), api.mfa_use_recovery_code(text, text),
  api.mfa_regenerate_recovery_codes(text), api.mfa_unenroll(uuid), api.set_tenant_require_mfa(uuid, boolean) to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;

drop function api.set_tenant_require_mfa(uuid, boolean);
drop function api.mfa_unenroll(uuid);
drop function api.mfa_regenerate_recovery_codes(text);
drop function api.mfa_use_recovery_code(text, text);
drop function api.mfa_verify(uuid, text, text);
drop function api.mfa_challenge(uuid);
drop function api.mfa_factors();
drop function api.mfa_verify_enrollment(uuid, text, text);
drop function api.mfa_enroll_totp(text, text);

drop trigger audit_tenant_require_mfa on compliance.tenants;
drop trigger audit_recovery_codes_issued on auth.mfa_recovery_codes;
drop trigger audit_recovery_codes_used on auth.mfa_recovery_codes;
drop trigger audit_mfa_failures on auth.mfa_throttle;
drop trigger audit_mfa_sessions on auth.sessions;
drop trigger audit_mfa_factors on auth.mfa_factors;
drop function audit.on_tenant_require_mfa();
drop function audit.on_recovery_codes_issued();
drop function audit.on_recovery_code();
drop function audit.on_mfa_failure();
drop function audit.on_mfa_session();
drop function audit.on_mfa_factor();

drop trigger rules_require_aal2 on compliance.rules;
drop trigger tenant_members_require_aal2 on compliance.tenant_members;
drop function compliance.require_admin_aal2();

-- As in 20261125000300_compliance.sql.
create or replace function compliance.require_role(tenant uuid, needed text) returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  role text;
begin
  if tenant is null then
    raise exception using errcode = '22023', message = 'tenant_id is required';
  end if;
  role := compliance.caller_role(tenant);
  if role is null then
    raise exception using errcode = 'PT404', message = 'tenant not found',
      hint = 'Check the tenant id; you only see tenants you are a member of.';
  end if;
  if compliance.role_rank(role) < compliance.role_rank(needed) then
    raise exception using errcode = 'PT403', message = format('this requires the %s role in the tenant', needed),
      detail = format('your role is %s', role);
  end if;
  return role;
end
$$;

-- As in 20261125000300_compliance.sql.
create or replace function compliance.my_tenant_ids() returns setof uuid
language sql stable security definer set search_path = '' as $$
  select m.tenant_id from compliance.tenant_members m where m.user_id = auth.current_user_id()
$$;

drop trigger users_require_aal2 on auth.users;
drop function auth.users_require_aal2();

-- As in 20261125000200_auth.sql.
create or replace function auth.session_json(u auth.users, session uuid, token text, expires_at timestamptz) returns json
language sql immutable set search_path = '' as $$
  select json_build_object(
    'user', auth.user_json(u), 'session_id', session,
    'refresh_token', token, 'refresh_expires_at', expires_at)
$$;

drop trigger sessions_initial_amr on auth.sessions;
drop function auth.session_initial_amr();
drop function auth.mfa_own_factor(uuid);
drop function auth.factor_json(auth.mfa_factors);
drop function auth.mfa_elevate(uuid, text);
drop function auth.mfa_caller_session();
drop function auth.mfa_failed(uuid, uuid, text);
drop function auth.mfa_check_throttle(uuid, auth.mfa_factors);
drop function auth.mfa_window();
drop function auth.mfa_refuse_throttled(interval);
drop function auth.issue_recovery_codes(uuid, text);
drop function auth.recovery_digest(uuid, text, text);
drop function auth.totp_match(bytea, text, bigint);
drop function auth.mfa_check_code(text);
drop function auth.totp_code(bytea, bigint);
drop function auth.uri_encode(text);
drop function auth.base32(bytea);
drop function auth.mfa_decrypt(bytea, text);
drop function auth.mfa_encrypt(bytea, text);
drop function auth.mfa_require_key(text);
drop function auth.require_fresh_aal2();
drop function auth.mfa_now();
drop function auth.require_aal2_if_enrolled();
drop function auth.require_aal2();
drop function auth.has_verified_factor(uuid);
drop function auth.aal();

drop table auth.mfa_throttle;
drop table auth.mfa_recovery_codes;
drop table auth.mfa_challenges;
drop table auth.mfa_factors;
alter table compliance.tenants drop column require_mfa;
alter table auth.sessions drop column amr, drop column aal;

reset role;
-- The constraint as it was: without this migration's actions, and without 'trail_pruned' unless
-- 20261202000600 (which brings it) is applied. Fails while the trail holds MFA events (append-only).
do $$
declare
  def text;
  removed text[] := array['mfa_factor_enrolled', 'mfa_factor_verified', 'mfa_factor_unenrolled', 'mfa_verified', 'mfa_failed',
                          'mfa_recovery_code_used', 'mfa_recovery_codes_issued', 'tenant_require_mfa_changed'];
  action text;
begin
  if not exists (select from public.schema_migrations m where m.version = '20261202000600') then
    removed := removed || 'trail_pruned'::text;
  end if;
  select pg_get_constraintdef(c.oid) into def from pg_constraint c
   where c.conrelid = 'audit.events'::regclass and c.conname = 'events_action_check';
  foreach action in array removed loop
    def := replace(def, format(', %L::text', action), '');
  end loop;
  execute format('alter table audit.events drop constraint events_action_check, add constraint events_action_check %s', def);
end
$$;
notify pgrst, 'reload schema';
