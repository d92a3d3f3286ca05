-- migrate:up
-- Accounts people can live with: email verification, password reset and change, a mail outbox,
-- the user's sessions, session lifetimes and a refresh retry grace. Everything in SQL, like
-- the rest of the auth; the design in one place:
--
-- * One-time tokens (auth.one_time_tokens): 256 random bits, returned once (in the mail the
--   outbox holds until it is sent; for a mail asked for by address, issued when the mailer
--   claims it, so the request does the same work whether the address has an account), stored as their sha256 digest, expiring (verification
--   24 h, reset 30 min), single-use (used_at). A new token of a purpose replaces the unused
--   ones of that purpose. Malformed, unknown, expired, used and foreign tokens all get the
--   same 400 and write nothing.
-- * Mail (auth.mail_outbox): a row written in the transaction of the event that needs it
--   (sign-up, reset request, password changed). The mailer (bun run worker, api/src/mail) calls mail.claim,
--   which takes rows with FOR UPDATE SKIP LOCKED under a lease, sends, and marks each row sent
--   once. params hold the one-time token until the row is sent and are cleared then.
-- * Settings (auth.settings): rows that `bun run dev` / `bun run migrate` write from the
--   environment (api/src/stack/account-settings.ts); a missing row is the default. Read on
--   every call, so a change applies at once without reconnecting.
--     session_inactivity_days (14), session_max_days (60), refresh_reuse_grace_seconds (10),
--     require_verified_email (false), reset_per_address_max (5), reset_per_client_max (30),
--     reset_window_seconds (3600); the same per-address/per-client limits serve resend_verification.
-- * Lifetimes: a session ends when it was not refreshed for session_inactivity_days, and at
--   created_at + session_max_days whatever the rotation (rotation does not slide it).
-- * Refresh retry grace: a successor refresh token is derived from its parent,
--   HMAC-SHA256(parent, auth.refresh_key), so presenting a just-rotated token again within the
--   grace returns the same successor without any token stored in plain text. After the grace,
--   reuse revokes the family as before.
do $$
begin
  if not exists (select from pg_roles where rolname = 'mailer') then
    create role mailer nologin;
  end if;
end
$$;

set local role auth_admin;

create table auth.settings (
  name  text primary key check (name in ('session_inactivity_days', 'session_max_days', 'refresh_reuse_grace_seconds',
                                         'require_verified_email', 'reset_per_address_max', 'reset_per_client_max',
                                         'reset_window_seconds')),
  value text not null check (length(value) <= 100)
);

-- The key successor refresh tokens are derived with; readable by auth_admin only.
create table auth.refresh_key (
  singleton boolean primary key default true check (singleton),
  key bytea not null check (octet_length(key) = 32)
);
insert into auth.refresh_key (key) values (extensions.gen_random_bytes(32));

alter table auth.users add column email_verified_at timestamptz;

alter table auth.sessions
  add column last_refreshed_at timestamptz not null default now(),
  add column client text not null default '' check (length(client) <= 64),
  add column user_agent text not null default '' check (length(user_agent) <= 512),
  drop constraint sessions_revoked_reason_check,
  add constraint sessions_revoked_reason_check check (revoked_reason in
    ('logout', 'logout_all', 'reuse_detected', 'revoked', 'revoked_others', 'password_reset', 'password_change'));

create table auth.one_time_tokens (
  id         bigint generated always as identity primary key,
  user_id    uuid not null references auth.users (id) on delete cascade,
  purpose    text not null check (purpose in ('verify_email', 'reset_password')),
  token_hash bytea not null unique check (octet_length(token_hash) = 32),
  -- the address the token was mailed to: verifying proves this address, not a later one
  email      text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at    timestamptz
);
create index one_time_tokens_unused on auth.one_time_tokens (user_id, purpose) where used_at is null;

create table auth.account_events (
  id         bigint generated always as identity primary key,
  user_id    uuid not null references auth.users (id) on delete cascade,
  kind       text not null check (kind in ('email_verified', 'password_reset', 'password_changed')),
  at         timestamptz not null default now(),
  client     text not null default '',
  user_agent text not null default '',
  details    jsonb not null default '{}'
);
create index account_events_by_user on auth.account_events (user_id, at);

-- Requests per (kind, key) in a fixed window: reset and verification mails per address and per client.
create table auth.request_throttle (
  kind              text not null,
  key               text not null check (length(key) <= 254),
  window_started_at timestamptz not null default now(),
  count             int not null default 0,
  primary key (kind, key)
);

create table auth.mail_outbox (
  id              bigint generated always as identity primary key,
  -- the Message-ID's local part: a resend after a crash carries the same Message-ID
  message_id      text not null unique default encode(extensions.gen_random_bytes(16), 'hex'),
  recipient       text not null check (length(recipient) <= 254),
  template        text not null check (template in ('verify_email', 'reset_password', 'password_changed')),
  -- the template's values (the one-time token among them) until the mail is sent, then '{}'
  params          jsonb not null default '{}',
  created_at      timestamptz not null default now(),
  status          text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed')),
  attempts        int not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_until     timestamptz,
  sent_at         timestamptz,
  last_error      text
);
create index mail_outbox_pending on auth.mail_outbox (next_attempt_at) where status = 'pending';
create index mail_outbox_leased on auth.mail_outbox (lease_until) where status = 'sending';

-- ── helpers (not exposed) ────────────────────────────────────────────────

create function auth.account_setting_int(setting text, fallback int, low int, high int) returns int
language sql stable set search_path = '' as $$
  select least(greatest(coalesce(
    (select case when pg_input_is_valid(s.value, 'int4') then s.value::int end from auth.settings s where s.name = setting),
    fallback), low), high)
$$;

create function auth.account_setting_bool(setting text, fallback boolean) returns boolean
language sql stable set search_path = '' as $$
  select coalesce((select case when pg_input_is_valid(s.value, 'bool') then s.value::boolean end
                     from auth.settings s where s.name = setting), fallback)
$$;

create function auth.session_inactivity() returns interval
language sql stable set search_path = '' as $$
  select make_interval(days => auth.account_setting_int('session_inactivity_days', 14, 1, 3650))
$$;

create function auth.session_max() returns interval
language sql stable set search_path = '' as $$
  select make_interval(days => auth.account_setting_int('session_max_days', 60, 1, 3650))
$$;

-- Whether a session is within both lifetimes.
create function auth.session_alive(s auth.sessions) returns boolean
language plpgsql stable set search_path = '' as $$
begin
  return s.revoked_at is null
     and s.created_at + auth.session_max() > now()
     and s.last_refreshed_at + auth.session_inactivity() > now();
end
$$;

-- When a refresh token issued now for a session expires: the earlier of the two lifetimes.
create function auth.refresh_expiry(session uuid) returns timestamptz
language sql stable set search_path = '' as $$
  select least(now() + auth.session_inactivity(), s.created_at + auth.session_max())
    from auth.sessions s where s.id = session
$$;

-- The user agent the caller sent (request.headers, forwarded by the gateway), '' without one.
create function auth.request_user_agent() returns text
language sql stable set search_path = '' as $$
  select coalesce(left(h.headers ->> 'user-agent', 512), '')
    from (select case when pg_input_is_valid(raw, 'json') and json_typeof(raw::json) = 'object' then raw::json end as headers
            from (select nullif(current_setting('request.headers', true), '') as raw) r) h
$$;

create function auth.random_token() returns text
language sql volatile set search_path = '' as $$
  select rtrim(translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/', '-_'), '=')
$$;

-- The successor of a refresh token: HMAC-SHA256 under auth.refresh_key, 256 bits.
create function auth.successor_token(parent text) returns text
language sql stable set search_path = '' as $$
  select rtrim(translate(encode(extensions.hmac(convert_to(parent, 'UTF8'), k.key, 'sha256'), 'base64'), E'+/\n', '-_'), '=')
    from auth.refresh_key k
$$;

-- Was: now() + 60 days. Now the earlier of the inactivity and absolute lifetimes.
create or replace function auth.new_refresh_token(session uuid, out token text, out expires_at timestamptz)
language plpgsql volatile set search_path = '' as $$
begin
  token := auth.random_token();
  expires_at := auth.refresh_expiry(session);
  insert into auth.refresh_tokens (session_id, token_hash, expires_at)
  values (session, auth.token_digest(token), expires_at);
end
$$;

create or replace function auth.user_json(u auth.users) returns json
language plpgsql immutable set search_path = '' as $$
begin
  return json_build_object(
    'id', u.id, 'email', u.email, 'first_name', u.first_name, 'last_name', u.last_name,
    'email_verified_at', u.email_verified_at, 'last_login_at', u.last_login_at, 'created_at', u.created_at);
end
$$;

create function auth.check_new_password(password text) returns void
language plpgsql immutable set search_path = '' as $$
begin
  if password is null or length(password) < 8 then
    raise exception using errcode = '22023', message = 'password is too short', hint = 'Use at least 8 characters.';
  end if;
  if octet_length(password) > 72 then
    raise exception using errcode = '22023', message = 'password is too long',
      hint = 'Use at most 72 bytes (bcrypt ignores the rest).';
  end if;
end
$$;

create function auth.hash_password(password text) returns text
language sql volatile set search_path = '' as $$
  select extensions.crypt(password, extensions.gen_salt('bf', auth.bcrypt_cost()))
$$;

create function auth.refuse_bad_token() returns void
language plpgsql immutable set search_path = '' as $$
begin
  raise exception using errcode = '22023', message = 'invalid or expired token',
    hint = 'Request a new link: tokens expire and work once.';
end
$$;

-- A new one-time token for the user; unused ones of the same purpose stop working.
create function auth.issue_one_time_token(uid uuid, token_purpose text, address text, lifetime interval) returns text
language plpgsql volatile set search_path = '' as $$
declare
  token text := auth.random_token();
begin
  delete from auth.one_time_tokens t where t.user_id = uid and t.purpose = token_purpose and t.used_at is null;
  insert into auth.one_time_tokens (user_id, purpose, token_hash, email, expires_at)
  values (uid, token_purpose, auth.token_digest(token), address, now() + lifetime);
  return token;
end
$$;

-- The unused, unexpired token row (locked), or a 400 for anything else.
create function auth.take_one_time_token(token text, token_purpose text) returns auth.one_time_tokens
language plpgsql volatile set search_path = '' as $$
declare
  found_token auth.one_time_tokens;
begin
  if token is null or length(token) not between 20 and 100 then
    perform auth.refuse_bad_token();
  end if;
  select * into found_token from auth.one_time_tokens t
   where t.token_hash = auth.token_digest(token) and t.purpose = token_purpose
   for update;
  if found_token.id is null or found_token.used_at is not null or found_token.expires_at <= now()
     or not exists (select from auth.users u where u.id = found_token.user_id and u.email = found_token.email) then
    perform auth.refuse_bad_token();
  end if;
  update auth.one_time_tokens set used_at = now() where id = found_token.id;
  return found_token;
end
$$;

create function auth.enqueue_mail(recipient text, template text, params jsonb) returns void
language sql volatile set search_path = '' as $$
  insert into auth.mail_outbox (recipient, template, params) values (recipient, template, params)
$$;

create function auth.record_event(uid uuid, event_kind text, details jsonb default '{}') returns void
language sql volatile set search_path = '' as $$
  insert into auth.account_events (user_id, kind, client, user_agent, details)
  values (uid, event_kind, auth.request_client(), auth.request_user_agent(), details)
$$;

create function auth.send_verification(u auth.users) returns void
language plpgsql volatile set search_path = '' as $$
begin
  perform auth.enqueue_mail(u.email, 'verify_email', json_build_object(
    'first_name', u.first_name,
    'token', auth.issue_one_time_token(u.id, 'verify_email', u.email, interval '24 hours'))::jsonb);
end
$$;

-- One more request of `kind` for `key` in the window: false when over `max`.
create function auth.throttle_allows(kind text, key text, max int, window_length interval) returns boolean
language plpgsql volatile set search_path = '' as $$
declare
  current_count int;
begin
  insert into auth.request_throttle as t (kind, key, window_started_at, count)
  values (kind, key, now(), 1)
  on conflict on constraint request_throttle_pkey do update
    set count = case when t.window_started_at <= now() - window_length then 1 else t.count + 1 end,
        window_started_at = case when t.window_started_at <= now() - window_length then now() else t.window_started_at end
  returning t.count into current_count;
  return current_count <= max;
end
$$;

-- The per-address and per-client limit of the mails anyone can ask for; 429 when over.
create function auth.throttle_mail_request(kind text, email text) returns void
language plpgsql volatile set search_path = '' as $$
declare
  window_length interval := make_interval(secs => auth.account_setting_int('reset_window_seconds', 3600, 1, 86400));
  address text := coalesce(auth.email_or_null(email), lower(left(btrim(email, E' \t\n\r\f\v'), 254)));
  by_address boolean := auth.throttle_allows(kind || ':address', address, auth.account_setting_int('reset_per_address_max', 5, 0, 1000000), window_length);
  by_client boolean := auth.throttle_allows(kind || ':client', auth.request_client(), auth.account_setting_int('reset_per_client_max', 30, 0, 1000000), window_length);
  seconds int := greatest(ceil(extract(epoch from window_length))::int, 1);
begin
  delete from auth.request_throttle t
   where (t.kind, t.key) in (select o.kind, o.key from auth.request_throttle o
                              where o.window_started_at < now() - interval '1 day' limit 3 for update skip locked);
  if not (by_address and by_client) then
    raise sqlstate 'PGRST' using
      message = '{"code":"PT429","message":"too many requests for this address or client","details":null,"hint":"Retry later."}',
      detail = format('{"status":429,"headers":{"Retry-After":"%s"}}', seconds);
  end if;
end
$$;

-- For functions that must not serve unverified accounts: 403 when the setting requires a
-- verified address and the caller's is not.
create function auth.require_verified_email() returns void
language plpgsql stable set search_path = '' as $$
begin
  if auth.account_setting_bool('require_verified_email', false)
     and exists (select from auth.users u where u.id = auth.current_user_id() and u.email_verified_at is null) then
    raise exception using errcode = 'PT403', message = 'email address not verified',
      hint = 'Follow the link in the verification mail, or ask for a new one with resend_verification.';
  end if;
end
$$;

create function auth.notify_mail() returns trigger
language plpgsql set search_path = '' as $$
begin
  perform pg_notify('autoaudit_mail', new.id::text);
  return new;
end
$$;
create trigger mail_outbox_notify after insert on auth.mail_outbox
  for each row execute function auth.notify_mail();

-- ── the mailer's functions (schema mail, usage granted to mailer) ──────

create schema mail;

-- Up to `batch` due mails, leased for `lease`: pending ones whose time has come, and sending
-- ones whose lease ran out (their mailer died). Each claim counts an attempt.
-- A reset or verification mail asked for by address (request_password_reset,
-- resend_verification) is resolved here, not in the request: its account is looked up and its
-- token issued at the first claim, and a mail for no (unverified) account is deleted unsent. So
-- the request does the same work for every address.
create function mail.claim(batch int, lease interval)
returns table (id bigint, message_id text, recipient text, template text, params jsonb, attempts int)
language plpgsql volatile security definer set search_path = '' as $$
#variable_conflict use_column
declare
  claimed auth.mail_outbox;
  account auth.users;
begin
  for claimed in
    update auth.mail_outbox m
       set status = 'sending', attempts = m.attempts + 1, lease_until = now() + lease
     where m.id in (select o.id from auth.mail_outbox o
                     where (o.status = 'pending' and o.next_attempt_at <= now())
                        or (o.status = 'sending' and o.lease_until <= now())
                     order by o.id limit batch for update skip locked)
    returning m.*
  loop
    if claimed.template in ('reset_password', 'verify_email') and not (claimed.params ? 'token') then
      account := null;
      select u.* into account from auth.users u
       where u.email = claimed.recipient and (claimed.template = 'reset_password' or u.email_verified_at is null);
      if account.id is null then
        delete from auth.mail_outbox d where d.id = claimed.id;
        continue;
      end if;
      claimed.params := jsonb_build_object('first_name', account.first_name, 'token',
        case when claimed.template = 'reset_password'
             then auth.issue_one_time_token(account.id, 'reset_password', account.email, interval '30 minutes')
             else auth.issue_one_time_token(account.id, 'verify_email', account.email, interval '24 hours') end);
      update auth.mail_outbox t set params = claimed.params where t.id = claimed.id;
    end if;
    id := claimed.id;
    message_id := claimed.message_id;
    recipient := claimed.recipient;
    template := claimed.template;
    params := claimed.params;
    attempts := claimed.attempts;
    return next;
  end loop;
end
$$;

-- Sent: only by the claim that holds the row (same attempt); true when this call marked it.
create function mail.mark_sent(mail_id bigint, attempt int) returns boolean
language sql volatile security definer set search_path = '' as $$
  with marked as (
    update auth.mail_outbox m set status = 'sent', sent_at = now(), params = '{}', lease_until = null, last_error = null
     where m.id = mail_id and m.status = 'sending' and m.attempts = attempt
    returning 1)
  select exists (select from marked)
$$;

-- Not sent: retried after `retry_in`, or given up (status failed) when `give_up`.
create function mail.mark_failed(mail_id bigint, attempt int, error text, retry_in interval, give_up boolean) returns boolean
language sql volatile security definer set search_path = '' as $$
  with marked as (
    update auth.mail_outbox m
       set status = case when give_up then 'failed' else 'pending' end,
           next_attempt_at = now() + retry_in, lease_until = null, last_error = left(error, 1000)
     where m.id = mail_id and m.status = 'sending' and m.attempts = attempt
    returning 1)
  select exists (select from marked)
$$;

-- ── the API ──────────────────────────────────────────────────────────────

-- From 20261202000100_sign_in_protections.sql, plus the verification mail.
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
  perform auth.send_verification(created);
  return auth.user_json(created);
end
$$;

-- From 20261202000100_sign_in_protections.sql, plus: the verified-email requirement, and the
-- session records the client address and user agent.
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
  if found_user.email_verified_at is null and auth.account_setting_bool('require_verified_email', false) then
    raise exception using errcode = 'PT403', message = 'email address not verified',
      hint = 'Follow the link in the verification mail, or ask for a new one with resend_verification.';
  end if;
  update auth.users set last_login_at = now() where id = found_user.id returning * into found_user;
  insert into auth.sessions (user_id, client, user_agent)
  values (found_user.id, throttle_client, auth.request_user_agent()) returning id into session;
  issued := auth.new_refresh_token(session);
  return auth.session_json(found_user, session, issued.token, issued.expires_at);
end
$$;

-- From 20261125000200_auth.sql, plus: the lifetimes, last_refreshed_at, derived successors
-- and the retry grace.
create or replace function api.issue_token(refresh_token text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  presented auth.refresh_tokens;
  successor auth.refresh_tokens;
  candidate text := refresh_token;
  sess auth.sessions;
  owner auth.users;
  token text;
  expires timestamptz;
  grace interval := make_interval(secs => auth.account_setting_int('refresh_reuse_grace_seconds', 10, 0, 3600));
begin
  if refresh_token is null or length(refresh_token) > 100 then
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;
  select * into presented from auth.refresh_tokens t
   where t.token_hash = auth.token_digest(refresh_token)
   for update;
  if presented.id is null or presented.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;
  select * into sess from auth.sessions s where s.id = presented.session_id for update;

  if presented.retired_at is not null then
    -- Within the grace, the retry of a rotation (two tabs, a lost answer) gets the successor
    -- already issued, followed down the family while each step is within the grace.
    if sess.revoked_at is null then
      for hop in 1..10 loop
        exit when presented.retired_at is null or presented.replaced_by is null
               or presented.retired_at <= now() - grace;
        candidate := auth.successor_token(candidate);
        select * into successor from auth.refresh_tokens t where t.token_hash = auth.token_digest(candidate);
        exit when successor.id is null or successor.id <> presented.replaced_by;
        presented := successor;
      end loop;
    end if;
    if presented.retired_at is null and presented.id = successor.id then
      if not auth.session_alive(sess) then
        raise exception using errcode = 'PT401', message = 'session expired', hint = 'Sign in again.';
      end if;
      select * into owner from auth.users u where u.id = sess.user_id;
      return auth.session_json(owner, sess.id, candidate, presented.expires_at);
    end if;
    -- A retired token presented again means two parties hold the family: revoke all of it.
    -- Raising would roll the revocation back, so answer 401 through PostgREST's response.status.
    if auth.revoke_session(sess.id, 'reuse_detected') then
      perform set_config('response.status', '401', true);
      return json_build_object(
        'code', 'PT401', 'message', 'refresh token reuse detected; the session was revoked',
        'details', json_build_object('session_id', sess.id)::text,
        'hint', 'Sign in again.');
    end if;
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;

  if sess.revoked_at is not null then
    raise exception using errcode = 'PT401', message = 'invalid refresh token', hint = 'Sign in again.';
  end if;
  if not auth.session_alive(sess) then
    raise exception using errcode = 'PT401', message = 'session expired', hint = 'Sign in again.';
  end if;
  select * into owner from auth.users u where u.id = sess.user_id;
  if owner.email_verified_at is null and auth.account_setting_bool('require_verified_email', false) then
    raise exception using errcode = 'PT403', message = 'email address not verified',
      hint = 'Follow the link in the verification mail, or ask for a new one with resend_verification.';
  end if;

  update auth.sessions set last_refreshed_at = now() where id = sess.id;
  token := auth.successor_token(refresh_token);
  expires := auth.refresh_expiry(sess.id);
  insert into auth.refresh_tokens (session_id, token_hash, expires_at)
  values (sess.id, auth.token_digest(token), expires) returning * into successor;
  update auth.refresh_tokens set retired_at = now(), replaced_by = successor.id where id = presented.id;
  return auth.session_json(owner, sess.id, token, expires);
end
$$;

create function api.verify_email(token text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  used auth.one_time_tokens := auth.take_one_time_token(token, 'verify_email');
  verified_at timestamptz;
begin
  update auth.users set email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
   where id = used.user_id returning email_verified_at into verified_at;
  perform auth.record_event(used.user_id, 'email_verified');
  return json_build_object('email', used.email, 'email_verified_at', verified_at);
end
$$;

create function api.resend_verification(email text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  normalized text := auth.email_or_null(email);
begin
  if email is null or length(email) > 254 then
    raise exception using errcode = '22023', message = 'email is not a valid address',
      hint = 'Use an address like name@example.com of at most 254 characters.';
  end if;
  perform auth.throttle_mail_request('verify', email);
  -- The same for every address: whether it belongs to an unverified account is decided when
  -- the mailer claims the mail (mail.claim), which then issues the token.
  if normalized is not null then
    perform auth.enqueue_mail(normalized, 'verify_email', '{}');
  end if;
  return json_build_object('message', 'If this address belongs to an account that is not verified yet, a verification mail is on its way.');
end
$$;

create function api.request_password_reset(email text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  normalized text := auth.email_or_null(email);
begin
  if email is null or length(email) > 254 then
    raise exception using errcode = '22023', message = 'email is not a valid address',
      hint = 'Use an address like name@example.com of at most 254 characters.';
  end if;
  perform auth.throttle_mail_request('reset', email);
  -- The same work for every address: whether it belongs to an account is decided when the
  -- mailer claims the mail (mail.claim), which then issues the token or drops the mail.
  if normalized is not null then
    perform auth.enqueue_mail(normalized, 'reset_password', '{}');
  end if;
  return json_build_object('message', 'If this address belongs to an account, a mail with a reset link is on its way.');
end
$$;

create function api.reset_password(token text, new_password text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  used auth.one_time_tokens;
  changed auth.users;
  revoked uuid[];
begin
  perform auth.check_new_password(new_password);
  used := auth.take_one_time_token(token, 'reset_password');
  -- The mail reached its owner: the address is verified by the same proof.
  update auth.users
     set password_hash = auth.hash_password(new_password), updated_at = now(),
         email_verified_at = coalesce(email_verified_at, now())
   where id = used.user_id returning * into changed;
  select coalesce(array_agg(s.id), '{}') into revoked
    from auth.sessions s where s.user_id = changed.id and s.revoked_at is null;
  perform auth.revoke_session(id, 'password_reset') from unnest(revoked) as id;
  delete from auth.one_time_tokens t where t.user_id = changed.id and t.used_at is null;
  perform auth.record_event(changed.id, 'password_reset', json_build_object('revoked_sessions', cardinality(revoked))::jsonb);
  perform auth.enqueue_mail(changed.email, 'password_changed', json_build_object('first_name', changed.first_name)::jsonb);
  return json_build_object('revoked_sessions', to_json(revoked));
end
$$;

create function api.change_password(current_password text, new_password text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  this_session uuid := auth.claim_uuid('sid');
  found_user auth.users;
  revoked uuid[];
begin
  perform auth.check_new_password(new_password);
  select * into found_user from auth.users u where u.id = uid for update;
  if found_user.id is null then
    raise exception using errcode = 'PT401', message = 'sign in required';
  end if;
  if current_password is null or octet_length(current_password) > 72
     or extensions.crypt(current_password, found_user.password_hash) <> found_user.password_hash then
    raise exception using errcode = 'PT403', message = 'current password is incorrect',
      hint = 'Give the password you signed in with as current_password.';
  end if;
  update auth.users set password_hash = auth.hash_password(new_password), updated_at = now() where id = uid;
  select coalesce(array_agg(s.id), '{}') into revoked
    from auth.sessions s where s.user_id = uid and s.revoked_at is null and s.id is distinct from this_session;
  perform auth.revoke_session(id, 'password_change') from unnest(revoked) as id;
  delete from auth.one_time_tokens t where t.user_id = uid and t.purpose = 'reset_password' and t.used_at is null;
  perform auth.record_event(uid, 'password_changed', json_build_object('revoked_sessions', cardinality(revoked))::jsonb);
  perform auth.enqueue_mail(found_user.email, 'password_changed', json_build_object('first_name', found_user.first_name)::jsonb);
  return json_build_object('revoked_sessions', to_json(revoked));
end
$$;

create function api.my_sessions() returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
begin
  return coalesce((
    select json_agg(json_build_object(
             'id', s.id, 'created_at', s.created_at, 'last_refreshed_at', s.last_refreshed_at,
             'expires_at', least(s.created_at + auth.session_max(), s.last_refreshed_at + auth.session_inactivity()),
             'client', s.client, 'user_agent', s.user_agent,
             'current', s.id = auth.claim_uuid('sid')) order by s.created_at desc, s.id)
      from auth.sessions s
     where s.user_id = uid and s.revoked_at is null
       and s.created_at + auth.session_max() > now() and s.last_refreshed_at + auth.session_inactivity() > now()),
    '[]'::json);
end
$$;

create function api.revoke_session(session_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
begin
  if session_id is null or not exists (select from auth.sessions s where s.id = revoke_session.session_id
                                          and s.user_id = uid and s.revoked_at is null) then
    raise exception using errcode = 'PT404', message = 'no active session of yours has this id',
      hint = 'List them with my_sessions.';
  end if;
  perform auth.revoke_session(revoke_session.session_id, 'revoked');
  return json_build_object('revoked_sessions', json_build_array(revoke_session.session_id));
end
$$;

create function api.revoke_other_sessions() returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  revoked uuid[];
begin
  select coalesce(array_agg(s.id), '{}') into revoked
    from auth.sessions s where s.user_id = uid and s.revoked_at is null and s.id is distinct from auth.claim_uuid('sid');
  perform auth.revoke_session(id, 'revoked_others') from unnest(revoked) as id;
  return json_build_object('revoked_sessions', to_json(revoked));
end
$$;

comment on function api.verify_email(text) is 'Verify the account''s address with the token from the verification mail.';
comment on function api.resend_verification(text) is 'Send a new verification mail. The same answer for any address; throttled.';
comment on function api.request_password_reset(text) is 'Mail a password reset link (valid 30 minutes). The same answer for any address; throttled.';
comment on function api.reset_password(text, text) is 'Set a new password with the token from the reset mail; signs out every session.';
comment on function api.change_password(text, text) is 'Change the password (the current one is required); signs out the other sessions.';
comment on function api.my_sessions() is 'The signed-in user''s active sessions.';
comment on function api.revoke_session(uuid) is 'Sign out one of your sessions.';
comment on function api.revoke_other_sessions() is 'Sign out every session but this one.';

-- Access tokens of a session past either lifetime are refused like those of a revoked one
-- (the gateway asks this at least every SESSION_REDIS_TTL_SECONDS), not only its refreshes.
create or replace function api.session_active() returns boolean
language plpgsql stable security definer set search_path = '' as $$
declare
  s auth.sessions;
begin
  select * into s from auth.sessions
   where id = auth.claim_uuid('sid') and user_id = auth.claim_uuid('sub');
  return found and auth.session_alive(s);
end
$$;

revoke all on table auth.settings, auth.refresh_key, auth.one_time_tokens, auth.account_events,
  auth.request_throttle, auth.mail_outbox from public;
revoke all on all functions in schema auth from public;
revoke all on function api.verify_email(text), api.resend_verification(text), api.request_password_reset(text),
  api.reset_password(text, text), api.change_password(text, text), api.my_sessions(), api.revoke_session(uuid),
  api.revoke_other_sessions() from public;
grant execute on function api.verify_email(text), api.resend_verification(text), api.request_password_reset(text),
  api.reset_password(text, text) to anon, authenticated;
grant execute on function api.change_password(text, text), api.my_sessions(), api.revoke_session(uuid),
  api.revoke_other_sessions() to authenticated;
revoke all on all functions in schema mail from public;
grant usage on schema mail to mailer;
grant execute on all functions in schema mail to mailer;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;

create or replace function api.session_active() returns boolean
language plpgsql stable security definer set search_path = '' as $$
begin
  return exists (
    select from auth.sessions s
     where s.id = auth.claim_uuid('sid') and s.user_id = auth.claim_uuid('sub') and s.revoked_at is null);
end
$$;

drop function api.revoke_other_sessions();
drop function api.revoke_session(uuid);
drop function api.my_sessions();
drop function api.change_password(text, text);
drop function api.reset_password(text, text);
drop function api.request_password_reset(text);
drop function api.resend_verification(text);
drop function api.verify_email(text);

-- As in 20261202000100_sign_in_protections.sql.
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

-- As in 20261202000100_sign_in_protections.sql.
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

-- As in 20261125000200_auth.sql.
create or replace function api.issue_token(refresh_token text) returns json
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

-- As in 20261125000200_auth.sql.
create or replace function auth.user_json(u auth.users) returns json
language plpgsql immutable set search_path = '' as $$
begin
  return json_build_object(
    'id', u.id, 'email', u.email, 'first_name', u.first_name, 'last_name', u.last_name,
    'last_login_at', u.last_login_at, 'created_at', u.created_at);
end
$$;

-- As in 20261125000200_auth.sql.
create or replace function auth.new_refresh_token(session uuid, out token text, out expires_at timestamptz)
language plpgsql volatile set search_path = '' as $$
begin
  token := rtrim(translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/', '-_'), '=');
  expires_at := now() + interval '60 days';
  insert into auth.refresh_tokens (session_id, token_hash, expires_at)
  values (session, auth.token_digest(token), expires_at);
end
$$;

drop schema mail cascade;
drop trigger mail_outbox_notify on auth.mail_outbox;
drop function auth.notify_mail();
drop function auth.require_verified_email();
drop function auth.throttle_mail_request(text, text);
drop function auth.throttle_allows(text, text, int, interval);
drop function auth.send_verification(auth.users);
drop function auth.record_event(uuid, text, jsonb);
drop function auth.enqueue_mail(text, text, jsonb);
drop function auth.take_one_time_token(text, text);
drop function auth.issue_one_time_token(uuid, text, text, interval);
drop function auth.refuse_bad_token();
drop function auth.hash_password(text);
drop function auth.check_new_password(text);
drop function auth.successor_token(text);
drop function auth.random_token();
drop function auth.request_user_agent();
drop function auth.refresh_expiry(uuid);
drop function auth.session_alive(auth.sessions);
drop function auth.session_max();
drop function auth.session_inactivity();
drop function auth.account_setting_bool(text, boolean);
drop function auth.account_setting_int(text, int, int, int);
drop table auth.mail_outbox;
drop table auth.request_throttle;
drop table auth.account_events;
drop table auth.one_time_tokens;

-- Sessions revoked for the new reasons keep a reason the old check knows.
update auth.sessions set revoked_reason = 'logout' where revoked_reason in ('revoked', 'revoked_others', 'password_reset', 'password_change');
alter table auth.sessions
  drop constraint sessions_revoked_reason_check,
  add constraint sessions_revoked_reason_check check (revoked_reason in ('logout', 'logout_all', 'reuse_detected')),
  drop column user_agent,
  drop column client,
  drop column last_refreshed_at;
alter table auth.users drop column email_verified_at;
drop table auth.refresh_key;
drop table auth.settings;

reset role;
do $$
begin
  if exists (select from pg_roles where rolname = 'mailer') then
    drop role mailer;
  end if;
end
$$;
notify pgrst, 'reload schema';
