-- migrate:up
-- OpenID Connect sign-in (README, "Sign in with OpenID Connect").
--
-- An account (auth.users) may have a password and any number of identities: one per
-- (provider, tenant, subject) an OpenID provider vouched for. The gateway verifies the ID token
-- (openid-client) and calls gateway.sign_in_with_identity as the role auth_gateway, over its own
-- connection: the function lives in a schema PostgREST does not expose, and neither anon nor authenticated
-- may run it, so /rpc can neither name nor call it. It answers a one-time code, bound to the
-- PKCE challenge the app sent to /auth/authorize; api.exchange_auth_code turns the code and its
-- verifier into a session, exactly as sign_in opens one.
--
-- Accounts created from an identity have no password: their password_hash is a bcrypt salt on
-- its own (29 characters), which crypt() can never reproduce (it answers 60), so sign_in
-- refuses every password with its usual 401 after the same work. auth.has_password tells them apart.
--
-- Linking by email (AUTH_OIDC_LINK_BY_EMAIL): a new identity joins an existing account only when
-- the provider says the email is verified AND the account's own address is known to be verified:
-- auth.users.email_verified_at is set, when that column exists (it comes with the account
-- features and is looked up at call time), or another identity of the account vouched for the
-- same verified address. A password account whose address nobody verified is never linked: that
-- would let whoever signed up with someone else's address own their Microsoft sign-in.
-- An identity without a verified email never creates an account (it could squat an address).

do $$
begin
  if not exists (select from pg_roles where rolname = 'auth_gateway') then
    create role auth_gateway nologin noinherit;
  end if;
end
$$;
-- The gateway connects as authenticator and switches to auth_gateway for identity sign-ins only.
grant auth_gateway to authenticator;

set local role auth_admin;

-- The functions only the gateway may call: a schema of their own, not exposed, that only
-- auth_gateway may use.
create schema gateway;
grant usage on schema gateway to auth_gateway;

create table auth.identities (
  id             uuid primary key default gen_random_uuid(),
  user_id        uuid not null references auth.users (id) on delete cascade,
  -- the name of the provider in AUTH_OIDC_PROVIDERS
  provider       text not null check (provider ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  -- the provider's stable id of the person: `sub`, or Entra's `oid` (with `tid` as tenant_id)
  subject        text not null check (length(subject) between 1 and 255),
  tenant_id      text check (length(tenant_id) between 1 and 255),
  email          text check (length(email) <= 254),
  email_verified boolean not null default false,
  first_seen_at  timestamptz not null default now(),
  last_seen_at   timestamptz not null default now(),
  constraint identities_provider_subject_key unique nulls not distinct (provider, tenant_id, subject)
);
create index identities_by_user on auth.identities (user_id);

-- One-time codes of /auth/callback. Only the digest is stored; single use, 60 seconds.
create table auth.identity_auth_codes (
  code_hash      bytea primary key check (octet_length(code_hash) = 32),
  identity_id    uuid not null references auth.identities (id) on delete cascade,
  code_challenge text not null check (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
  created_at     timestamptz not null default now(),
  expires_at     timestamptz not null,
  used_at        timestamptz
);
create index identity_auth_codes_by_expiry on auth.identity_auth_codes (expires_at);

-- Whether the account has a password one can sign in with (see the top of this file).
create function auth.has_password(u auth.users) returns boolean
language plpgsql immutable set search_path = '' as $$
begin
  return u.password_hash is not null and u.password_hash ~ '^\$2[abxy]\$[0-9]{2}\$[./A-Za-z0-9]{53}$';
end
$$;

-- Whether the account's own address is verified (see the top of this file).
create function auth.account_email_verified(account uuid, address text) returns boolean
language plpgsql stable set search_path = '' as $$
declare
  verified boolean := false;
begin
  if exists (select from pg_catalog.pg_attribute a
              where a.attrelid = 'auth.users'::regclass and a.attname = 'email_verified_at' and not a.attisdropped) then
    execute 'select email_verified_at is not null from auth.users where id = $1' into verified using account;
    if verified then
      return true;
    end if;
  end if;
  return exists (select from auth.identities i
                  where i.user_id = account and i.email_verified and i.email = address);
end
$$;

create function gateway.sign_in_with_identity(
  provider text, subject text, tenant_id text, email text, email_verified boolean,
  first_name text, last_name text, code_challenge text, link_by_email boolean
) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  address text := auth.email_or_null(email);
  verified boolean := coalesce(email_verified, false) and address is not null;
  known auth.identities;
  account auth.users;
  code text;
begin
  if provider is null or provider !~ '^[a-z0-9][a-z0-9_-]{0,62}$'
     or coalesce(length(subject), 0) not between 1 and 255
     or coalesce(length(tenant_id), 1) not between 1 and 255 then
    raise exception using errcode = '22023', message = 'invalid identity';
  end if;
  if code_challenge is null or code_challenge !~ '^[A-Za-z0-9_-]{43}$' then
    raise exception using errcode = '22023', message = 'code_challenge must be an S256 PKCE challenge';
  end if;

  select * into known from auth.identities i
   where i.provider = sign_in_with_identity.provider and i.subject = sign_in_with_identity.subject
     and i.tenant_id is not distinct from sign_in_with_identity.tenant_id
   for update;

  if known.id is not null then
    update auth.identities i
       set last_seen_at = now(),
           email = coalesce(address, i.email),
           email_verified = case when address is null then i.email_verified else verified end
     where i.id = known.id returning * into known;
  else
    if not verified then
      raise exception using errcode = 'PT403', message = 'the provider did not verify an email address for this identity',
        hint = 'Use an account whose email address the provider has verified.';
    end if;
    select * into account from auth.users u where u.email = address for update;
    if account.id is not null then
      if not coalesce(link_by_email, false) then
        raise exception using errcode = 'PT409', message = 'an account with this email already exists',
          hint = 'Sign in with its password.';
      end if;
      if not auth.account_email_verified(account.id, address) then
        raise exception using errcode = 'PT409', message = 'an account with this email exists but its address is not verified, so it cannot be linked',
          hint = 'Sign in with its password.';
      end if;
    else
      insert into auth.users (email, password_hash, first_name, last_name)
      values (address, extensions.gen_salt('bf', auth.bcrypt_cost()),
              left(coalesce(nullif(btrim(first_name), ''), split_part(address, '@', 1)), 100),
              left(coalesce(nullif(btrim(last_name), ''), '-'), 100))
      on conflict on constraint users_email_key do nothing
      returning * into account;
      if account.id is null then
        raise exception using errcode = 'PT409', message = 'an account with this email already exists',
          hint = 'Try again.';
      end if;
      if exists (select from pg_catalog.pg_attribute a
                  where a.attrelid = 'auth.users'::regclass and a.attname = 'email_verified_at' and not a.attisdropped) then
        execute 'update auth.users set email_verified_at = now() where id = $1' using account.id;
      end if;
    end if;
    insert into auth.identities (user_id, provider, subject, tenant_id, email, email_verified)
    values (account.id, sign_in_with_identity.provider, sign_in_with_identity.subject,
            sign_in_with_identity.tenant_id, address, verified)
    returning * into known;
  end if;

  delete from auth.identity_auth_codes c
   where c.code_hash in (select o.code_hash from auth.identity_auth_codes o
                          where o.expires_at < now() - interval '1 hour' limit 10 for update skip locked);
  code := rtrim(translate(encode(extensions.gen_random_bytes(32), 'base64'), '+/', '-_'), '=');
  insert into auth.identity_auth_codes (code_hash, identity_id, code_challenge, expires_at)
  values (auth.token_digest(code), known.id, sign_in_with_identity.code_challenge, now() + interval '60 seconds');
  return json_build_object('auth_code', code, 'user_id', known.user_id, 'identity_id', known.id);
end
$$;

-- ── the API ──────────────────────────────────────────────────────────────

create function api.exchange_auth_code(auth_code text, code_verifier text) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  presented auth.identity_auth_codes;
  identity auth.identities;
  account auth.users;
  session uuid;
  issued record;
begin
  if code_verifier is null or code_verifier !~ '^[A-Za-z0-9._~-]{43,128}$' then
    raise exception using errcode = '22023', message = 'code_verifier must be a PKCE verifier',
      hint = '43 to 128 characters of A-Z, a-z, 0-9, "-", ".", "_" and "~" (RFC 7636).';
  end if;
  select * into presented from auth.identity_auth_codes c
   where c.code_hash = auth.token_digest(coalesce(auth_code, '')) for update;
  if presented.code_hash is null or presented.used_at is not null or presented.expires_at <= now() then
    raise exception using errcode = 'PT401', message = 'invalid or expired authorization code',
      hint = 'Sign in again.';
  end if;
  if rtrim(translate(encode(extensions.digest(convert_to(code_verifier, 'UTF8'), 'sha256'), 'base64'), '+/', '-_'), '=')
     <> presented.code_challenge then
    raise exception using errcode = 'PT401', message = 'code_verifier does not match the code_challenge',
      hint = 'Send the verifier whose S256 challenge was sent to /auth/authorize.';
  end if;

  update auth.identity_auth_codes c set used_at = now() where c.code_hash = presented.code_hash;
  select * into identity from auth.identities i where i.id = presented.identity_id;
  update auth.users u set last_login_at = now() where u.id = identity.user_id returning * into account;
  insert into auth.sessions (user_id) values (account.id) returning id into session;
  issued := auth.new_refresh_token(session);
  return (auth.session_json(account, session, issued.token, issued.expires_at)::jsonb
          || jsonb_build_object('provider', identity.provider))::json;
end
$$;

create function api.my_identities() returns json
language plpgsql stable security definer set search_path = '' as $$
declare
  me uuid := auth.current_user_id();
begin
  return coalesce((select json_agg(json_build_object(
      'id', i.id, 'provider', i.provider, 'tenant_id', i.tenant_id, 'email', i.email,
      'email_verified', i.email_verified, 'first_seen_at', i.first_seen_at, 'last_seen_at', i.last_seen_at)
      order by i.first_seen_at, i.id)
    from auth.identities i where i.user_id = me), '[]'::json);
end
$$;

create function api.unlink_identity(id uuid) returns json
language plpgsql volatile security definer set search_path = '' as $$
declare
  me uuid := auth.current_user_id();
  account auth.users;
  target auth.identities;
begin
  select * into account from auth.users u where u.id = me for update;
  select * into target from auth.identities i where i.id = unlink_identity.id and i.user_id = me;
  if target.id is null then
    raise exception using errcode = 'PT404', message = 'no such identity on this account';
  end if;
  if not auth.has_password(account)
     and not exists (select from auth.identities i where i.user_id = me and i.id <> target.id) then
    raise exception using errcode = 'PT409', message = 'this identity is the only way to sign in to the account',
      hint = 'Set a password or link another identity first.';
  end if;
  delete from auth.identities i where i.id = target.id;
  return json_build_object('id', target.id, 'provider', target.provider);
end
$$;

comment on table auth.identities is 'OpenID Connect identities of accounts; see gateway.sign_in_with_identity.';
comment on table auth.identity_auth_codes is 'One-time codes of /auth/callback, exchanged by api.exchange_auth_code.';
comment on function api.exchange_auth_code(text, text) is
  'Exchange the one-time code of /auth/callback and its PKCE verifier for a session (as sign_in). Single use, 60 seconds.';
comment on function api.my_identities() is 'The OpenID Connect identities linked to the current account.';
comment on function api.unlink_identity(uuid) is 'Unlink an identity; refused when it is the only way left to sign in.';

revoke all on table auth.identities, auth.identity_auth_codes from public;
revoke all on function auth.has_password(auth.users), auth.account_email_verified(uuid, text),
  gateway.sign_in_with_identity(text, text, text, text, boolean, text, text, text, boolean),
  api.exchange_auth_code(text, text), api.my_identities(), api.unlink_identity(uuid) from public;
grant execute on function gateway.sign_in_with_identity(text, text, text, text, boolean, text, text, text, boolean) to auth_gateway;
grant execute on function api.exchange_auth_code(text, text) to anon, authenticated;
grant execute on function api.my_identities(), api.unlink_identity(uuid) to authenticated;

reset role;
notify pgrst, 'reload schema';

-- migrate:down
set local role auth_admin;
drop function api.unlink_identity(uuid);
drop function api.my_identities();
drop function api.exchange_auth_code(text, text);
drop function gateway.sign_in_with_identity(text, text, text, text, boolean, text, text, text, boolean);
drop function auth.account_email_verified(uuid, text);
drop function auth.has_password(auth.users);
drop table auth.identity_auth_codes;
drop table auth.identities;
drop schema gateway;
reset role;
revoke auth_gateway from authenticator;
drop role if exists auth_gateway;
notify pgrst, 'reload schema';
