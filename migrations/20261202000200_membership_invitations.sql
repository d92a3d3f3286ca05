-- migrate:up
-- Membership by invitation (security finding: add_member let any tenant admin enumerate
-- accounts, showed the person's name in list_members, and added them without their consent).
--
-- * add_member(tenant_id, email, role) keeps its signature but only records an invitation to the
--   normalized address. It never looks at auth.users, so its answer, its errors and its timing
--   are the same for a known account, an unknown address and an existing member.
-- * The invitee sees the invitation in my_invitations (matched by the email of their account)
--   and accepts or declines it. Until they accept, the tenant learns nothing about them: the
--   invitation holds only what the admin typed, and a declined invitation looks exactly like a
--   pending one to the tenant (list_invitations) until it expires.
-- * Invitations are rate limited per inviter in the database: at most
--   autoaudit.invitations_per_hour (default 20) sends per rolling hour, refused with 429 and
--   Retry-After through RAISE SQLSTATE 'PGRST'.
-- * Role changes of existing members, which add_member used to do, are set_member_role.
set local role auth_admin;

-- ── tables ───────────────────────────────────────────────────────────────

-- One invitation per tenant and address; inviting the same address again refreshes it (role,
-- inviter, expiry) and makes it pending again.
create table compliance.invitations (
  tenant_id    uuid not null references compliance.tenants (id) on delete cascade,
  -- as compliance.normalize_email returns it: what the admin typed, trimmed, NFC, lower-case
  email        text not null check (length(email) between 3 and 254 and email = lower(btrim(email))),
  role         text not null check (role in ('viewer', 'auditor', 'admin')),
  invited_by   uuid references auth.users (id) on delete set null,
  created_at   timestamptz not null default now(),
  expires_at   timestamptz not null,
  status       text not null default 'pending' check (status in ('pending', 'accepted', 'declined')),
  responded_at timestamptz,
  primary key (tenant_id, email),
  check (expires_at > created_at),
  check ((status = 'pending') = (responded_at is null))
);
-- "which invitations are addressed to me": my_invitations, accept and decline
create index invitations_by_email on compliance.invitations (email) where status = 'pending';

-- Every invitation sent, for the per-inviter limit. Separate from `invitations` so that
-- re-sending, declining or cascading deletes never give an inviter their quota back.
create table compliance.invitation_sends (
  id       bigint generated always as identity primary key,
  inviter  uuid not null references auth.users (id) on delete cascade,
  sent_at  timestamptz not null default now()
);
create index invitation_sends_by_inviter on compliance.invitation_sends (inviter, sent_at);

-- Neither table is granted to `authenticated`: every read and write is a function below. RLS
-- without a policy is a second lock should a grant ever be added by mistake.
alter table compliance.invitations enable row level security;
alter table compliance.invitation_sends enable row level security;

-- ── helpers (not exposed) ────────────────────────────────────────────────

-- An address as auth stores it (auth.normalize_email, from the migration before this one), or
-- null when auth refuses it: an invitation to an address nobody can sign up with reaches no one.
create function compliance.normalize_email(address text) returns text
language plpgsql stable set search_path = '' as $$
begin
  if address is null or length(address) > 320 then
    return null;
  end if;
  return auth.normalize_email(address);
exception
  when invalid_parameter_value then
    return null;
end
$$;

-- The signed-in user's address, normalized like invitations are. 401 without a user.
create function compliance.caller_email() returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  address text;
begin
  select u.email into address from auth.users u where u.id = auth.current_user_id();
  if address is null then
    raise exception using errcode = 'PT401', message = 'sign in required';
  end if;
  return compliance.normalize_email(address);
end
$$;

-- The per-inviter limit: at most autoaudit.invitations_per_hour (default 20) sends in any
-- rolling hour. Serialized per inviter, so concurrent requests cannot overshoot it. Records the
-- send when allowed; raises 429 with Retry-After otherwise.
create function compliance.count_invitation_send(inviter uuid) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  setting text := current_setting('autoaudit.invitations_per_hour', true);
  per_hour int := case when setting ~ '^\s*[0-9]{1,6}\s*$' then greatest(btrim(setting)::int, 1) else 20 end;
  window_start timestamptz := now() - interval '1 hour';
  sent int;
  oldest timestamptz;
  retry_after int;
begin
  perform pg_advisory_xact_lock(hashtext('compliance.invitation_sends'), hashtext(inviter::text));
  delete from compliance.invitation_sends s where s.inviter = count_invitation_send.inviter and s.sent_at <= window_start;
  select count(*), min(s.sent_at) into sent, oldest
    from compliance.invitation_sends s where s.inviter = count_invitation_send.inviter;
  if sent >= per_hour then
    -- the next send is allowed once the oldest send of the window is an hour old
    retry_after := greatest(ceil(extract(epoch from (oldest + interval '1 hour' - now())))::int, 1);
    raise sqlstate 'PGRST' using
      message = json_build_object(
        'code', 'PT429', 'message', 'too many invitations',
        'details', format('at most %s invitations per hour per inviter', per_hour),
        'hint', format('Try again in %s seconds.', retry_after))::text,
      detail = json_build_object('status', 429, 'headers', json_build_object('Retry-After', retry_after::text))::text;
  end if;
  insert into compliance.invitation_sends (inviter) values (count_invitation_send.inviter);
end
$$;

-- The pending, unexpired invitation of the signed-in user to a tenant, locked; 404 otherwise.
create function compliance.my_pending_invitation(tenant uuid) returns compliance.invitations
language plpgsql volatile security definer set search_path = '' as $$
declare
  found_invitation compliance.invitations;
begin
  if tenant is null then
    raise exception using errcode = '22023', message = 'tenant_id is required';
  end if;
  select * into found_invitation from compliance.invitations i
   where i.tenant_id = tenant and i.email = compliance.caller_email()
     and i.status = 'pending' and i.expires_at > now()
   for update;
  if found_invitation.tenant_id is null then
    raise exception using errcode = 'PT404', message = 'invitation not found',
      hint = 'my_invitations lists the pending invitations addressed to your email.';
  end if;
  return found_invitation;
end
$$;

-- ── the API ──────────────────────────────────────────────────────────────

-- Same signature as before, so existing clients keep working, but now an invitation. The answer
-- is the same whatever the address: it is built from the arguments and the new expiry only.
create or replace function api.add_member(tenant_id uuid, email text, role text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.current_user_id();
  normalized text;
  invitation compliance.invitations;
begin
  perform compliance.require_role(add_member.tenant_id, 'admin');
  if role is null or role not in ('viewer', 'auditor', 'admin') then
    raise exception using errcode = '22023', message = 'role must be one of viewer, auditor, admin';
  end if;
  normalized := compliance.normalize_email(add_member.email);
  if normalized is null then
    raise exception using errcode = '22023', message = 'email is not a valid address',
      hint = 'Use an address like name@example.com of at most 254 characters.';
  end if;
  perform compliance.count_invitation_send(caller);
  insert into compliance.invitations as i (tenant_id, email, role, invited_by, created_at, expires_at)
  values (add_member.tenant_id, normalized, add_member.role, caller, now(), now() + interval '14 days')
  on conflict on constraint invitations_pkey do update
     set role = excluded.role, invited_by = excluded.invited_by, created_at = excluded.created_at,
         expires_at = excluded.expires_at, status = 'pending', responded_at = null
  returning * into invitation;
  return json_build_object('tenant_id', invitation.tenant_id, 'email', invitation.email, 'role', invitation.role,
                           'status', 'invited', 'expires_at', invitation.expires_at);
end
$$;

-- Role changes of people who are already members (what add_member used to do for them).
create function api.set_member_role(tenant_id uuid, user_id uuid, role text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  previous text;
begin
  perform compliance.require_role(set_member_role.tenant_id, 'admin');
  if set_member_role.user_id is null then
    raise exception using errcode = '22023', message = 'user_id is required';
  end if;
  if role is null or role not in ('viewer', 'auditor', 'admin') then
    raise exception using errcode = '22023', message = 'role must be one of viewer, auditor, admin';
  end if;
  -- Serializes membership changes of one tenant, so two admins cannot demote each other
  -- concurrently and leave the tenant without an admin.
  perform from compliance.tenants t where t.id = set_member_role.tenant_id for update;
  select m.role into previous from compliance.tenant_members m
   where m.tenant_id = set_member_role.tenant_id and m.user_id = set_member_role.user_id;
  if previous is null then
    raise exception using errcode = 'PT404', message = 'member not found',
      hint = 'Invite people who are not members yet with add_member.';
  end if;
  if previous = 'admin' and role <> 'admin' and not exists (
       select from compliance.tenant_members m
        where m.tenant_id = set_member_role.tenant_id and m.role = 'admin' and m.user_id <> set_member_role.user_id) then
    raise exception using errcode = 'PT409', message = 'a tenant must keep at least one admin';
  end if;
  update compliance.tenant_members m set role = set_member_role.role
   where m.tenant_id = set_member_role.tenant_id and m.user_id = set_member_role.user_id;
  return json_build_object('tenant_id', set_member_role.tenant_id, 'user_id', set_member_role.user_id,
                           'role', role, 'previous_role', previous);
end
$$;

-- Admin: the invitations of the tenant not yet accepted and not expired, as the admin typed
-- them. A declined invitation stays listed until it expires, exactly like a pending one:
-- dropping it would tell the tenant that an account with that address exists.
create function api.list_invitations(tenant_id uuid) returns json
language plpgsql stable security definer set search_path = '' as $$
begin
  perform compliance.require_role(list_invitations.tenant_id, 'admin');
  return (
    select coalesce(json_agg(json_build_object('email', i.email, 'role', i.role, 'invited_by', i.invited_by,
                                               'invited_at', i.created_at, 'expires_at', i.expires_at)
                             order by i.created_at, i.email), '[]')
      from compliance.invitations i
     where i.tenant_id = list_invitations.tenant_id and i.status <> 'accepted' and i.expires_at > now());
end
$$;

-- The signed-in user's pending, unexpired invitations. The inviter is not named: the invitee
-- needs the tenant and the role to decide, and the inviter's address would go to whatever
-- address was typed, typos included.
create function api.my_invitations() returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  address text := compliance.caller_email();
begin
  return (
    select coalesce(json_agg(json_build_object('tenant_id', i.tenant_id, 'tenant_name', t.name, 'role', i.role,
                                               'invited_at', i.created_at, 'expires_at', i.expires_at)
                             order by i.created_at, i.tenant_id), '[]')
      from compliance.invitations i join compliance.tenants t on t.id = i.tenant_id
     where i.email = address and i.status = 'pending' and i.expires_at > now());
end
$$;

-- The invitee joins with the invited role (an existing member gets that role, with the
-- last-admin rule); the invitation is consumed.
create function api.accept_invitation(tenant_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  caller uuid := auth.current_user_id();
  invitation compliance.invitations;
  previous text;
  tenant_name text;
begin
  -- the tenant first, then the invitation: the order set_member_role and remove_member lock in
  select t.name into tenant_name from compliance.tenants t where t.id = accept_invitation.tenant_id for update;
  invitation := compliance.my_pending_invitation(accept_invitation.tenant_id);
  select m.role into previous from compliance.tenant_members m
   where m.tenant_id = invitation.tenant_id and m.user_id = caller;
  if previous = 'admin' and invitation.role <> 'admin' and not exists (
       select from compliance.tenant_members m
        where m.tenant_id = invitation.tenant_id and m.role = 'admin' and m.user_id <> caller) then
    raise exception using errcode = 'PT409', message = 'a tenant must keep at least one admin',
      hint = 'You are its only admin: decline the invitation, or make another member admin first.';
  end if;
  insert into compliance.tenant_members as m (tenant_id, user_id, role)
  values (invitation.tenant_id, caller, invitation.role)
  on conflict on constraint tenant_members_pkey do update set role = excluded.role;
  update compliance.invitations i set status = 'accepted', responded_at = now()
   where i.tenant_id = invitation.tenant_id and i.email = invitation.email;
  return json_build_object('tenant_id', invitation.tenant_id, 'tenant_name', tenant_name,
                           'role', invitation.role, 'previous_role', previous);
end
$$;

create function api.decline_invitation(tenant_id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  invitation compliance.invitations;
begin
  invitation := compliance.my_pending_invitation(decline_invitation.tenant_id);
  update compliance.invitations i set status = 'declined', responded_at = now()
   where i.tenant_id = invitation.tenant_id and i.email = invitation.email;
  return json_build_object('tenant_id', invitation.tenant_id, 'status', 'declined');
end
$$;

comment on function api.add_member(uuid, text, text) is
  'Admin: invite an email address to the tenant with role viewer, auditor or admin (valid 14 days). The same answer whether or not the address has an account; the person becomes a member only by accepting. At most 20 invitations per inviter per hour (429).';
comment on function api.set_member_role(uuid, uuid, text) is
  'Admin: change the role of a member. A tenant keeps at least one admin.';
comment on function api.list_invitations(uuid) is
  'Admin: the tenant''s invitations that are not accepted and not expired, by the address typed.';
comment on function api.my_invitations() is
  'The pending invitations addressed to your email: tenant, role, invited_at, expires_at.';
comment on function api.accept_invitation(uuid) is
  'Accept your invitation to a tenant: you become a member with the invited role. 404 without a pending invitation.';
comment on function api.decline_invitation(uuid) is
  'Decline your invitation to a tenant. 404 without a pending invitation.';

revoke all on all functions in schema compliance from public;
grant execute on function api.set_member_role(uuid, uuid, text), api.list_invitations(uuid), api.my_invitations(),
  api.accept_invitation(uuid), api.decline_invitation(uuid) to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
drop function api.decline_invitation(uuid);
drop function api.accept_invitation(uuid);
drop function api.my_invitations();
drop function api.list_invitations(uuid);
drop function api.set_member_role(uuid, uuid, text);
set local role auth_admin;

-- add_member as 20261125000300_compliance.sql defined it
create or replace function api.add_member(tenant_id uuid, email text, role text) returns json
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
comment on function api.add_member(uuid, text, text) is
  'Admin: add a signed-up user to the tenant by email with role viewer, auditor or admin, or change their role.';

drop function compliance.my_pending_invitation(uuid);
drop function compliance.count_invitation_send(uuid);
drop function compliance.caller_email();
drop function compliance.normalize_email(text);
drop table compliance.invitation_sends;
drop table compliance.invitations;
reset role;
notify pgrst, 'reload schema';
