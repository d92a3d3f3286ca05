-- migrate:up
-- The scan-job queue. Postgres is the source of truth; the Redis Stream only carries "job X
-- is ready" and may lose or duplicate that message without harm:
-- * request_scan inserts a job (status queued, published_at null): an outbox row. A relay
--   (api/src/queue/relay.ts) publishes such rows with XADD and then sets published_at, so a
--   job requested while Redis is down is published when it returns.
-- * A worker starts a job with a conditional UPDATE that hands out a fresh lease; only the
--   holder of the current lease can finish or fail it, so a job is finished at most once even
--   when a stream entry is delivered twice or a presumed-dead worker wakes up.
-- * Running jobs keep a heartbeat; a job whose heartbeat is stale may be taken over.

-- The worker's database identity: it needs the queue functions below and nothing else.
do $$
begin
  if not exists (select from pg_roles where rolname = 'scan_worker') then
    create role scan_worker nologin;
  end if;
end
$$;

set local role auth_admin;

create table compliance.scan_jobs (
  id           uuid primary key default gen_random_uuid(),
  tenant_id    uuid not null references compliance.tenants (id) on delete cascade,
  framework    text not null check (framework ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  options      jsonb not null default '{}'
               check (jsonb_typeof(options) = 'object' and octet_length(options::text) <= 16384),
  requested_by uuid references auth.users (id) on delete set null,
  status       text not null default 'queued' check (status in ('queued', 'running', 'done', 'failed')),
  attempts     int not null default 0 check (attempts >= 0),
  max_attempts int not null default 3 check (max_attempts between 1 and 20),
  -- the current attempt's token: finishing or failing requires it
  lease        uuid,
  worker       text check (length(worker) <= 200),
  heartbeat_at timestamptz,
  -- outbox state: null while the job still has to be put on the stream
  published_at timestamptz,
  stream_id    text,
  started_at   timestamptz,
  finished_at  timestamptz,
  error        text check (length(error) <= 2000),
  scan_id      uuid,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  foreign key (scan_id, tenant_id) references compliance.scans (id, tenant_id) on delete set null (scan_id),
  check ((status = 'running') = (lease is not null)),
  check ((status in ('done', 'failed')) = (finished_at is not null))
);
create index scan_jobs_outbox on compliance.scan_jobs (created_at) where status = 'queued' and published_at is null;
create index scan_jobs_running on compliance.scan_jobs (heartbeat_at) where status = 'running';
create index scan_jobs_by_tenant on compliance.scan_jobs (tenant_id, created_at desc);

alter table compliance.scan_jobs enable row level security;
create policy member_reads on compliance.scan_jobs for select to authenticated
  using (tenant_id in (select compliance.my_tenant_ids()));

create function compliance.scan_job_json(j compliance.scan_jobs) returns json
language sql immutable set search_path = '' as $$
  select json_build_object(
    'id', j.id, 'tenant_id', j.tenant_id, 'framework', j.framework, 'options', j.options,
    'status', j.status, 'attempts', j.attempts, 'max_attempts', j.max_attempts, 'error', j.error,
    'scan_id', j.scan_id, 'requested_by', j.requested_by, 'created_at', j.created_at,
    'published_at', j.published_at, 'started_at', j.started_at, 'finished_at', j.finished_at)
$$;

-- ── the API ──────────────────────────────────────────────────────────────

create function api.request_scan(tenant_id uuid, framework text, options jsonb default '{}') returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  created compliance.scan_jobs;
begin
  perform compliance.require_role(request_scan.tenant_id, 'auditor');
  perform compliance.check_framework(request_scan.framework);
  if jsonb_typeof(coalesce(options, '{}')) <> 'object' or octet_length(options::text) > 16384 then
    raise exception using errcode = '22023', message = 'options must be a JSON object of at most 16 KiB';
  end if;
  if not exists (select from compliance.rules r
                  where r.tenant_id = request_scan.tenant_id and r.framework = request_scan.framework) then
    raise exception using errcode = '22023', message = 'the tenant has no rules for this framework',
      hint = 'An admin loads them with upsert_rules first.';
  end if;
  insert into compliance.scan_jobs (tenant_id, framework, options, requested_by)
  values (request_scan.tenant_id, request_scan.framework, coalesce(options, '{}'), auth.current_user_id())
  returning * into created;
  -- Wakes the relay at commit; if nobody listens, its periodic sweep finds the row.
  perform pg_notify('compliance_scan_jobs', created.id::text);
  return compliance.scan_job_json(created);
end
$$;

create function api.scan_job(job_id uuid) returns json
language plpgsql stable set search_path = '' as $$
declare
  result json;
begin
  if job_id is null then
    raise exception using errcode = '22023', message = 'job_id is required';
  end if;
  -- RLS: jobs of other tenants are not found.
  select compliance.scan_job_json(j) into result from compliance.scan_jobs j where j.id = scan_job.job_id;
  if result is null then
    raise exception using errcode = 'PT404', message = 'scan job not found';
  end if;
  return result;
end
$$;

comment on function api.request_scan(uuid, text, jsonb) is
  'Auditor: queue a scan of the tenant against a framework. Returns the job; follow it with scan_job.';
comment on function api.scan_job(uuid) is
  'A scan job''s status (queued, running, done, failed), attempts and, when done, the scan it produced.';

-- ── the worker's functions (not exposed; granted to scan_worker) ─────────

-- Outbox: the oldest unpublished queued jobs, locked so concurrent relays do not publish the
-- same row at once. The caller publishes them and marks them in the same transaction.
create function compliance.lock_unpublished_jobs(batch int) returns setof compliance.scan_jobs
language sql volatile security definer set search_path = '' as $$
  select * from compliance.scan_jobs j
   where j.status = 'queued' and j.published_at is null
   order by j.created_at
   limit least(greatest(batch, 1), 1000)
   for update skip locked
$$;

create function compliance.mark_job_published(job uuid, entry_id text) returns void
language sql volatile security definer set search_path = '' as $$
  update compliance.scan_jobs j set published_at = now(), stream_id = entry_id, updated_at = now()
   where j.id = job and j.status = 'queued'
$$;

-- Takes a job for one attempt. Outcomes: started (with a new lease), busy (another worker
-- holds a live lease: leave the stream entry pending), finished or missing (nothing to do:
-- acknowledge the entry).
create function compliance.start_scan_job(job uuid, worker_name text, stale_after interval) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
  j compliance.scan_jobs;
begin
  update compliance.scan_jobs s
     set status = 'running', attempts = s.attempts + 1, lease = gen_random_uuid(), worker = left(worker_name, 200),
         heartbeat_at = now(), started_at = now(), updated_at = now()
   where s.id = job and s.attempts < s.max_attempts
     and (s.status = 'queued' or (s.status = 'running' and s.heartbeat_at < now() - stale_after))
  returning * into j;
  if j.id is not null then
    -- the scanner needs the catalogue it checks against
    return jsonb_build_object('outcome', 'started', 'lease', j.lease, 'attempt', j.attempts,
                              'job', compliance.scan_job_json(j),
                              'rules', coalesce((
                                select jsonb_agg(jsonb_build_object('key', r.control_key, 'title', r.title,
                                                                    'severity', r.severity)
                                                 order by r.position, r.control_key)
                                  from compliance.rules r
                                 where r.tenant_id = j.tenant_id and r.framework = j.framework), '[]'::jsonb));
  end if;

  select * into j from compliance.scan_jobs s where s.id = job for update;
  if j.id is null then
    return jsonb_build_object('outcome', 'missing');
  elsif j.status in ('done', 'failed') then
    return jsonb_build_object('outcome', 'finished', 'job', compliance.scan_job_json(j));
  elsif j.status = 'running' and j.heartbeat_at >= now() - stale_after then
    return jsonb_build_object('outcome', 'busy', 'job', compliance.scan_job_json(j));
  end if;
  -- queued or abandoned, but out of attempts
  update compliance.scan_jobs s
     set status = 'failed', lease = null, finished_at = now(), updated_at = now(),
         error = coalesce(s.error || '; ', '') || format('gave up after %s attempts', s.attempts)
   where s.id = job returning * into j;
  return jsonb_build_object('outcome', 'finished', 'job', compliance.scan_job_json(j));
end
$$;

create function compliance.heartbeat_scan_job(job uuid, job_lease uuid) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
begin
  update compliance.scan_jobs s set heartbeat_at = now(), updated_at = now()
   where s.id = job and s.status = 'running' and s.lease = job_lease;
  return found;
end
$$;

-- Finishes the attempt holding `job_lease`, at most once: the conditional UPDATE matches only
-- while that lease is current. With findings, the scan is recorded in the same transaction.
-- Returns null when the lease was lost (another worker took the job over).
create function compliance.finish_scan_job(job uuid, job_lease uuid, findings jsonb, scan_started timestamptz)
returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  j compliance.scan_jobs;
  recorded compliance.scans;
begin
  update compliance.scan_jobs s
     set status = 'done', lease = null, finished_at = now(), updated_at = now(), error = null
   where s.id = job and s.status = 'running' and s.lease = job_lease
  returning * into j;
  if j.id is null then
    return null;
  end if;
  if findings is not null then
    recorded := compliance.record_scan(j.tenant_id, j.framework, findings, scan_started, now(), j.requested_by);
    update compliance.scan_jobs s set scan_id = recorded.id where s.id = job returning * into j;
  end if;
  return compliance.scan_job_json(j);
end
$$;

-- Ends an attempt that failed. With retry and attempts left, the job is queued again and
-- goes back through the outbox; otherwise it is failed. Returns the new status, or null when
-- the lease was lost.
create function compliance.fail_scan_job(job uuid, job_lease uuid, reason text, retry boolean) returns text
language plpgsql volatile security definer set search_path = '' as $$
declare
  j compliance.scan_jobs;
begin
  update compliance.scan_jobs s
     set status = case when retry and s.attempts < s.max_attempts then 'queued' else 'failed' end,
         lease = null, published_at = null, stream_id = null, updated_at = now(),
         finished_at = case when retry and s.attempts < s.max_attempts then null else now() end,
         error = left(coalesce(reason, 'failed'), 2000)
   where s.id = job and s.status = 'running' and s.lease = job_lease
  returning * into j;
  return j.status;
end
$$;

-- Safety net for a lost stream (Redis restarted without its data): running jobs whose
-- heartbeat is older than stale_after go back to the outbox (or fail when out of attempts),
-- and queued jobs published longer than republish_after ago are published again. Duplicate
-- deliveries are harmless (start_scan_job decides).
create function compliance.requeue_stale_jobs(stale_after interval, republish_after interval) returns int
language plpgsql volatile security definer set search_path = '' as $$
declare
  requeued int;
  republished int;
begin
  update compliance.scan_jobs s
     set status = case when s.attempts < s.max_attempts then 'queued' else 'failed' end,
         finished_at = case when s.attempts < s.max_attempts then null else now() end,
         error = case when s.attempts < s.max_attempts then s.error
                      else format('worker lost; gave up after %s attempts', s.attempts) end,
         lease = null, published_at = null, stream_id = null, updated_at = now()
   where s.status = 'running' and s.heartbeat_at < now() - stale_after;
  get diagnostics requeued = row_count;
  update compliance.scan_jobs s set published_at = null, stream_id = null, updated_at = now()
   where s.status = 'queued' and s.published_at < now() - republish_after;
  get diagnostics republished = row_count;
  return requeued + republished;
end
$$;

revoke all on all functions in schema compliance from public;
grant select on compliance.scan_jobs to authenticated;
grant execute on function compliance.scan_job_json(compliance.scan_jobs) to authenticated;
grant execute on function api.request_scan(uuid, text, jsonb), api.scan_job(uuid) to authenticated;

grant usage on schema compliance to scan_worker;
grant execute on function compliance.lock_unpublished_jobs(int), compliance.mark_job_published(uuid, text),
  compliance.start_scan_job(uuid, text, interval), compliance.heartbeat_scan_job(uuid, uuid),
  compliance.finish_scan_job(uuid, uuid, jsonb, timestamptz), compliance.fail_scan_job(uuid, uuid, text, boolean),
  compliance.requeue_stale_jobs(interval, interval) to scan_worker;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
drop function api.scan_job(uuid);
drop function api.request_scan(uuid, text, jsonb);
set local role auth_admin;
drop function compliance.requeue_stale_jobs(interval, interval);
drop function compliance.fail_scan_job(uuid, uuid, text, boolean);
drop function compliance.finish_scan_job(uuid, uuid, jsonb, timestamptz);
drop function compliance.heartbeat_scan_job(uuid, uuid);
drop function compliance.start_scan_job(uuid, text, interval);
drop function compliance.mark_job_published(uuid, text);
drop function compliance.lock_unpublished_jobs(int);
drop function compliance.scan_job_json(compliance.scan_jobs);
drop table compliance.scan_jobs;
revoke usage on schema compliance from scan_worker;
reset role;
drop role if exists scan_worker;
notify pgrst, 'reload schema';
