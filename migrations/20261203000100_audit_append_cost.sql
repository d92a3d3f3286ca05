-- migrate:up
-- The audit trail at a lower cost to the actions it records (issue #21: at most 15 % fewer
-- requests per second with it). What is recorded, the hashes and the chains are unchanged:
--
-- * Chaining at commit. An event used to take its chain's head row lock when it was recorded
--   and keep it until its transaction ended, so concurrent actions of one chain (every
--   sign-in and refresh shares the account chain; a tenant's scans share its chain) waited
--   for each other's whole remaining transaction and its round trips. audit.append now writes
--   the event's content to audit.pending (unlogged: a row lives only inside its transaction),
--   and a deferred constraint trigger chains it as the transaction commits: lock the head,
--   take the next id, hash, insert into audit.events, update the head. The lock is held for
--   the commit only. Ids follow commit order within a chain, as a verifier expects; a
--   transaction's own events keep their order; a rolled-back transaction leaves nothing; an
--   event is visible (to its own transaction too) once its transaction has committed. (In
--   REPEATABLE READ or SERIALIZABLE, a head that another commit moved after the snapshot now
--   fails the commit with a serialization error, where it used to fail the recording action;
--   every writer here runs READ COMMITTED, as PostgREST does.)
-- * request.headers is parsed once per event instead of three times in each of
--   auth.request_client, auth.request_user_agent and audit.request_header (SQL functions with
--   SET search_path, which PostgreSQL neither inlines nor keeps planned across transactions).
--   The expressions are theirs, on the one parsed object.
-- * The hash is computed in place with the expression of audit.canonical / audit.digest (same
--   reason). audit.verify_chain and the export still recompute it with those functions, so a
--   drift between the copies breaks verification, which the audit tests check.
-- * The action list is a domain's check instead of the table's: a table's CHECK is prepared
--   anew for every INSERT statement, which for this list of some thirty names cost more than
--   the rest of the insert; a domain's is prepared once per session. Same names, same rule,
--   still checked when the action is recorded (audit.pending has the domain too); a later
--   migration adds an action with ALTER DOMAIN audit.event_action. The column takes the
--   domain before it has the constraint (no rewrite), which is then checked on every row.
set local role auth_admin;

create domain audit.event_action as text;
do $$
declare
  def text;
begin
  select pg_get_constraintdef(c.oid) into def from pg_constraint c
   where c.conrelid = 'audit.events'::regclass and c.conname = 'events_action_check';
  alter table audit.events drop constraint events_action_check, alter column action type audit.event_action;
  execute format('alter domain audit.event_action add constraint event_action_check %s',
                 regexp_replace(def, '^CHECK \(\(action ', 'CHECK ((VALUE '));
end
$$;

-- An event's content, from its recording to its transaction's commit (see above).
create unlogged table audit.pending (
  n          bigint generated always as identity primary key,
  chain      text not null,
  at         timestamptz not null,
  actor      uuid,
  session_id uuid,
  action     audit.event_action not null,
  tenant_id  uuid,
  user_id    uuid,
  target     text,
  client     text not null,
  user_agent text not null,
  request_id text,
  details    jsonb not null
);

create or replace function audit.append(
  action text, actor uuid, tenant uuid, account uuid, target text,
  details jsonb default '{}', session uuid default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  raw text;
  headers json;
begin
  -- autoaudit's measurement switch (audit.switch): off only while bench/audit-cost.ts runs
  if not coalesce((select s.recording from audit.switch s), true) then
    return;
  end if;
  -- a value that is not a JSON object counts as no headers, as in auth.request_client
  raw := nullif(current_setting('request.headers', true), '');
  if pg_input_is_valid(raw, 'json') then
    headers := raw::json;
    if json_typeof(headers) <> 'object' then
      headers := null;
    end if;
  end if;
  -- client, user_agent, request_id: auth.request_client, auth.request_user_agent, audit.request_header
  insert into audit.pending (chain, at, actor, session_id, action, tenant_id, user_id, target,
                             client, user_agent, request_id, details)
  values (coalesce(tenant::text, 'account'), now(), actor, coalesce(session, auth.claim_uuid('sid')), action,
          tenant, account, left(target, 300),
          coalesce(left(btrim(regexp_replace(headers ->> 'x-forwarded-for', '^.*,', ''), E' \t'), 64), ''),
          coalesce(left(headers ->> 'user-agent', 512), ''), left(headers ->> 'x-request-id', 200),
          coalesce(details, '{}'));
end
$$;

-- At commit, one pending event: appended to its chain.
create function audit.chain_pending() returns trigger
language plpgsql volatile security definer set search_path = '' as $$
declare
  e audit.events;
  prev bytea;
  head tid;
begin
  -- before the lock: what is done here is not done while other appends to the chain wait
  delete from audit.pending p where p.n = new.n;
  e.chain := new.chain;
  e.at := new.at;
  e.actor := new.actor;
  e.session_id := new.session_id;
  e.action := new.action;
  e.tenant_id := new.tenant_id;
  e.user_id := new.user_id;
  e.target := new.target;
  e.client := new.client;
  e.user_agent := new.user_agent;
  e.request_id := new.request_id;
  e.details := new.details;
  -- the chain's lock, until the commit this runs in ends
  select h.hash, h.ctid into prev, head from audit.chain_heads h where h.chain = new.chain for update;
  if not found then
    insert into audit.chain_heads (chain) values (new.chain) on conflict do nothing;
    select h.hash, h.ctid into prev, head from audit.chain_heads h where h.chain = new.chain for update;
  end if;
  e.id := nextval('audit.events_id_seq');
  e.prev_hash := prev;
  -- audit.digest(prev, e), i.e. sha256(prev || audit.canonical(e))
  e.hash := extensions.digest(coalesce(prev, ''::bytea) || convert_to(jsonb_build_array(
              e.id, e.chain, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.actor, e.session_id,
              e.action, e.tenant_id, e.user_id, e.target, e.client, e.user_agent, e.request_id, e.details)::text, 'UTF8'),
            'sha256');
  insert into audit.events select e.*;
  -- the row locked above (a locked row's ctid cannot change)
  update audit.chain_heads h set last_id = e.id, hash = e.hash where h.ctid = head;
  return null;
end
$$;

create constraint trigger chain_at_commit after insert on audit.pending
  deferrable initially deferred for each row execute function audit.chain_pending();

revoke all on audit.pending from public;
revoke all on function audit.chain_pending() from public;

reset role;

-- migrate:down
set local role auth_admin;
drop trigger chain_at_commit on audit.pending;
drop function audit.chain_pending();
drop table audit.pending;

-- As in 20261202000600_audit_completion.sql.
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

do $$
declare
  def text;
begin
  select pg_get_constraintdef(c.oid) into def from pg_constraint c
   where c.contypid = 'audit.event_action'::regtype and c.conname = 'event_action_check';
  alter table audit.events alter column action type text;
  execute format('alter table audit.events add constraint events_action_check %s',
                 regexp_replace(def, '^CHECK \(\(VALUE ', 'CHECK ((action '));
end
$$;
drop domain audit.event_action;

reset role;
