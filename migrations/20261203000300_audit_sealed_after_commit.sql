-- migrate:up
-- The audit trail sealed after commit (issue #21: recording may cost at most 15 % of the
-- requests per second of the actions it records). An event is still written by the SQL that
-- does the action, in its transaction, with everything it records; what moves out of that
-- transaction is linking it into its chain.
--
-- Why. A chain's order must be commit order (a link to an event that then rolls back would
-- break it), so linking at commit serialised every commit of a chain on the chain's head: all
-- sign-ins and refreshes share the account chain, a tenant's scans share its chain. Under load
-- the head's lock was held by a backend that the OS had just preempted, and every other commit
-- of the chain waited (20261203000100 kept the lock to the commit; it still cost 20-30 % of
-- issue_token). Now nothing on the request path takes a chain-wide lock:
--
-- * audit.append inserts the event into audit.events with its id and a content hash,
--   content_hash = sha256(audit.canonical(e)), and queues its id in audit.unsealed.
--   seq, prev_hash and hash stay null: the event is "unsealed".
-- * audit.seal() links the committed unsealed events, per chain in id order, after what the
--   chain already holds: seq is the position in the chain, prev_hash the previous event's hash,
--   hash = sha256(prev_hash || content_hash) (events recorded before this migration keep
--   sha256(prev_hash || audit.canonical(e)), which is what content_hash hashes). One UPDATE
--   per batch; the append-only trigger's test is a WHEN condition, not a function call per row. The API calls it every
--   AUDIT_SEAL_INTERVAL_MS through audit_sealing.seal (one sealer at a time, an advisory lock); audit:verify,
--   audit:export and the prune call it first. A chain's order is therefore seq order; ids still
--   identify events and order the reading functions' pages.
-- * Tamper evidence before sealing: verify_chain checks every event's content_hash, so an edit
--   made between commit and sealing is found at its row like any other. (What the chain adds,
--   detecting a removed event, covers an event from its sealing on.)
-- * Sealing is the one change an event may undergo: the owner may update only seq, prev_hash
--   and hash (column privileges), and the append-only trigger lets through only an update
--   that sets them on an event that has none and changes nothing else.
-- * Retention prunes a seq prefix; new checkpoints say pruned_through_seq as well as the id.
--   Checkpoints written before this migration (ids only) are still read: every event they
--   leave has a larger id, and the migration numbers the existing events in id order.
set local role auth_admin;

drop trigger chain_at_commit on audit.pending;
drop function audit.chain_pending();
drop table audit.pending;

alter table audit.events add column seq bigint, add column content_hash bytea, alter column hash drop not null;
-- room on each page for the sealed version of its rows, so sealing is a HOT update
alter table audit.events set (fillfactor = 60);
alter table audit.chain_heads add column last_seq bigint, add column pruned_through_seq bigint;

-- The chain positions of the events recorded so far: their id order, the order they were linked in.
reset role;
alter table audit.events disable trigger events_append_only;
update audit.events e set seq = n.seq
  from (select v.id, row_number() over (partition by v.chain order by v.id) as seq from audit.events v) n
 where n.id = e.id;
alter table audit.events enable trigger events_append_only;
set local role auth_admin;
update audit.chain_heads h set last_seq = (select max(e.seq) from audit.events e where e.chain = h.chain);

-- The ids of committed events that audit.seal has not linked yet (no index: it takes them all).
create table audit.unsealed (id bigint not null);

create or replace function audit.append(
  action text, actor uuid, tenant uuid, account uuid, target text,
  details jsonb default '{}', session uuid default null
) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  raw text;
  headers json;
  e audit.events;
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
  e.id := nextval('audit.events_id_seq');
  e.chain := coalesce(tenant::text, 'account');
  e.at := now();
  e.actor := actor;
  e.session_id := coalesce(session, auth.claim_uuid('sid'));
  e.action := action;
  e.tenant_id := tenant;
  e.user_id := account;
  e.target := left(target, 300);
  -- auth.request_client, auth.request_user_agent, audit.request_header, on the one parsed object
  e.client := coalesce(left(btrim(regexp_replace(headers ->> 'x-forwarded-for', '^.*,', ''), E' \t'), 64), '');
  e.user_agent := coalesce(left(headers ->> 'user-agent', 512), '');
  e.request_id := left(headers ->> 'x-request-id', 200);
  e.details := coalesce(details, '{}');
  -- sha256(audit.canonical(e)), in place (a SQL function is parsed again on every call)
  e.content_hash := extensions.digest(convert_to(jsonb_build_array(
              e.id, e.chain, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), e.actor, e.session_id,
              e.action, e.tenant_id, e.user_id, e.target, e.client, e.user_agent, e.request_id, e.details)::text, 'UTF8'),
            'sha256');
  insert into audit.events select e.*;
  insert into audit.unsealed (id) values (e.id);
end
$$;

-- Links committed unsealed events into their chains (up to 5000 per call); the number linked.
-- One sealer at a time: with wait false it returns 0 at once when another is at work (the
-- API's timer).
-- hash = sha256(prev_hash || content_hash): the content was hashed when it was recorded.
create function audit.seal(wait boolean default true) returns bigint
language plpgsql volatile security definer set search_path = '' as $$
declare
  queued bigint[];
  ids bigint[];
  chains text[];
  contents bytea[];
  seqs bigint[] := '{}';
  prevs bytea[] := '{}';
  hashes bytea[] := '{}';
  chain_key text;
  prev bytea;
  pos bigint;
  n int;
begin
  if wait then
    perform pg_advisory_xact_lock(hashtext('audit.seal'));
  elsif not pg_try_advisory_xact_lock(hashtext('audit.seal')) then
    return 0;
  end if;
  -- the oldest 5000 at most, so one call is a short transaction however long sealing waited
  -- (a caller that got 5000 calls again), and a transaction's own events keep their order
  with taken as (
    delete from audit.unsealed u where u.ctid = any (array(select q.ctid from audit.unsealed q order by q.id limit 5000)) returning u.id
  ) select array_agg(t.id) into queued from taken t;
  if queued is null then
    return 0;
  end if;
  select array_agg(v.id order by v.chain, v.id), array_agg(v.chain order by v.chain, v.id),
         array_agg(v.content_hash order by v.chain, v.id)
    into ids, chains, contents
    from audit.events v where v.id = any (queued) and v.hash is null;
  n := coalesce(array_length(ids, 1), 0);
  for i in 1 .. n loop
    if chain_key is distinct from chains[i] then
      if chain_key is not null then
        update audit.chain_heads h set last_id = ids[i - 1], last_seq = pos, hash = prev where h.chain = chain_key;
      end if;
      chain_key := chains[i];
      -- the chain's lock (a prune of it waits), until this transaction ends
      insert into audit.chain_heads (chain) values (chain_key) on conflict do nothing;
      select h.hash, coalesce(h.last_seq, 0) into prev, pos from audit.chain_heads h where h.chain = chain_key for update;
    end if;
    pos := pos + 1;
    seqs[i] := pos;
    prevs[i] := prev;
    -- an event without a content hash (only a hand edit makes one) is linked all the same, so
    -- sealing goes on; verify_chain reports it
    prev := extensions.digest(coalesce(prev, ''::bytea) || coalesce(contents[i], ''::bytea), 'sha256');
    hashes[i] := prev;
  end loop;
  if n > 0 then
    update audit.chain_heads h set last_id = ids[n], last_seq = pos, hash = prev where h.chain = chain_key;
    update audit.events v set seq = u.seq, prev_hash = u.prev, hash = u.hash
      from unnest(ids, seqs, prevs, hashes) as u(id, seq, prev, hash) where v.id = u.id;
  end if;
  return n;
end
$$;

create or replace function audit.refuse_change() returns trigger
language plpgsql set search_path = '' as $$
begin
  -- the prune removes what its checkpoint covers; nothing else may go (TRUNCATE has no old row)
  if tg_op = 'DELETE' then
    if old.seq <= (select h.pruned_through_seq from audit.chain_heads h where h.chain = old.chain)
       or old.id <= (select h.pruned_through from audit.chain_heads h where h.chain = old.chain) then
      return old;
    end if;
  end if;
  raise exception using errcode = '42501', message = 'audit events are append-only';
end
$$;

-- An update is refused unless it is a sealing (audit.seal): the position and hashes of an
-- event that has none, and nothing else. A WHEN condition, so sealing runs no function per row.
drop trigger events_append_only on audit.events;
create trigger events_append_only before delete on audit.events
  for each row execute function audit.refuse_change();
create trigger events_sealed_once before update on audit.events
  for each row when (not (
    old.hash is null and old.seq is null and old.prev_hash is null and new.hash is not null and new.seq is not null
    and (new.id, new.chain, new.at, new.actor, new.session_id, new.action, new.tenant_id, new.user_id, new.target,
         new.client, new.user_agent, new.request_id, new.details, new.content_hash)
        is not distinct from
        (old.id, old.chain, old.at, old.actor, old.session_id, old.action, old.tenant_id, old.user_id, old.target,
         old.client, old.user_agent, old.request_id, old.details, old.content_hash)))
  execute function audit.refuse_change();

-- Recomputes one chain in seq order, from its latest checkpoint when it was pruned, then checks
-- the content hash of the events not sealed yet: {chain, ok, checked, first_broken_id}.
create or replace function audit.verify_chain(chain_key text) returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  e audit.events;
  prev bytea;
  start_after bigint := 0;
  start_after_seq bigint;
  checked bigint := 0;
  head audit.chain_heads;
  checkpoint audit.events;
begin
  select * into checkpoint from audit.events v
   where v.chain = chain_key and v.action = 'trail_pruned' and v.seq is not null order by v.seq desc limit 1;
  if checkpoint.id is not null then
    start_after := case when pg_input_is_valid(checkpoint.details ->> 'pruned_through_id', 'int8')
                        then (checkpoint.details ->> 'pruned_through_id')::bigint end;
    -- checkpoints from before 20261203000300 have no seq: what they leave has larger ids
    if checkpoint.details ? 'pruned_through_seq' then
      start_after_seq := case when pg_input_is_valid(checkpoint.details ->> 'pruned_through_seq', 'int8')
                              then (checkpoint.details ->> 'pruned_through_seq')::bigint end;
      if start_after_seq is null or start_after_seq >= checkpoint.seq then
        return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', checkpoint.id);
      end if;
    end if;
    prev := case when (checkpoint.details ->> 'pruned_through_hash') ~ '^[0-9a-f]{64}$'
                 then decode(checkpoint.details ->> 'pruned_through_hash', 'hex') end;
    -- a checkpoint covers only events before itself, so its own link is always checked
    if start_after is null or prev is null or start_after >= checkpoint.id then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', checkpoint.id);
    end if;
  end if;
  for e in select * from audit.events v
            where v.chain = chain_key and v.seq is not null
              and (case when start_after_seq is not null then v.seq > start_after_seq else v.id > start_after end)
            order by v.seq loop
    -- recorded before 20261203000300: hash = sha256(prev || canonical); since: sha256(prev || content_hash)
    if e.prev_hash is distinct from prev
       or (e.content_hash is null and e.hash is distinct from audit.digest(prev, e))
       or (e.content_hash is not null and (e.content_hash is distinct from extensions.digest(convert_to(audit.canonical(e), 'UTF8'), 'sha256')
                                           or e.hash is distinct from extensions.digest(coalesce(prev, ''::bytea) || e.content_hash, 'sha256'))) then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', e.id);
    end if;
    checked := checked + 1;
    prev := e.hash;
  end loop;
  select * into head from audit.chain_heads h where h.chain = chain_key;
  if head.hash is distinct from prev then
    -- the newest sealed rows were removed (or the head was changed)
    return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', head.last_id);
  end if;
  for e in select * from audit.events v where v.chain = chain_key and v.seq is null order by v.id loop
    if e.hash is not null or e.prev_hash is not null or e.content_hash is null
       or e.content_hash is distinct from extensions.digest(convert_to(audit.canonical(e), 'UTF8'), 'sha256') then
      return json_build_object('chain', chain_key, 'ok', false, 'checked', checked, 'first_broken_id', e.id);
    end if;
    checked := checked + 1;
  end loop;
  return json_build_object('chain', chain_key, 'ok', true, 'checked', checked, 'first_broken_id', null);
end
$$;

-- As in 20261202000600_audit_completion.sql, over the chain's seq prefix, sealing first (so
-- the prefix is all linked) and last (so the checkpoints it appends are linked when it commits).
create or replace function retention.prune_audit_trail(cutoff timestamptz, only_chain text default null) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  c record;
  first_kept bigint;
  through bigint;
  through_seq bigint;
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
  loop
    exit when audit.seal() < 5000;
  end loop;
  for c in select h.chain from audit.chain_heads h where only_chain is null or h.chain = only_chain order by h.chain loop
    -- the chain's lock (as audit.seal takes it)
    perform from audit.chain_heads h where h.chain = c.chain for update;
    -- events are sealed in commit order but stamped with their transaction's start, so "older
    -- than the cutoff" is taken as the seq prefix before the first event that is not
    select min(e.seq) into first_kept from audit.events e where e.chain = c.chain and e.seq is not null and e.at >= cutoff;
    select count(*), max(e.seq), min(e.at), max(e.at), bool_and(e.action = 'trail_pruned')
      into n, through_seq, oldest, newest, only_checkpoints
      from audit.events e where e.chain = c.chain and e.seq is not null and (first_kept is null or e.seq < first_kept);
    continue when n = 0 or only_checkpoints;
    select e.id, e.hash into through, through_hash from audit.events e where e.chain = c.chain and e.seq = through_seq;
    update audit.chain_heads h set pruned_through_seq = through_seq where h.chain = c.chain;
    delete from audit.events e where e.chain = c.chain and e.seq <= through_seq;
    perform audit.append('trail_pruned', null, case when c.chain = 'account' then null else c.chain::uuid end, null, null,
      jsonb_build_object('pruned_through_id', through, 'pruned_through_seq', through_seq,
        'pruned_through_hash', encode(through_hash, 'hex'), 'pruned_events', n,
        'cutoff', to_char(cutoff at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'oldest_at', to_char(oldest at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'newest_at', to_char(newest at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')));
    chains := chains || jsonb_build_object('chain', c.chain, 'pruned_events', n, 'pruned_through_id', through);
    total := total + n;
  end loop;
  loop
    exit when audit.seal() < 5000;
  end loop;
  return json_build_object('pruned_events', total, 'chains', chains);
end
$$;

revoke all on table audit.unsealed from public;
revoke all on function audit.seal(boolean) from public;
-- Sealing updates as the owner; the append-only trigger limits it to unsealed events.
grant update (seq, prev_hash, hash) on audit.events to auth_admin;

-- What the API's own login (the authenticator) may use to seal: this schema and its one
-- function (the audit schema stays closed, as for audit_pruner's retention schema).
create schema audit_sealing;
create function audit_sealing.seal(wait boolean default false) returns bigint
language plpgsql volatile security definer set search_path = '' as $$
begin
  return audit.seal(wait);
end
$$;
revoke all on function audit_sealing.seal(boolean) from public;
reset role;
grant usage on schema audit_sealing to authenticator;
grant execute on function audit_sealing.seal(boolean) to authenticator;
-- migrate:down
-- Back to linking at commit: everything is sealed, then every chain is linked again in id
-- order with hash = sha256(prev_hash || canonical), what the functions restored here verify.
-- A chain's first event keeps its prev_hash (after a prune, the hash its checkpoint names).
do $$
begin
  loop
    exit when audit.seal() < 5000;
  end loop;
end
$$;
alter table audit.events disable trigger events_sealed_once;
do $$
declare
  e record;
  chain_key text;
  prev bytea;
begin
  for e in select v.* from audit.events v order by v.chain, v.id loop
    if chain_key is distinct from e.chain then
      chain_key := e.chain;
      prev := e.prev_hash;
    end if;
    update audit.events v
       set prev_hash = prev,
           hash = audit.digest(prev, (e.id, e.chain, e.at, e.actor, e.session_id, e.action, e.tenant_id, e.user_id, e.target,
                                      e.client, e.user_agent, e.request_id, e.details, null, null, null, null)::audit.events)
     where v.id = e.id
     returning v.hash into prev;
    update audit.chain_heads h set last_id = e.id, hash = prev where h.chain = e.chain;
  end loop;
end
$$;
drop trigger events_sealed_once on audit.events;
drop trigger events_append_only on audit.events;
create trigger events_append_only before update or delete on audit.events
  for each row execute function audit.refuse_change();

set local role auth_admin;
drop schema audit_sealing cascade;
drop function audit.seal(boolean);
drop table audit.unsealed;

-- As in 20261202000600_audit_completion.sql.
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

-- As in 20261202000600_audit_completion.sql.
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

-- As in 20261202000600_audit_completion.sql.
create or replace function retention.prune_audit_trail(cutoff timestamptz, only_chain text default null) returns json
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

reset role;
revoke update (seq, prev_hash, hash) on audit.events from auth_admin;
set local role auth_admin;
alter table audit.chain_heads drop column last_seq, drop column pruned_through_seq;
alter table audit.events drop column seq, drop column content_hash, alter column hash set not null;
alter table audit.events reset (fillfactor);

-- As in 20261203000100_audit_append_cost.sql.
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
