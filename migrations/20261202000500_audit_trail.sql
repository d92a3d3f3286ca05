-- migrate:up
-- A tamper-evident audit trail, written by the database itself.
--
-- * audit.events is append-only: one row per action, written by AFTER triggers on the tables
--   whose changes are the actions, so every path (any API function, the worker, plain SQL)
--   records them, in the same transaction: a rolled-back change leaves no event.
-- * Failed sign-ins: api.sign_in does not raise on a wrong password (that would roll back the
--   throttle count); it commits an update of auth.sign_in_throttle and answers 401 through
--   response.status. The trigger on that table therefore records "sign_in_failed" durably.
--   A refusal while blocked (429) raises and rolls back, so it cannot be recorded this way:
--   the failure that starts a block carries blocked_until in its details instead.
-- * Tamper evidence: rows form hash chains, one per tenant and one ('account') for account
--   events. hash = sha256(previous hash || canonical text of the row); audit.chain_heads keeps
--   each chain's latest hash (its row lock serializes appends to a chain). audit.verify_chain
--   recomputes a chain and reports the first broken link. A superuser who rewrites a chain and
--   its head consistently is not detected unless the latest hash is also kept elsewhere.
-- * No role the API uses may update, delete or truncate events (no grant, and triggers raise).
set local role auth_admin;

create schema audit;

create sequence audit.events_id_seq;

create table audit.events (
  id         bigint primary key,
  chain      text not null,
  at         timestamptz not null,
  actor      uuid,
  session_id uuid,
  action     text not null check (action in (
               'sign_up', 'sign_in_succeeded', 'sign_in_failed', 'sign_in_throttled', 'refresh',
               'refresh_reuse_detected', 'sign_out_one', 'sign_out_others', 'sign_out_all',
               'password_changed', 'password_reset_requested', 'password_reset', 'email_verified',
               'tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined',
               'member_removed', 'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested',
               'job_finished', 'job_failed')),
  -- no foreign keys: the trail outlives what it talks about
  tenant_id  uuid,
  -- the account the event concerns (account chain), for my_security_events
  user_id    uuid,
  target     text,
  client     text not null default '',
  user_agent text not null default '',
  request_id text,
  details    jsonb not null default '{}',
  prev_hash  bytea,
  hash       bytea not null
);
create index events_by_chain on audit.events (chain, id);
create index events_by_user on audit.events (user_id, id) where user_id is not null;
create index events_by_tenant on audit.events (tenant_id, id) where tenant_id is not null;

create table audit.chain_heads (
  chain   text primary key,
  last_id bigint,
  hash    bytea
);

-- ── helpers ──────────────────────────────────────────────────────────────

create function audit.request_header(header text) returns text
language sql stable set search_path = '' as $$
  select h.headers ->> header
    from (select case when pg_input_is_valid(raw, 'json') and json_typeof(raw::json) = 'object' then raw::json end as headers
            from (select nullif(current_setting('request.headers', true), '') as raw) r) h
$$;

-- The canonical text of an event (everything but its hashes), independent of TimeZone and DateStyle.
create function audit.digest(prev bytea, e audit.events) returns bytea
language sql immutable set search_path = '' as $$
  select extensions.digest(coalesce(prev, ''::bytea) || convert_to(jsonb_build_array(
           e.id, e.chain, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.actor, e.session_id,
           e.action, e.tenant_id, e.user_id, e.target, e.client, e.user_agent, e.request_id, e.details)::text, 'UTF8'),
         'sha256')
$$;

create function audit.append(
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

create function audit.refuse_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using errcode = '42501', message = 'audit events are append-only';
end
$$;

create trigger events_append_only before update or delete on audit.events
  for each row execute function audit.refuse_change();
create trigger events_no_truncate before truncate on audit.events
  for each statement execute function audit.refuse_change();

-- Recomputes one chain in order: {chain, ok, checked, first_broken_id}.
create function audit.verify_chain(chain_key text) returns json
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

create function audit.event_json(e audit.events) returns json
language sql immutable set search_path = '' as $$
  select json_build_object('id', e.id, 'at', e.at, 'action', e.action, 'actor', e.actor, 'session_id', e.session_id,
    'tenant_id', e.tenant_id, 'user_id', e.user_id, 'target', e.target, 'client', e.client,
    'user_agent', e.user_agent, 'request_id', e.request_id, 'details', e.details,
    'hash', encode(e.hash, 'hex'), 'cursor', e.id)
$$;

-- ── the triggers that record ─────────────────────────────────────────────

create function audit.on_user() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform audit.append('sign_up', new.id, null, new.id, new.id::text);
  return null;
end
$$;
create trigger audit_sign_up after insert on auth.users for each row execute function audit.on_user();

create function audit.on_session() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  act text;
begin
  if tg_op = 'INSERT' then
    perform audit.append('sign_in_succeeded', new.user_id, null, new.user_id, new.id::text, '{}', new.id);
  elsif old.revoked_at is null and new.revoked_at is not null then
    act := case new.revoked_reason
             when 'logout' then 'sign_out_one' when 'revoked' then 'sign_out_one'
             when 'revoked_others' then 'sign_out_others' when 'logout_all' then 'sign_out_all'
             when 'reuse_detected' then 'refresh_reuse_detected' end;
    -- sessions ended by a password change or reset are counted in that event's details
    if act is not null then
      perform audit.append(act, coalesce(auth.claim_uuid('sub'), new.user_id), null, new.user_id, new.id::text,
                           '{}', coalesce(auth.claim_uuid('sid'), new.id));
    end if;
  elsif new.revoked_at is null and new.last_refreshed_at is distinct from old.last_refreshed_at then
    perform audit.append('refresh', new.user_id, null, new.user_id, new.id::text, '{}', new.id);
  end if;
  return null;
end
$$;
create trigger audit_sessions after insert or update on auth.sessions for each row execute function audit.on_session();

create function audit.on_account_event() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform audit.append(new.kind, coalesce(auth.claim_uuid('sub'), new.user_id), null, new.user_id,
                       new.user_id::text, new.details);
  return null;
end
$$;
create trigger audit_account_events after insert on auth.account_events
  for each row execute function audit.on_account_event();

create function audit.on_mail() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  account uuid;
begin
  if new.template = 'reset_password' then
    select u.id into account from auth.users u where u.email = new.recipient;
    perform audit.append('password_reset_requested', auth.claim_uuid('sub'), null, account, account::text,
                         jsonb_build_object('known_account', account is not null));
  end if;
  return null;
end
$$;
create trigger audit_mail after insert on auth.mail_outbox for each row execute function audit.on_mail();

create function audit.on_sign_in_failure() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  account uuid;
begin
  if new.updated_at is distinct from old.updated_at and new.failures > 0
     and (new.failures, new.window_started_at) is distinct from (old.failures, old.window_started_at) then
    select u.id into account from auth.users u where u.email = new.email;
    perform audit.append('sign_in_failed', null, null, account, account::text,
                         jsonb_build_object('failures', new.failures, 'known_account', account is not null,
                                            'blocked_until', new.blocked_until));
  end if;
  return null;
end
$$;
create trigger audit_sign_in_failure after update on auth.sign_in_throttle
  for each row execute function audit.on_sign_in_failure();

create function audit.on_tenant() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform audit.append('tenant_created', coalesce(auth.claim_uuid('sub'), new.created_by), new.id, null, new.id::text,
                       jsonb_build_object('name', new.name));
  return null;
end
$$;
create trigger audit_tenants after insert on compliance.tenants for each row execute function audit.on_tenant();

create function audit.on_invitation() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  actor uuid := auth.claim_uuid('sub');
begin
  if new.status = 'pending' and (tg_op = 'INSERT' or old.status <> 'pending' or new.created_at <> old.created_at) then
    perform audit.append('invitation_sent', coalesce(actor, new.invited_by), new.tenant_id, null, new.email,
                         jsonb_build_object('role', new.role));
  elsif tg_op = 'UPDATE' and old.status = 'pending' and new.status in ('accepted', 'declined') then
    perform audit.append('invitation_' || new.status, actor, new.tenant_id, null, new.email,
                         jsonb_build_object('role', new.role));
  end if;
  return null;
end
$$;
create trigger audit_invitations after insert or update on compliance.invitations
  for each row execute function audit.on_invitation();

create function audit.on_member() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'DELETE' then
    perform audit.append('member_removed', auth.claim_uuid('sub'), old.tenant_id, null, old.user_id::text,
                         jsonb_build_object('role', old.role));
  elsif new.role <> old.role then
    perform audit.append('role_changed', auth.claim_uuid('sub'), new.tenant_id, null, new.user_id::text,
                         jsonb_build_object('role', new.role, 'previous_role', old.role));
  end if;
  return null;
end
$$;
create trigger audit_members after update or delete on compliance.tenant_members
  for each row execute function audit.on_member();

-- Statement level: one event per statement and tenant (an upsert that both inserts and
-- updates rules fires the UPDATE and the INSERT statement triggers: one event each).
create function audit.on_rules() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  t record;
begin
  for t in select c.tenant_id, array_agg(distinct c.framework) as frameworks, count(*) as n
             from changed c group by c.tenant_id loop
    perform audit.append('rules_upserted', auth.claim_uuid('sub'), t.tenant_id, null, array_to_string(t.frameworks, ','),
                         jsonb_build_object(case tg_op when 'INSERT' then 'inserted' else 'updated' end, t.n,
                                            'frameworks', to_jsonb(t.frameworks)));
  end loop;
  return null;
end
$$;
create trigger audit_rules_insert after insert on compliance.rules referencing new table as changed
  for each statement execute function audit.on_rules();
create trigger audit_rules_update after update on compliance.rules referencing new table as changed
  for each statement execute function audit.on_rules();

-- A scan a user submits; a scan the worker records is part of its job's job_finished event.
create function audit.on_scan() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if auth.claim_uuid('sub') is not null then
    perform audit.append('scan_submitted', auth.claim_uuid('sub'), new.tenant_id, null, new.id::text,
                         jsonb_build_object('framework', new.framework));
  end if;
  return null;
end
$$;
create trigger audit_scans after insert on compliance.scans for each row execute function audit.on_scan();

create function audit.on_scan_job() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' then
    perform audit.append('scan_requested', coalesce(auth.claim_uuid('sub'), new.requested_by), new.tenant_id, null,
                         new.id::text, jsonb_build_object('framework', new.framework));
  elsif new.status is distinct from old.status and new.status in ('done', 'failed') then
    perform audit.append(case new.status when 'done' then 'job_finished' else 'job_failed' end, auth.claim_uuid('sub'),
                         new.tenant_id, null, new.id::text,
                         jsonb_build_object('framework', new.framework, 'attempts', new.attempts, 'worker', new.worker));
  end if;
  return null;
end
$$;
create trigger audit_scan_jobs after insert or update on compliance.scan_jobs
  for each row execute function audit.on_scan_job();

-- ── the API ──────────────────────────────────────────────────────────────

create function audit.check_page(page_size int, before bigint) returns void
language plpgsql immutable set search_path = '' as $$
begin
  if page_size is null or page_size not between 1 and 100 then
    raise exception using errcode = '22023', message = 'page_size must be between 1 and 100';
  end if;
  if before is not null and before < 1 then
    raise exception using errcode = '22023', message = 'before is not a valid cursor',
      hint = 'Pass the next_before of the previous page.';
  end if;
end
$$;

create function api.my_security_events(before bigint default null, page_size int default 20) returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  uid uuid := auth.current_user_id();
  page json;
  next_before bigint;
begin
  perform audit.check_page(page_size, before);
  select coalesce(json_agg(audit.event_json(e) order by e.id desc), '[]'),
         case when count(*) = page_size then min(e.id) end
    into page, next_before
    from (select * from audit.events e
           where e.user_id = uid and e.chain = 'account' and (my_security_events.before is null or e.id < my_security_events.before)
           order by e.id desc limit page_size) e;
  if next_before is not null and not exists (
       select from audit.events e where e.user_id = uid and e.chain = 'account' and e.id < next_before) then
    next_before := null;
  end if;
  return json_build_object('events', page, 'next_before', next_before);
end
$$;

create function api.tenant_audit(tenant_id uuid, before bigint default null, page_size int default 20, action text default null)
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

create function api.verify_audit_trail(tenant_id uuid) returns json
language plpgsql stable security definer set search_path = '' as $$
begin
  perform compliance.require_role(verify_audit_trail.tenant_id, 'admin');
  return audit.verify_chain(verify_audit_trail.tenant_id::text);
end
$$;

comment on function api.my_security_events(bigint, int) is
  'The signed-in user''s account events (sign-ins, sign-outs, password and email changes), newest first, page_size (1-100) at a time; pass next_before as before.';
comment on function api.tenant_audit(uuid, bigint, int, text) is
  'Admin: the tenant''s audit trail, newest first, page_size (1-100) at a time, optionally of one action; pass next_before as before.';
comment on function api.verify_audit_trail(uuid) is
  'Admin: recompute the tenant''s hash chain: {ok, checked, first_broken_id}.';

revoke all on all tables in schema audit from public;
revoke all on sequence audit.events_id_seq from public;
-- Not even the owner keeps the right to change events (the triggers refuse it as well).
revoke update, delete, truncate on audit.events from auth_admin;
revoke all on all functions in schema audit from public;
revoke all on function api.my_security_events(bigint, int), api.tenant_audit(uuid, bigint, int, text),
  api.verify_audit_trail(uuid) from public;
grant execute on function api.my_security_events(bigint, int), api.tenant_audit(uuid, bigint, int, text),
  api.verify_audit_trail(uuid) to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;
drop function api.verify_audit_trail(uuid);
drop function api.tenant_audit(uuid, bigint, int, text);
drop function api.my_security_events(bigint, int);
drop trigger audit_scan_jobs on compliance.scan_jobs;
drop trigger audit_scans on compliance.scans;
drop trigger audit_rules_update on compliance.rules;
drop trigger audit_rules_insert on compliance.rules;
drop trigger audit_members on compliance.tenant_members;
drop trigger audit_invitations on compliance.invitations;
drop trigger audit_tenants on compliance.tenants;
drop trigger audit_sign_in_failure on auth.sign_in_throttle;
drop trigger audit_mail on auth.mail_outbox;
drop trigger audit_account_events on auth.account_events;
drop trigger audit_sessions on auth.sessions;
drop trigger audit_sign_up on auth.users;
drop schema audit cascade;
reset role;
notify pgrst, 'reload schema';
