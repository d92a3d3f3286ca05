-- migrate:up
-- Completes the audit trail of 20261202000500_audit_trail.sql:
--
-- * Throttled sign-ins are recorded. api.sign_in no longer raises PT429 (which rolled back):
--   auth.answer_throttled appends 'sign_in_throttled' and answers through response.status and
--   response.headers with the status, headers and body bytes a raised PT429 had, as the
--   wrong-password path does for 401.
-- * Retention: retention.prune_audit_trail(cutoff), run by the role audit_pruner only (bun run audit:prune and the
--   worker, when AUDIT_RETENTION_DAYS is set). Per chain it deletes the prefix (in id order) of
--   events older than the cutoff and appends a checkpoint, 'trail_pruned', whose details carry
--   the id and hash of the last pruned event (that hash covers everything pruned, link by link).
--   audit.verify_chain and the export verifier start at the latest checkpoint. The append-only
--   trigger lets a delete through only behind the chain's checkpoint (chain_heads.pruned_through,
--   which the prune sets in the same transaction); every other change is still refused.
-- * audit.canonical(e): the exact text audit.digest hashes, so an export can carry it and be
--   verified outside the database: hash = sha256(prev_hash || canonical).
-- * audit.switch.recording: a switch for measuring the trail's cost (bench/audit-cost.ts) and
--   nothing else. A table row rather than a GUC, because any session may set a custom GUC and
--   would then write unrecorded; only the owner and superusers may change the row.
do $$
begin
  if not exists (select from pg_roles where rolname = 'audit_pruner') then
    create role audit_pruner nologin;
  end if;
end
$$;

set local role auth_admin;

alter table audit.events drop constraint events_action_check,
  add constraint events_action_check check (action in (
    'sign_up', 'sign_in_succeeded', 'sign_in_failed', 'sign_in_throttled', 'refresh',
    'refresh_reuse_detected', 'sign_out_one', 'sign_out_others', 'sign_out_all',
    'password_changed', 'password_reset_requested', 'password_reset', 'email_verified',
    'tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined',
    'member_removed', 'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested',
    'job_finished', 'job_failed', 'trail_pruned'));

-- the last event id the prune removed from the chain (deletes up to it are let through)
alter table audit.chain_heads add column pruned_through bigint;

create table audit.switch (
  singleton boolean primary key default true check (singleton),
  recording boolean not null default true
);
insert into audit.switch default values;

-- What audit_pruner may use: this schema and its one function (the audit schema stays closed).
create schema retention;

create or replace function audit.append(
  action text, actor uuid, tenant uuid, account uuid, target text,
  details jsonb default '{}', session uuid default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  e audit.events;
  chain_key text := coalesce(tenant::text, 'account');
  head audit.chain_heads;
begin
  -- autoaudit's measurement switch (audit.switch): off only while bench/audit-cost.ts runs
  if not coalesce((select s.recording from audit.switch s), true) then
    return;
  end if;
  insert into audit.chain_heads (chain) values (chain_key) on conflict do nothing;
  select * into head from audit.chain_heads h where h.chain = chain_key for update;
  e.id := nextval('audit.events_id_seq');
  e.chain := chain_key;
  e.at := now();
  e.actor := actor;
  e.session_id := coalesce(session, auth.claim_uuid('sid'));
  e.action := action;
  e.tenant_id := tenant;
  e.user_id := account;
  e.target := left(target, 300);
  e.client := auth.request_client();
  e.user_agent := auth.request_user_agent();
  e.request_id := left(audit.request_header('x-request-id'), 200);
  e.details := coalesce(details, '{}');
  e.prev_hash := head.hash;
  e.hash := audit.digest(head.hash, e);
  insert into audit.events select e.*;
  update audit.chain_heads h set last_id = e.id, hash = e.hash where h.chain = chain_key;
end
$$;

create or replace function audit.refuse_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  -- the prune removes what its checkpoint covers; nothing else may go (TRUNCATE has no old row)
  if tg_op = 'DELETE' then
    if old.id <= (select h.pruned_through from audit.chain_heads h where h.chain = old.chain) then
      return old;
    end if;
  end if;
  raise exception using errcode = '42501', message = 'audit events are append-only';
end
$$;

-- The text audit.digest hashes (kept in step with it; the audit tests compare the two).
create function audit.canonical(e audit.events) returns text
language sql immutable set search_path = '' as $$
  select jsonb_build_array(
           e.id, e.chain, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.actor, e.session_id,
           e.action, e.tenant_id, e.user_id, e.target, e.client, e.user_agent, e.request_id, e.details)::text
$$;

-- Recomputes one chain in order, from its latest checkpoint when it was pruned:
-- {chain, ok, checked, first_broken_id}.
create or replace function audit.verify_chain(chain_key text) returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  e audit.events;
  prev bytea;
  start_after bigint := 0;
  checked bigint := 0;
  head audit.chain_heads;
  checkpoint audit.events;
begin
  select * into checkpoint from audit.events v
   where v.chain = chain_key and v.action = 'trail_pruned' order by v.id desc limit 1;
  if checkpoint.id is not null then
    start_after := case when pg_input_is_valid(checkpoint.details ->> 'pruned_through_id', 'int8')
                        then (checkpoint.details ->> 'pruned_through_id')::bigint end;
    prev := case when (checkpoint.details ->> 'pruned_through_hash') ~ '^[0-9a-f]{64}$'
                 then decode(checkpoint.details ->> 'pruned_through_hash', 'hex') end;
    -- a checkpoint covers only events before itself, so its own link is always checked
    if start_after is null or prev is null or start_after >= checkpoint.id then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', checkpoint.id);
    end if;
  end if;
  for e in select * from audit.events v where v.chain = chain_key and v.id > start_after order by v.id loop
    if e.prev_hash is distinct from prev or e.hash is distinct from audit.digest(prev, e) then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', e.id);
    end if;
    checked := checked + 1;
    prev := e.hash;
  end loop;
  select * into head from audit.chain_heads h where h.chain = chain_key;
  if head.hash is distinct from prev then
    -- the newest rows were removed (or the head was changed)
    return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', head.last_id);
  end if;
  return json_build_object('chain', chain_key, 'ok', true, 'checked', checked, 'first_broken_id', null);
end
$$;

-- Deletes, per chain, the prefix of events older than cutoff and appends the checkpoint that
-- keeps the rest verifiable (see the top of this file). A chain whose prefix holds only
-- checkpoints is left alone, so repeated runs do not churn. {pruned_events, chains: [...]}.
create function retention.prune_audit_trail(cutoff timestamptz, only_chain text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  c record;
  head audit.chain_heads;
  first_kept bigint;
  through bigint;
  through_hash bytea;
  n bigint;
  oldest timestamptz;
  newest timestamptz;
  only_checkpoints boolean;
  chains jsonb := '[]';
  total bigint := 0;
begin
  if cutoff is null or cutoff > now() then
    raise exception using errcode = '22023', message = 'cutoff must be a time that is not in the future';
  end if;
  if not coalesce((select s.recording from audit.switch s), true) then
    raise exception using errcode = '55000', message = 'the audit trail is switched off, so no checkpoint could be written',
      hint = 'Switch it on (audit.switch) before pruning.';
  end if;
  for c in select h.chain from audit.chain_heads h where only_chain is null or h.chain = only_chain order by h.chain loop
    -- the chain's lock (as audit.append takes it): appends and other prunes of it wait
    select * into head from audit.chain_heads h where h.chain = c.chain for update;
    -- events are appended in id order but stamped with their transaction's start, so "older
    -- than the cutoff" is taken as the id prefix before the first event that is not
    select min(e.id) into first_kept from audit.events e where e.chain = c.chain and e.at >= cutoff;
    select count(*), max(e.id), min(e.at), max(e.at), bool_and(e.action = 'trail_pruned')
      into n, through, oldest, newest, only_checkpoints
      from audit.events e where e.chain = c.chain and (first_kept is null or e.id < first_kept);
    continue when n = 0 or only_checkpoints;
    select e.hash into through_hash from audit.events e where e.id = through;
    update audit.chain_heads h set pruned_through = through where h.chain = c.chain;
    delete from audit.events e where e.chain = c.chain and e.id <= through;
    perform audit.append('trail_pruned', null, case when c.chain = 'account' then null else c.chain::uuid end, null, null,
      jsonb_build_object('pruned_through_id', through, 'pruned_through_hash', encode(through_hash, 'hex'), 'pruned_events', n,
        'cutoff', to_char(cutoff at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'oldest_at', to_char(oldest at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'newest_at', to_char(newest at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
    chains := chains || jsonb_build_object('chain', c.chain, 'pruned_events', n, 'pruned_through_id', through);
    total := total + n;
  end loop;
  return json_build_object('pruned_events', total, 'chains', chains);
end
$$;

-- A throttled sign-in: recorded, then refused with the answer auth.refuse_throttled raised (the
-- engine and PostgREST render that with Proxy-Status), through response.status so the record commits.
create function auth.answer_throttled(wait interval, scope text, address text, client text) returns json
language plpgsql volatile set search_path = '' as $$
declare
  seconds int := greatest(ceil(extract(epoch from wait))::int, 1);
  account uuid;
begin
  -- The raise rolled back the pair's row when this attempt created it (a kept row always has
  -- failures): the refusal leaves the throttle as it found it.
  delete from auth.sign_in_throttle t where t.email = address and t.client = answer_throttled.client and t.failures = 0;
  select u.id into account from auth.users u where u.email = address;
  perform audit.append('sign_in_throttled', null, null, account, account::text,
                       jsonb_build_object('scope', scope, 'retry_after', seconds));
  perform set_config('response.status', '429', true);
  perform set_config('response.headers',
    format('[{"Retry-After":"%s"},{"Proxy-Status":"PostgREST; error=PT429"}]', seconds), true);
  return format('{"code":"PT429","details":null,"hint":"Retry after %s seconds.","message":"too many failed sign-ins"}', seconds)::json;
end
$$;

-- From 20261202000300_accounts.sql; a throttled attempt is answered by auth.answer_throttled.
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
    return auth.answer_throttled(pair.blocked_until - attempt_at, 'address', throttle_email, throttle_client);
  end if;
  select coalesce(sum(t.failures), 0), max(t.window_started_at) + window_length
    into account_failures, account_window_end
    from auth.sign_in_throttle t
   where t.email = throttle_email and t.failures > 0 and t.window_started_at > attempt_at - window_length;
  if account_failures >= account_ceiling then
    return auth.answer_throttled(account_window_end - attempt_at, 'account', throttle_email, throttle_client);
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

create or replace function api.tenant_audit(tenant_id uuid, before bigint default null, page_size int default 20, action text default null)
returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  page json;
  next_before bigint;
begin
  perform compliance.require_role(tenant_audit.tenant_id, 'admin');
  perform audit.check_page(page_size, before);
  if action is not null and action not in (
       'tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined', 'member_removed',
       'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested', 'job_finished', 'job_failed', 'trail_pruned') then
    raise exception using errcode = '22023', message = 'action is not a tenant audit action',
      hint = 'Use one of tenant_created, invitation_sent, invitation_accepted, invitation_declined, member_removed, '
             'role_changed, rules_upserted, scan_submitted, scan_requested, job_finished, job_failed, trail_pruned.';
  end if;
  select coalesce(json_agg(audit.event_json(e) order by e.id desc), '[]'),
         case when count(*) = page_size then min(e.id) end
    into page, next_before
    from (select * from audit.events e
           where e.chain = tenant_audit.tenant_id::text
             and (tenant_audit.before is null or e.id < tenant_audit.before)
             and (tenant_audit.action is null or e.action = tenant_audit.action)
           order by e.id desc limit page_size) e;
  if next_before is not null and not exists (
       select from audit.events e where e.chain = tenant_audit.tenant_id::text and e.id < next_before
          and (tenant_audit.action is null or e.action = tenant_audit.action)) then
    next_before := null;
  end if;
  return json_build_object('events', page, 'next_before', next_before);
end
$$;

revoke all on table audit.switch from public;
revoke all on function audit.canonical(audit.events), retention.prune_audit_trail(timestamptz, text),
  auth.answer_throttled(interval, text, text, text) from public;
-- The prune deletes as the owner; the trigger above limits it to what a checkpoint covers.
grant delete on audit.events to auth_admin;
grant usage on schema retention to audit_pruner;
grant execute on function retention.prune_audit_trail(timestamptz, text) to audit_pruner;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;
-- As in 20261202000300_accounts.sql.
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

-- As in 20261202000500_audit_trail.sql.
create or replace function api.tenant_audit(tenant_id uuid, before bigint default null, page_size int default 20, action text default null)
returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  page json;
  next_before bigint;
begin
  perform compliance.require_role(tenant_audit.tenant_id, 'admin');
  perform audit.check_page(page_size, before);
  if action is not null and action not in (
       'tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined', 'member_removed',
       'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested', 'job_finished', 'job_failed') then
    raise exception using errcode = '22023', message = 'action is not a tenant audit action',
      hint = 'Use one of tenant_created, invitation_sent, invitation_accepted, invitation_declined, member_removed, '
             'role_changed, rules_upserted, scan_submitted, scan_requested, job_finished, job_failed.';
  end if;
  select coalesce(json_agg(audit.event_json(e) order by e.id desc), '[]'),
         case when count(*) = page_size then min(e.id) end
    into page, next_before
    from (select * from audit.events e
           where e.chain = tenant_audit.tenant_id::text
             and (tenant_audit.before is null or e.id < tenant_audit.before)
             and (tenant_audit.action is null or e.action = tenant_audit.action)
           order by e.id desc limit page_size) e;
  if next_before is not null and not exists (
       select from audit.events e where e.chain = tenant_audit.tenant_id::text and e.id < next_before
          and (tenant_audit.action is null or e.action = tenant_audit.action)) then
    next_before := null;
  end if;
  return json_build_object('events', page, 'next_before', next_before);
end
$$;

create or replace function audit.verify_chain(chain_key text) returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  e audit.events;
  prev bytea;
  checked bigint := 0;
  head audit.chain_heads;
begin
  for e in select * from audit.events v where v.chain = chain_key order by v.id loop
    if e.prev_hash is distinct from prev or e.hash is distinct from audit.digest(prev, e) then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', e.id);
    end if;
    checked := checked + 1;
    prev := e.hash;
  end loop;
  select * into head from audit.chain_heads h where h.chain = chain_key;
  if head.hash is distinct from prev then
    -- the newest rows were removed (or the head was changed)
    return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', head.last_id);
  end if;
  return json_build_object('chain', chain_key, 'ok', true, 'checked', checked, 'first_broken_id', null);
end
$$;

create or replace function audit.refuse_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using errcode = '42501', message = 'audit events are append-only';
end
$$;

create or replace function audit.append(
  action text, actor uuid, tenant uuid, account uuid, target text,
  details jsonb default '{}', session uuid default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  e audit.events;
  chain_key text := coalesce(tenant::text, 'account');
  head audit.chain_heads;
begin
  insert into audit.chain_heads (chain) values (chain_key) on conflict do nothing;
  select * into head from audit.chain_heads h where h.chain = chain_key for update;
  e.id := nextval('audit.events_id_seq');
  e.chain := chain_key;
  e.at := now();
  e.actor := actor;
  e.session_id := coalesce(session, auth.claim_uuid('sid'));
  e.action := action;
  e.tenant_id := tenant;
  e.user_id := account;
  e.target := left(target, 300);
  e.client := auth.request_client();
  e.user_agent := auth.request_user_agent();
  e.request_id := left(audit.request_header('x-request-id'), 200);
  e.details := coalesce(details, '{}');
  e.prev_hash := head.hash;
  e.hash := audit.digest(head.hash, e);
  insert into audit.events select e.*;
  update audit.chain_heads h set last_id = e.id, hash = e.hash where h.chain = chain_key;
end
$$;

drop function auth.answer_throttled(interval, text, text, text);
drop function retention.prune_audit_trail(timestamptz, text);
drop schema retention;
drop function audit.canonical(audit.events);
revoke delete on audit.events from auth_admin;
drop table audit.switch;
alter table audit.chain_heads drop column pruned_through;
-- fails while checkpoints exist: the trail is append-only, so they cannot be taken back
alter table audit.events drop constraint events_action_check,
  add constraint events_action_check check (action in (
    'sign_up', 'sign_in_succeeded', 'sign_in_failed', 'sign_in_throttled', 'refresh',
    'refresh_reuse_detected', 'sign_out_one', 'sign_out_others', 'sign_out_all',
    'password_changed', 'password_reset_requested', 'password_reset', 'email_verified',
    'tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined',
    'member_removed', 'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested',
    'job_finished', 'job_failed'));
reset role;
drop role if exists audit_pruner;
notify pgrst, 'reload schema';
