-- migrate:up
-- tenant_audit's action filter refused 'tenant_require_mfa_changed', an event of the tenant's
-- own chain since 20261202000700_mfa.sql. The list of tenant actions now lives in one function
-- that the filter and its hint both read, so the next tenant action is added in one place.
set local role auth_admin;

create function audit.tenant_actions() returns text[]
language sql immutable parallel safe set search_path = '' as $$
  select array['tenant_created', 'invitation_sent', 'invitation_accepted', 'invitation_declined', 'member_removed',
               'role_changed', 'rules_upserted', 'scan_submitted', 'scan_requested', 'job_finished', 'job_failed',
               'tenant_require_mfa_changed', 'trail_pruned']
$$;
revoke all on function audit.tenant_actions() from public;

create or replace function api.tenant_audit(tenant_id uuid, before bigint default null, page_size int default 20, action text default null)
returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  page json;
  next_before bigint;
begin
  perform compliance.require_role(tenant_audit.tenant_id, 'admin');
  perform audit.check_page(page_size, before);
  if action is not null and not action = any (audit.tenant_actions()) then
    raise exception using errcode = '22023', message = 'action is not a tenant audit action',
      hint = 'Use one of ' || array_to_string(audit.tenant_actions(), ', ') || '.';
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

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;

-- As in 20261202000600_audit_completion.sql.
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

drop function audit.tenant_actions();

reset role;
notify pgrst, 'reload schema';
