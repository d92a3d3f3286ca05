-- migrate:up
-- Compliance data: tenants, their members, the rules of each framework, scans and their
-- findings (`issues`). Owned by auth_admin like the auth schema.
--
-- Access model:
-- * Writes go through SECURITY DEFINER functions in `api` that check the caller's role in the
--   tenant explicitly (viewer < auditor < admin).
-- * Reads are SECURITY INVOKER: they run as `authenticated`, which may SELECT the tables but
--   only sees rows of tenants it belongs to (row-level security by the JWT's `sub`). A bug in a
--   read function therefore cannot leak another tenant's rows; the functions check the tenant
--   as well, so an unknown tenant is a clean 404.
-- * Another tenant is indistinguishable from a tenant that does not exist: 404, never 403.
set local role auth_admin;

create schema compliance;

create table compliance.tenants (
  id         uuid primary key default gen_random_uuid(),
  name       text not null check (length(btrim(name)) between 1 and 200 and name = btrim(name)),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now()
);

create table compliance.tenant_members (
  tenant_id  uuid not null references compliance.tenants (id) on delete cascade,
  user_id    uuid not null references auth.users (id) on delete cascade,
  role       text not null check (role in ('viewer', 'auditor', 'admin')),
  created_at timestamptz not null default now(),
  primary key (tenant_id, user_id)
);
-- "which tenants does this user belong to": the lookup behind every policy
create index tenant_members_by_user on compliance.tenant_members (user_id, tenant_id);

-- Rules belong to a tenant: its admins manage them, and no tenant's admin can change what
-- another tenant's scans mean.
create table compliance.rules (
  id          bigint generated always as identity primary key,
  tenant_id   uuid not null references compliance.tenants (id) on delete cascade,
  framework   text not null check (framework ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  control_key text not null check (control_key ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  title       text not null check (length(btrim(title)) between 1 and 500),
  description text check (length(description) <= 5000),
  severity    text not null check (severity in ('low', 'medium', 'high', 'critical')),
  -- the order the admin listed the rules in (CIS order); findings are shown in it
  position    int not null default 0,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  unique (tenant_id, framework, control_key),
  unique (id, tenant_id)
);

create table compliance.scans (
  id               uuid primary key default gen_random_uuid(),
  -- submission order: the keyset for "latest" and for pagination (ids are random uuids)
  seq              bigint generated always as identity unique,
  tenant_id        uuid not null references compliance.tenants (id) on delete cascade,
  framework        text not null check (framework ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  status           text not null default 'completed' check (status in ('running', 'completed', 'failed')),
  score            numeric(5, 2) check (score between 0 and 100),
  pass_count       int not null default 0 check (pass_count >= 0),
  fail_count       int not null default 0 check (fail_count >= 0),
  not_tested_count int not null default 0 check (not_tested_count >= 0),
  started_at       timestamptz not null default now(),
  finished_at      timestamptz,
  submitted_by     uuid references auth.users (id) on delete set null,
  created_at       timestamptz not null default now(),
  check (finished_at is null or finished_at >= started_at),
  unique (id, tenant_id)
);
create index scans_latest_by_tenant on compliance.scans (tenant_id, seq desc);
create index scans_latest_by_tenant_framework on compliance.scans (tenant_id, framework, seq desc);

-- Findings of a scan. tenant_id is repeated so that the composite foreign keys guarantee a
-- finding, its scan and its rule all belong to the same tenant, and so RLS needs no join.
create table compliance.issues (
  id         bigint generated always as identity primary key,
  scan_id    uuid not null,
  tenant_id  uuid not null,
  rule_id    bigint not null,
  result     text not null check (result in ('pass', 'fail', 'not_tested')),
  priority   text not null check (priority in ('low', 'medium', 'high', 'critical')),
  evidence   jsonb not null default '{}' check (octet_length(evidence::text) <= 65536),
  created_at timestamptz not null default now(),
  foreign key (scan_id, tenant_id) references compliance.scans (id, tenant_id) on delete cascade,
  foreign key (rule_id, tenant_id) references compliance.rules (id, tenant_id) on delete cascade,
  unique (scan_id, rule_id)
);
create index issues_by_rule on compliance.issues (rule_id, scan_id);

-- ── helpers (not exposed) ────────────────────────────────────────────────

-- The tenants the signed-in user belongs to. SECURITY DEFINER so that policies can consult
-- tenant_members without recursing into its own policy.
create function compliance.my_tenant_ids() returns setof uuid
language sql stable security definer set search_path = '' as $$
  select m.tenant_id from compliance.tenant_members m where m.user_id = auth.current_user_id()
$$;

-- The caller's role in a tenant, or null when they are not a member (or it does not exist).
create function compliance.caller_role(tenant uuid) returns text
language sql stable security definer set search_path = '' as $$
  select m.role from compliance.tenant_members m
   where m.tenant_id = tenant and m.user_id = auth.current_user_id()
$$;

create function compliance.role_rank(role text) returns int
language sql immutable set search_path = '' as $$
  select case role when 'viewer' then 1 when 'auditor' then 2 when 'admin' then 3 else 0 end
$$;

-- Raises 404 when the caller is not a member (whether or not the tenant exists) and 403 when
-- they are a member whose role is below `needed`. Returns the caller's role.
create function compliance.require_role(tenant uuid, needed text) returns text
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

create function compliance.check_framework(framework text) returns text
language plpgsql immutable set search_path = '' as $$
begin
  if framework is null or framework !~ '^[a-z0-9][a-z0-9._-]{0,63}$' then
    raise exception using errcode = '22023', message = 'framework is not valid',
      hint = 'Use a lower-case identifier such as cis-m365 (letters, digits, . _ -; at most 64).';
  end if;
  return framework;
end
$$;

create function compliance.scan_json(s compliance.scans) returns json
language sql immutable set search_path = '' as $$
  select json_build_object(
    'id', s.id, 'tenant_id', s.tenant_id, 'framework', s.framework, 'status', s.status,
    'score', s.score, 'pass_count', s.pass_count, 'fail_count', s.fail_count,
    'not_tested_count', s.not_tested_count, 'started_at', s.started_at,
    'finished_at', s.finished_at, 'submitted_by', s.submitted_by, 'created_at', s.created_at,
    'cursor', s.seq)
$$;

-- A scan with its findings, in rule order. SECURITY INVOKER: reads through RLS.
create function compliance.scan_with_findings(scan uuid) returns json
language sql stable set search_path = '' as $$
  select (compliance.scan_json(s)::jsonb || jsonb_build_object('findings', coalesce((
           select jsonb_agg(jsonb_build_object(
                    'rule', r.control_key, 'title', r.title, 'severity', r.severity,
                    'result', i.result, 'priority', i.priority, 'evidence', i.evidence)
                  order by r.position, r.control_key)
             from compliance.issues i join compliance.rules r on r.id = i.rule_id
            where i.scan_id = s.id), '[]'::jsonb)))::json
    from compliance.scans s
   where s.id = scan
$$;

-- Validates findings and records a completed scan with them, counts and score computed here
-- from the stored findings. One statement sequence inside the caller's transaction: any
-- invalid finding raises 22023 before anything is written, and a failure later rolls back all.
-- Not exposed: api.submit_scan and the queue's finish_scan_job call it after their checks.
create function compliance.record_scan(
  tenant uuid, framework text, findings jsonb,
  started timestamptz, finished timestamptz, submitted_by uuid
) returns compliance.scans
language plpgsql volatile security definer set search_path = '' as $$
declare
  problem record;
  created compliance.scans;
begin
  perform compliance.check_framework(record_scan.framework);
  if jsonb_typeof(findings) is distinct from 'array' then
    raise exception using errcode = '22023', message = 'findings must be a JSON array',
      hint = 'Send [{"rule": "1.1.1", "result": "pass"}, ...].';
  end if;
  if jsonb_array_length(findings) not between 1 and 5000 then
    raise exception using errcode = '22023', message = 'findings must have between 1 and 5000 entries';
  end if;
  if octet_length(findings::text) > 8388608 then
    raise exception using errcode = '22023', message = 'findings are larger than 8 MiB in total',
      hint = 'Keep evidence short: at most 64 KiB per finding.';
  end if;
  if started is not null and not isfinite(started) or finished is not null and not isfinite(finished) then
    raise exception using errcode = '22023', message = 'started_at and finished_at must be finite times';
  end if;
  started := coalesce(started, now());
  finished := coalesce(finished, greatest(now(), started));
  if finished < started then
    raise exception using errcode = '22023', message = 'finished_at is before started_at';
  end if;

  -- The first bad finding, in array order, with what is wrong with it.
  select e.ord - 1 as idx, e.problem into problem
    from (
      select f.ord,
             case
               when jsonb_typeof(f.v) <> 'object' then 'must be an object'
               when f.v - array['rule', 'result', 'priority', 'evidence'] <> '{}'::jsonb then
                 'has unknown keys (allowed: rule, result, priority, evidence)'
               when jsonb_typeof(f.v -> 'rule') is distinct from 'string' then 'rule must be a string'
               when r.id is null then format('rule %s is not a rule of framework %s in this tenant',
                                             left(f.v ->> 'rule', 64), record_scan.framework)
               when jsonb_typeof(f.v -> 'result') is distinct from 'string'
                    or (f.v ->> 'result') not in ('pass', 'fail', 'not_tested') then
                 'result must be one of pass, fail, not_tested'
               when coalesce(jsonb_typeof(f.v -> 'priority'), 'null') not in ('null', 'string')
                    or (f.v ->> 'priority') not in ('low', 'medium', 'high', 'critical') then
                 'priority must be one of low, medium, high, critical'
               when coalesce(jsonb_typeof(f.v -> 'evidence'), 'null') not in ('null', 'object', 'array') then
                 'evidence must be an object or an array'
               when octet_length((f.v -> 'evidence')::text) > 65536 then 'evidence is larger than 64 KiB'
               when count(*) over (partition by r.id) > 1 then format('rule %s appears more than once', r.control_key)
             end as problem
        from jsonb_array_elements(findings) with ordinality as f (v, ord)
        left join compliance.rules r
          on r.tenant_id = tenant and r.framework = record_scan.framework
         and jsonb_typeof(f.v) = 'object' and r.control_key = f.v ->> 'rule'
    ) e
   where e.problem is not null
   order by e.ord
   limit 1;
  if found then
    raise exception using errcode = '22023', message = format('findings[%s] %s', problem.idx, problem.problem),
      detail = format('findings[%s]', problem.idx),
      hint = 'Nothing was recorded; fix the finding and submit the whole scan again.';
  end if;

  insert into compliance.scans (tenant_id, framework, status, started_at, finished_at, submitted_by)
  values (tenant, record_scan.framework, 'completed', started, finished, record_scan.submitted_by)
  returning * into created;

  insert into compliance.issues (scan_id, tenant_id, rule_id, result, priority, evidence)
  select created.id, tenant, r.id, f.v ->> 'result', coalesce(f.v ->> 'priority', r.severity),
         coalesce(nullif(f.v -> 'evidence', 'null'::jsonb), '{}'::jsonb)
    from jsonb_array_elements(findings) as f (v)
    join compliance.rules r
      on r.tenant_id = tenant and r.framework = record_scan.framework and r.control_key = f.v ->> 'rule';

  -- Counts and score come from the rows just stored, never from the client.
  update compliance.scans s
     set pass_count = c.pass, fail_count = c.fail, not_tested_count = c.not_tested,
         score = case when c.pass + c.fail > 0 then round(100.0 * c.pass / (c.pass + c.fail), 2) end
    from (select count(*) filter (where i.result = 'pass') as pass,
                 count(*) filter (where i.result = 'fail') as fail,
                 count(*) filter (where i.result = 'not_tested') as not_tested
            from compliance.issues i where i.scan_id = created.id) c
   where s.id = created.id
  returning s.* into created;
  return created;
end
$$;

-- ── row-level security ───────────────────────────────────────────────────
-- `authenticated` may read the tables, and sees only its tenants' rows. It has no write
-- privilege at all: every write is a function below. The owner (auth_admin, which runs the
-- SECURITY DEFINER functions) is not subject to these policies; those functions check roles.
alter table compliance.tenants enable row level security;
alter table compliance.tenant_members enable row level security;
alter table compliance.rules enable row level security;
alter table compliance.scans enable row level security;
alter table compliance.issues enable row level security;

create policy member_reads on compliance.tenants for select to authenticated
  using (id in (select compliance.my_tenant_ids()));
create policy member_reads on compliance.tenant_members for select to authenticated
  using (tenant_id in (select compliance.my_tenant_ids()));
create policy member_reads on compliance.rules for select to authenticated
  using (tenant_id in (select compliance.my_tenant_ids()));
create policy member_reads on compliance.scans for select to authenticated
  using (tenant_id in (select compliance.my_tenant_ids()));
create policy member_reads on compliance.issues for select to authenticated
  using (tenant_id in (select compliance.my_tenant_ids()));

-- ── the API ──────────────────────────────────────────────────────────────

create function api.create_tenant(name text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.current_user_id();
  created compliance.tenants;
begin
  if name is null or length(btrim(name)) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'name must be 1 to 200 characters';
  end if;
  insert into compliance.tenants (name, created_by) values (btrim(name), caller) returning * into created;
  insert into compliance.tenant_members (tenant_id, user_id, role) values (created.id, caller, 'admin');
  return json_build_object('id', created.id, 'name', created.name, 'role', 'admin', 'created_at', created.created_at);
end
$$;

create function api.my_tenants() returns json
language sql stable set search_path = '' as $$
  select coalesce(json_agg(json_build_object('id', t.id, 'name', t.name, 'role', compliance.caller_role(t.id),
                                             'created_at', t.created_at) order by t.created_at, t.id), '[]')
    from compliance.tenants t
$$;

create function api.list_members(tenant_id uuid) returns json
language plpgsql stable security definer set search_path = '' as $$
begin
  perform compliance.require_role(list_members.tenant_id, 'viewer');
  return (
    select coalesce(json_agg(json_build_object('user_id', u.id, 'email', u.email, 'first_name', u.first_name,
                                               'last_name', u.last_name, 'role', m.role, 'since', m.created_at)
                             order by m.created_at, u.email), '[]')
      from compliance.tenant_members m join auth.users u on u.id = m.user_id
     where m.tenant_id = list_members.tenant_id);
end
$$;

create function api.add_member(tenant_id uuid, email text, role text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  member auth.users;
  previous text;
begin
  perform compliance.require_role(add_member.tenant_id, 'admin');
  if role is null or role not in ('viewer', 'auditor', 'admin') then
    raise exception using errcode = '22023', message = 'role must be one of viewer, auditor, admin';
  end if;
  if email is null or length(email) > 254 then
    raise exception using errcode = '22023', message = 'email is not a valid address';
  end if;
  select * into member from auth.users u where u.email = lower(btrim(add_member.email));
  if member.id is null then
    raise exception using errcode = 'PT404', message = 'no user with this email',
      hint = 'The person must sign up first.';
  end if;
  -- Serializes membership changes of one tenant, so two admins cannot demote each other
  -- concurrently and leave the tenant without an admin.
  perform from compliance.tenants t where t.id = add_member.tenant_id for update;
  select m.role into previous from compliance.tenant_members m
   where m.tenant_id = add_member.tenant_id and m.user_id = member.id;
  if previous = 'admin' and role <> 'admin' and not exists (
       select from compliance.tenant_members m
        where m.tenant_id = add_member.tenant_id and m.role = 'admin' and m.user_id <> member.id) then
    raise exception using errcode = 'PT409', message = 'a tenant must keep at least one admin';
  end if;
  insert into compliance.tenant_members as m (tenant_id, user_id, role)
  values (add_member.tenant_id, member.id, role)
  on conflict on constraint tenant_members_pkey do update set role = excluded.role;
  return json_build_object('tenant_id', add_member.tenant_id, 'user_id', member.id, 'email', member.email,
                           'role', role, 'previous_role', previous);
end
$$;

create function api.remove_member(tenant_id uuid, user_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.current_user_id();
  caller_role text;
  removed compliance.tenant_members;
begin
  caller_role := compliance.require_role(remove_member.tenant_id, 'viewer');
  if remove_member.user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  -- Members may leave; only admins remove others.
  if remove_member.user_id <> caller and caller_role <> 'admin' then
    raise exception using errcode = 'PT403', message = 'this requires the admin role in the tenant',
      detail = format('your role is %s', caller_role);
  end if;
  perform from compliance.tenants t where t.id = remove_member.tenant_id for update;
  delete from compliance.tenant_members m
   where m.tenant_id = remove_member.tenant_id and m.user_id = remove_member.user_id
  returning * into removed;
  if removed.user_id is null then
    raise exception using errcode = 'PT404', message = 'member not found';
  end if;
  if removed.role = 'admin' and not exists (
       select from compliance.tenant_members m where m.tenant_id = remove_member.tenant_id and m.role = 'admin') then
    raise exception using errcode = 'PT409', message = 'a tenant must keep at least one admin';
  end if;
  return json_build_object('tenant_id', removed.tenant_id, 'user_id', removed.user_id, 'role', removed.role);
end
$$;

create function api.upsert_rules(tenant_id uuid, framework text, rules jsonb) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  problem record;
  inserted int;
  updated int;
begin
  perform compliance.require_role(upsert_rules.tenant_id, 'admin');
  perform compliance.check_framework(framework);
  if jsonb_typeof(rules) is distinct from 'array' or jsonb_array_length(rules) not between 1 and 2000
     or octet_length(rules::text) > 4194304 then
    raise exception using errcode = '22023', message = 'rules must be a JSON array of 1 to 2000 rules (at most 4 MiB)',
      hint = 'Send [{"key": "1.1.1", "title": "...", "severity": "high"}, ...].';
  end if;
  select e.ord - 1 as idx, e.problem into problem
    from (
      select r.ord,
             case
               when jsonb_typeof(r.v) <> 'object' then 'must be an object'
               when r.v - array['key', 'title', 'severity', 'description'] <> '{}'::jsonb then
                 'has unknown keys (allowed: key, title, severity, description)'
               when jsonb_typeof(r.v -> 'key') is distinct from 'string'
                    or (r.v ->> 'key') !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' then
                 'key must be a control key such as 1.1.1 (letters, digits, . _ -; at most 64)'
               when jsonb_typeof(r.v -> 'title') is distinct from 'string'
                    or length(btrim(r.v ->> 'title')) not between 1 and 500 then 'title must be 1 to 500 characters'
               when jsonb_typeof(r.v -> 'severity') is distinct from 'string'
                    or (r.v ->> 'severity') not in ('low', 'medium', 'high', 'critical') then
                 'severity must be one of low, medium, high, critical'
               when coalesce(jsonb_typeof(r.v -> 'description'), 'null') not in ('null', 'string')
                    or length(r.v ->> 'description') > 5000 then 'description must be a string of at most 5000 characters'
               when count(*) over (partition by r.v -> 'key') > 1 then format('key %s appears more than once', r.v ->> 'key')
             end as problem
        from jsonb_array_elements(rules) with ordinality as r (v, ord)
    ) e
   where e.problem is not null
   order by e.ord
   limit 1;
  if found then
    raise exception using errcode = '22023', message = format('rules[%s] %s', problem.idx, problem.problem),
      detail = format('rules[%s]', problem.idx), hint = 'Nothing was changed.';
  end if;

  with upserted as (
    insert into compliance.rules as r (tenant_id, framework, control_key, title, description, severity, position)
    select upsert_rules.tenant_id, upsert_rules.framework, v ->> 'key', btrim(v ->> 'title'), v ->> 'description', v ->> 'severity', ord
      from jsonb_array_elements(rules) with ordinality as e (v, ord)
    on conflict on constraint rules_tenant_id_framework_control_key_key do update
       set title = excluded.title, description = excluded.description, severity = excluded.severity,
           position = excluded.position, updated_at = now()
     -- an unchanged rule is left alone, so re-sending a catalogue is a no-op
     where (r.title, r.description, r.severity, r.position)
           is distinct from (excluded.title, excluded.description, excluded.severity, excluded.position)
    returning (xmax = 0) as is_new
  )
  select count(*) filter (where is_new), count(*) filter (where not is_new) into inserted, updated from upserted;
  return json_build_object('tenant_id', upsert_rules.tenant_id, 'framework', upsert_rules.framework,
                           'inserted', inserted, 'updated', updated,
                           'unchanged', jsonb_array_length(rules) - inserted - updated);
end
$$;

create function api.list_rules(tenant_id uuid, framework text default null) returns json
language plpgsql stable set search_path = '' as $$
begin
  perform compliance.require_role(list_rules.tenant_id, 'viewer');
  return (
    select coalesce(json_agg(json_build_object('framework', r.framework, 'key', r.control_key, 'title', r.title,
                                               'severity', r.severity, 'description', r.description)
                             order by r.framework, r.position, r.control_key), '[]')
      from compliance.rules r
     where r.tenant_id = list_rules.tenant_id
       and (list_rules.framework is null or r.framework = list_rules.framework));
end
$$;

create function api.submit_scan(
  tenant_id uuid, framework text, findings jsonb,
  started_at timestamptz default null, finished_at timestamptz default null
) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  created compliance.scans;
begin
  perform compliance.require_role(submit_scan.tenant_id, 'auditor');
  created := compliance.record_scan(submit_scan.tenant_id, framework, findings,
                                    submit_scan.started_at, submit_scan.finished_at, auth.current_user_id());
  return compliance.scan_json(created);
end
$$;

create function api.latest_scan(tenant_id uuid, framework text default null) returns json
language plpgsql stable set search_path = '' as $$
begin
  perform compliance.require_role(latest_scan.tenant_id, 'viewer');
  return compliance.scan_with_findings((
    select s.id from compliance.scans s
     where s.tenant_id = latest_scan.tenant_id
       and (latest_scan.framework is null or s.framework = latest_scan.framework)
     order by s.seq desc limit 1));
end
$$;

create function api.scan(scan_id uuid) returns json
language plpgsql stable set search_path = '' as $$
declare
  result json;
begin
  if scan_id is null then
    raise exception using errcode = '22023', message = 'scan_id is required';
  end if;
  -- RLS hides scans of other tenants: they are simply not found.
  result := compliance.scan_with_findings(scan.scan_id);
  if result is null then
    raise exception using errcode = 'PT404', message = 'scan not found';
  end if;
  return result;
end
$$;

create function api.list_scans(tenant_id uuid, page_size int default 20, before bigint default null) returns json
language plpgsql stable set search_path = '' as $$
declare
  page json;
  next_before bigint;
begin
  perform compliance.require_role(list_scans.tenant_id, 'viewer');
  if page_size is null or page_size not between 1 and 100 then
    raise exception using errcode = '22023', message = 'page_size must be between 1 and 100';
  end if;
  -- Keyset on the submission sequence: scans added while a client pages are newer than any
  -- cursor it holds, so pages never repeat or skip a scan.
  select coalesce(json_agg(compliance.scan_json(s) order by s.seq desc), '[]'),
         case when count(*) = page_size then min(s.seq) end
    into page, next_before
    from (select * from compliance.scans s
           where s.tenant_id = list_scans.tenant_id and (list_scans.before is null or s.seq < list_scans.before)
           order by s.seq desc limit page_size) s;
  if next_before is not null and not exists (
       select from compliance.scans s where s.tenant_id = list_scans.tenant_id and s.seq < next_before) then
    next_before := null;
  end if;
  return json_build_object('scans', page, 'next_before', next_before);
end
$$;

create function api.rule_trend(tenant_id uuid, last_n int default 10, framework text default null) returns json
language plpgsql stable set search_path = '' as $$
declare
  result json;
begin
  perform compliance.require_role(rule_trend.tenant_id, 'viewer');
  if last_n is null or last_n not between 1 and 100 then
    raise exception using errcode = '22023', message = 'last_n must be between 1 and 100';
  end if;
  with recent as (
    select s.id, s.seq, s.framework, s.finished_at, s.score,
           row_number() over (order by s.seq) as col
      from (select * from compliance.scans s
             where s.tenant_id = rule_trend.tenant_id
               and (rule_trend.framework is null or s.framework = rule_trend.framework)
             order by s.seq desc limit last_n) s
  ), per_rule as (
    select r.id, r.framework, r.control_key, r.title, r.severity, r.position,
           -- one entry per recent scan (aligned with `scans`, oldest first); null where it did not cover the rule
           jsonb_agg(i.result order by rc.col) as results,
           count(*) filter (where i.result = 'pass') as pass,
           count(*) filter (where i.result = 'fail') as fail,
           count(*) filter (where i.result = 'not_tested') as not_tested
      from compliance.rules r
      cross join recent rc
      left join compliance.issues i on i.scan_id = rc.id and i.rule_id = r.id
     where r.tenant_id = rule_trend.tenant_id and r.framework in (select rc2.framework from recent rc2)
     group by r.id
  )
  select json_build_object(
    'tenant_id', rule_trend.tenant_id,
    'scans', coalesce((select json_agg(json_build_object('id', rc.id, 'framework', rc.framework,
                                                          'finished_at', rc.finished_at, 'score', rc.score)
                                       order by rc.col) from recent rc), '[]'),
    'rules', coalesce((select json_agg(json_build_object(
                         'framework', p.framework, 'rule', p.control_key, 'title', p.title, 'severity', p.severity,
                         'results', p.results, 'pass', p.pass, 'fail', p.fail, 'not_tested', p.not_tested,
                         'latest', (select x.value from jsonb_array_elements(p.results) with ordinality x
                                     where x.value <> 'null'::jsonb order by x.ordinality desc limit 1))
                       order by p.framework, p.position, p.control_key) from per_rule p), '[]'))
    into result;
  return result;
end
$$;

comment on function api.create_tenant(text) is
  'Create a tenant. The caller becomes its admin.';
comment on function api.my_tenants() is
  'The tenants the caller belongs to, with the caller''s role in each.';
comment on function api.list_members(uuid) is
  'Members of a tenant with their roles (any member). 404 when the caller is not a member.';
comment on function api.add_member(uuid, text, text) is
  'Admin: add a signed-up user to the tenant by email with role viewer, auditor or admin, or change their role.';
comment on function api.remove_member(uuid, uuid) is
  'Admin: remove a member (any member may remove themselves). A tenant keeps at least one admin.';
comment on function api.upsert_rules(uuid, text, jsonb) is
  'Admin: insert or update the tenant''s rules of a framework: [{key, title, severity, description?}], in display order. All or nothing; rules not listed are kept.';
comment on function api.list_rules(uuid, text) is
  'The tenant''s rules, optionally of one framework, in the order the admin listed them.';
comment on function api.submit_scan(uuid, text, jsonb, timestamptz, timestamptz) is
  'Auditor: record a completed scan with its findings [{rule, result: pass|fail|not_tested, priority?, evidence?}] in one transaction. Counts and score (pass / (pass + fail), in percent) are computed by the database. One bad finding → 400 and nothing is recorded.';
comment on function api.latest_scan(uuid, text) is
  'The tenant''s most recently submitted scan (optionally of one framework) with its findings; null when there is none.';
comment on function api.scan(uuid) is
  'One scan with its findings. 404 unless it belongs to a tenant the caller is a member of.';
comment on function api.list_scans(uuid, int, bigint) is
  'The tenant''s scans, newest first, page_size (1-100) at a time. Pass next_before of a page as before to get the next; stable while scans are added.';
comment on function api.rule_trend(uuid, int, text) is
  'Per-rule results over the tenant''s last_n (1-100) scans, oldest first, with pass/fail/not_tested counts and the latest result.';

revoke all on all functions in schema compliance from public;
grant usage on schema compliance to authenticated;
grant select on compliance.tenants, compliance.tenant_members, compliance.rules, compliance.scans,
  compliance.issues to authenticated;
-- What the SECURITY INVOKER read functions and the policies call.
grant execute on function compliance.my_tenant_ids(), compliance.caller_role(uuid), compliance.require_role(uuid, text),
  compliance.scan_json(compliance.scans), compliance.scan_with_findings(uuid) to authenticated;
grant execute on function api.create_tenant(text), api.my_tenants(), api.list_members(uuid),
  api.add_member(uuid, text, text), api.remove_member(uuid, uuid), api.upsert_rules(uuid, text, jsonb),
  api.list_rules(uuid, text), api.submit_scan(uuid, text, jsonb, timestamptz, timestamptz),
  api.latest_scan(uuid, text), api.scan(uuid), api.list_scans(uuid, int, bigint),
  api.rule_trend(uuid, int, text) to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
drop function api.rule_trend(uuid, int, text);
drop function api.list_scans(uuid, int, bigint);
drop function api.scan(uuid);
drop function api.latest_scan(uuid, text);
drop function api.submit_scan(uuid, text, jsonb, timestamptz, timestamptz);
drop function api.list_rules(uuid, text);
drop function api.upsert_rules(uuid, text, jsonb);
drop function api.remove_member(uuid, uuid);
drop function api.add_member(uuid, text, text);
drop function api.list_members(uuid);
drop function api.my_tenants();
drop function api.create_tenant(text);
drop schema compliance cascade;
notify pgrst, 'reload schema';
