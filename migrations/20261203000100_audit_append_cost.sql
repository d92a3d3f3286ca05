-- migrate:up
-- audit.append at a lower cost per event (issue #21: the trail may cost the hot paths at most
-- 15 % of their requests per second). What it records, the hashes and the chains are unchanged;
-- only the work per event is less:
--
-- * request.headers is parsed once per event, in the function itself, instead of three times in
--   each of auth.request_client, auth.request_user_agent and audit.request_header (SQL functions
--   with SET search_path, which PostgreSQL can neither inline nor keep the plan of across
--   transactions). The expressions are theirs, on the one parsed object.
-- * The hash is computed in place with the expression of audit.canonical / audit.digest (same
--   reason). audit.verify_chain and the export still recompute it with those functions, so any
--   drift between the copies breaks verification, which the audit tests check for every event.
-- * The chain's head row is locked with one SELECT … FOR UPDATE; only a chain's first event
--   inserts it (and a concurrent first event waits on that insert, then finds the row).
-- * The action list is a domain's check instead of the table's: a table's CHECK is prepared
--   anew for every INSERT statement, which for this list of some thirty names cost more than
--   the rest of the insert; a domain's is prepared once per session. Same names, same rule;
--   a later migration adds an action with ALTER DOMAIN audit.event_action. The column takes
--   the domain before it has the constraint (no rewrite), which is then checked on every row.
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

create or replace function audit.append(
  action text, actor uuid, tenant uuid, account uuid, target text,
  details jsonb default '{}', session uuid default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  e audit.events;
  chain_key text := coalesce(tenant::text, 'account');
  raw text;
  headers json;
  prev bytea;
begin
  -- autoaudit's measurement switch (audit.switch): off only while bench/audit-cost.ts runs
  if not coalesce((select s.recording from audit.switch s), true) then
    return;
  end if;
  -- the chain's lock: appends to one chain are serialized until their transactions end
  select h.hash into prev from audit.chain_heads h where h.chain = chain_key for update;
  if not found then
    insert into audit.chain_heads (chain) values (chain_key) on conflict do nothing;
    select h.hash into prev from audit.chain_heads h where h.chain = chain_key for update;
  end if;
  -- a value that is not a JSON object counts as no headers, as in auth.request_client
  raw := nullif(current_setting('request.headers', true), '');
  if pg_input_is_valid(raw, 'json') then
    headers := raw::json;
    if json_typeof(headers) <> 'object' then
      headers := null;
    end if;
  end if;
  e.id := nextval('audit.events_id_seq');
  e.chain := chain_key;
  e.at := now();
  e.actor := actor;
  e.session_id := coalesce(session, auth.claim_uuid('sid'));
  e.action := action;
  e.tenant_id := tenant;
  e.user_id := account;
  e.target := left(target, 300);
  -- auth.request_client, auth.request_user_agent and audit.request_header('x-request-id')
  e.client := coalesce(left(btrim(regexp_replace(headers ->> 'x-forwarded-for', '^.*,', ''), E' \t'), 64), '');
  e.user_agent := coalesce(left(headers ->> 'user-agent', 512), '');
  e.request_id := left(headers ->> 'x-request-id', 200);
  e.details := coalesce(details, '{}');
  e.prev_hash := prev;
  -- audit.digest(prev, e), i.e. sha256(prev || audit.canonical(e))
  e.hash := extensions.digest(coalesce(prev, ''::bytea) || convert_to(jsonb_build_array(
              e.id, e.chain, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.actor, e.session_id,
              e.action, e.tenant_id, e.user_id, e.target, e.client, e.user_agent, e.request_id, e.details)::text, 'UTF8'),
            'sha256');
  insert into audit.events select e.*;
  update audit.chain_heads h set last_id = e.id, hash = e.hash where h.chain = chain_key;
end
$$;

reset role;

-- migrate:down
set local role auth_admin;

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
