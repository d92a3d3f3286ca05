-- Development seed: one demo tenant, CIS Microsoft 365 Foundations rules and two scans.
-- Idempotent. Load it with `bun run seed`, which first creates the demo user through
-- api.sign_up (the password is hashed by the database, never stored here). With psql, create
-- that user first, then: psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -1 -f db/seed.sql
-- The writes go through the same api functions clients use, as the demo user, so the seed
-- obeys every check they make.

select set_config('request.jwt.claims',
  json_build_object('sub', (select id from auth.users where email = 'demo@autoaudit.dev'), 'role', 'authenticated')::text,
  true);

do $$
declare
  demo uuid := (select id from auth.users where email = 'demo@autoaudit.dev');
begin
  if demo is null then
    raise exception 'the demo user demo@autoaudit.dev does not exist'
      using hint = 'Run `bun run seed`, which creates it.';
  end if;
  insert into compliance.tenants (id, name, created_by)
  values ('d3e0c0de-0000-4000-8000-000000000001', 'Contoso (demo)', demo)
  on conflict (id) do nothing;
  insert into compliance.tenant_members (tenant_id, user_id, role)
  values ('d3e0c0de-0000-4000-8000-000000000001', demo, 'admin')
  on conflict (tenant_id, user_id) do update set role = 'admin';
end
$$;

-- CIS Microsoft 365 Foundations Benchmark (v3.x numbering), a representative subset.
select api.upsert_rules('d3e0c0de-0000-4000-8000-000000000001', 'cis-m365', $rules$[
  {"key": "1.1.1", "severity": "high", "title": "Ensure Administrative accounts are cloud-only"},
  {"key": "1.1.3", "severity": "medium", "title": "Ensure that between two and four global admins are designated"},
  {"key": "1.1.4", "severity": "medium", "title": "Ensure administrative accounts use licenses with a reduced application footprint"},
  {"key": "1.2.1", "severity": "medium", "title": "Ensure that only organizationally managed/approved public groups exist"},
  {"key": "1.2.2", "severity": "medium", "title": "Ensure sign-in to shared mailboxes is blocked"},
  {"key": "1.3.1", "severity": "low", "title": "Ensure the 'Password expiration policy' is set to 'Set passwords to never expire (recommended)'"},
  {"key": "1.3.2", "severity": "medium", "title": "Ensure 'Idle session timeout' is set to '3 hours (or less)' for unmanaged devices"},
  {"key": "1.3.3", "severity": "medium", "title": "Ensure 'External sharing' of calendars is not available"},
  {"key": "1.3.4", "severity": "low", "title": "Ensure 'User owned apps and services' is restricted"},
  {"key": "1.3.6", "severity": "medium", "title": "Ensure the customer lockbox feature is enabled"},
  {"key": "2.1.1", "severity": "high", "title": "Ensure Safe Links for Office Applications is Enabled"},
  {"key": "2.1.2", "severity": "medium", "title": "Ensure the Common Attachment Types Filter is enabled"},
  {"key": "2.1.3", "severity": "medium", "title": "Ensure notifications for internal users sending malware is Enabled"},
  {"key": "2.1.4", "severity": "high", "title": "Ensure Safe Attachments policy is enabled"},
  {"key": "2.1.8", "severity": "high", "title": "Ensure that SPF records are published for all Exchange Domains"},
  {"key": "2.1.9", "severity": "high", "title": "Ensure that DKIM is enabled for all Exchange Online Domains"},
  {"key": "2.1.10", "severity": "high", "title": "Ensure DMARC Records for all Exchange Online domains are published"},
  {"key": "3.1.1", "severity": "high", "title": "Ensure Microsoft 365 audit log search is Enabled"},
  {"key": "5.2.2.1", "severity": "critical", "title": "Ensure multifactor authentication is enabled for all users in administrative roles"},
  {"key": "5.2.2.2", "severity": "critical", "title": "Ensure multifactor authentication is enabled for all users"},
  {"key": "5.2.2.3", "severity": "high", "title": "Enable Conditional Access policies to block legacy authentication"},
  {"key": "5.2.3.2", "severity": "medium", "title": "Ensure custom banned passwords lists are used"},
  {"key": "6.1.1", "severity": "high", "title": "Ensure 'AuditDisabled' organizationally is set to 'False'"},
  {"key": "6.2.1", "severity": "high", "title": "Ensure all forms of mail forwarding are blocked and/or disabled"},
  {"key": "6.5.1", "severity": "high", "title": "Ensure modern authentication for Exchange Online is enabled"},
  {"key": "7.2.1", "severity": "high", "title": "Ensure modern authentication for SharePoint applications is required"},
  {"key": "7.2.3", "severity": "medium", "title": "Ensure external content sharing is restricted"},
  {"key": "8.1.1", "severity": "medium", "title": "Ensure external file sharing in Teams is enabled for only approved cloud storage services"},
  {"key": "8.2.1", "severity": "medium", "title": "Ensure 'external access' is restricted in the Teams admin center"}
]$rules$::jsonb);

-- Two scans a few weeks apart: the second shows MFA and mail authentication fixed.
select api.submit_scan('d3e0c0de-0000-4000-8000-000000000001', 'cis-m365', $findings$[
  {"rule": "1.1.1", "result": "fail", "evidence": {"synced_admins": ["adm-jdoe@contoso.com"]}},
  {"rule": "1.1.3", "result": "fail", "evidence": {"global_admins": 6}},
  {"rule": "1.1.4", "result": "pass"},
  {"rule": "1.2.1", "result": "not_tested", "evidence": {"reason": "requires manual review"}},
  {"rule": "1.2.2", "result": "fail", "evidence": {"shared_mailboxes_with_sign_in": ["reception@contoso.com"]}},
  {"rule": "1.3.1", "result": "pass"},
  {"rule": "1.3.2", "result": "not_tested", "evidence": {"reason": "Conditional Access licence missing"}},
  {"rule": "1.3.3", "result": "pass"},
  {"rule": "1.3.4", "result": "fail"},
  {"rule": "1.3.6", "result": "fail", "priority": "low"},
  {"rule": "2.1.1", "result": "pass"},
  {"rule": "2.1.2", "result": "pass"},
  {"rule": "2.1.3", "result": "fail"},
  {"rule": "2.1.4", "result": "pass"},
  {"rule": "2.1.8", "result": "pass", "evidence": {"domains": {"contoso.com": "v=spf1 include:spf.protection.outlook.com -all"}}},
  {"rule": "2.1.9", "result": "fail", "evidence": {"domains_without_dkim": ["contoso.com"]}},
  {"rule": "2.1.10", "result": "fail", "evidence": {"domains_without_dmarc": ["contoso.com"]}},
  {"rule": "3.1.1", "result": "pass"},
  {"rule": "5.2.2.1", "result": "fail", "evidence": {"admins_without_mfa": ["adm-jdoe@contoso.com"]}},
  {"rule": "5.2.2.2", "result": "fail", "evidence": {"users_without_mfa": 42}},
  {"rule": "5.2.2.3", "result": "fail"},
  {"rule": "5.2.3.2", "result": "not_tested"},
  {"rule": "6.1.1", "result": "pass"},
  {"rule": "6.2.1", "result": "fail"},
  {"rule": "6.5.1", "result": "pass"},
  {"rule": "7.2.1", "result": "pass"},
  {"rule": "7.2.3", "result": "fail"},
  {"rule": "8.1.1", "result": "pass"},
  {"rule": "8.2.1", "result": "fail"}
]$findings$::jsonb, '2026-11-02T09:00:00Z', '2026-11-02T09:04:12Z')
 where not exists (select from compliance.scans where tenant_id = 'd3e0c0de-0000-4000-8000-000000000001');

select api.submit_scan('d3e0c0de-0000-4000-8000-000000000001', 'cis-m365', $findings$[
  {"rule": "1.1.1", "result": "pass"},
  {"rule": "1.1.3", "result": "pass", "evidence": {"global_admins": 3}},
  {"rule": "1.1.4", "result": "pass"},
  {"rule": "1.2.1", "result": "not_tested", "evidence": {"reason": "requires manual review"}},
  {"rule": "1.2.2", "result": "pass"},
  {"rule": "1.3.1", "result": "pass"},
  {"rule": "1.3.2", "result": "not_tested", "evidence": {"reason": "Conditional Access licence missing"}},
  {"rule": "1.3.3", "result": "pass"},
  {"rule": "1.3.4", "result": "fail"},
  {"rule": "1.3.6", "result": "fail", "priority": "low"},
  {"rule": "2.1.1", "result": "pass"},
  {"rule": "2.1.2", "result": "pass"},
  {"rule": "2.1.3", "result": "pass"},
  {"rule": "2.1.4", "result": "pass"},
  {"rule": "2.1.8", "result": "pass"},
  {"rule": "2.1.9", "result": "pass"},
  {"rule": "2.1.10", "result": "pass", "evidence": {"domains": {"contoso.com": "v=DMARC1; p=quarantine"}}},
  {"rule": "3.1.1", "result": "pass"},
  {"rule": "5.2.2.1", "result": "pass"},
  {"rule": "5.2.2.2", "result": "fail", "evidence": {"users_without_mfa": 3}},
  {"rule": "5.2.2.3", "result": "pass"},
  {"rule": "5.2.3.2", "result": "not_tested"},
  {"rule": "6.1.1", "result": "pass"},
  {"rule": "6.2.1", "result": "fail"},
  {"rule": "6.5.1", "result": "pass"},
  {"rule": "7.2.1", "result": "pass"},
  {"rule": "7.2.3", "result": "fail"},
  {"rule": "8.1.1", "result": "pass"},
  {"rule": "8.2.1", "result": "pass"}
]$findings$::jsonb, '2026-11-23T09:00:00Z', '2026-11-23T09:03:48Z')
 where (select count(*) from compliance.scans where tenant_id = 'd3e0c0de-0000-4000-8000-000000000001') = 1;
