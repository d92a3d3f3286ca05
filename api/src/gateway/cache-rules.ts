/**
 * Which cached GET answers a successful write evicts.
 *
 * Generic rule (what the compliance functions rely on): an answer whose arguments include
 * `tenant_id` is tagged `tenant:<tenant_id>`, and a POST to any function whose arguments
 * include `tenant_id` evicts that tag. Tenant ids are read as PostgreSQL reads a uuid and
 * tagged in its canonical text, so `A0EE…`, `{a0ee…}` and `a0ee…` are one tenant. The table
 * below adds explicit rules for writes whose arguments do not name the tenant.
 */
import { canonicalUuid } from "./resolve";

export interface CacheRule {
  /** Extra tags a POST to this function evicts, computed from its arguments. */
  evicts: (args: Record<string, unknown>) => string[];
}

export const TAG_ARGUMENTS = ["tenant_id"] as const;

export const EXPLICIT_RULES: Record<string, CacheRule> = {};

/**
 * Functions never cached although STABLE: their answer is the revocation or identity state the
 * gateway must see fresh (session_active, validate_token), or changes on every sign-in (me).
 * Compliance reads without a `tenant_id` argument cannot be evicted by tenant: scan_job changes
 * in the worker, my_tenants when someone else adds the caller, my_invitations when an admin of
 * any tenant invites the caller, and scan must disappear at once for a removed member.
 * mfa_factors is the state of the second factor, which a verification changes at once.
 */
export const NEVER_CACHED = new Set(["session_active", "validate_token", "me", "my_sessions", "scan", "scan_job", "my_tenants", "my_invitations", "my_security_events", "tenant_audit", "verify_audit_trail", "mfa_factors"]);

/**
 * Writes that name a tenant but evict nothing. decline_invitation changes no answer a member of
 * the tenant can read (list_invitations shows a declined invitation until it expires), and
 * evicting the tenant's answers would itself tell its admins, through X-Cache, that someone with
 * an account answered their invitation. (accept_invitation does evict: the invitee becomes a
 * member, so list_members and the tenant's other answers change.)
 */
export const EVICTS_NOTHING = new Set([
  "decline_invitation",
  // The MFA functions change no cached answer: their own read (mfa_factors) is never cached, and
  // cached answers are keyed by the caller's aal, so a session reaching aal2 reads anew.
  // (set_tenant_require_mfa names its tenant and evicts it like any tenant write.)
  "mfa_enroll_totp", "mfa_verify_enrollment", "mfa_challenge", "mfa_verify", "mfa_use_recovery_code",
  "mfa_regenerate_recovery_codes", "mfa_unenroll",
]);

/**
 * Tags of a GET answer, from its query string; undefined when the answer must not be cached
 * because a tag argument is repeated or is not a uuid PostgreSQL would accept (the call then
 * fails upstream, or would be cached under a tag no write evicts).
 */
export function tagsForRead(query: URLSearchParams): string[] | undefined {
  const tags: string[] = [];
  for (const name of TAG_ARGUMENTS) {
    const values = query.getAll(name);
    if (values.length === 0) continue;
    const tenant = values.length === 1 ? canonicalUuid(values[0]) : undefined;
    if (!tenant) return undefined;
    tags.push(`tenant:${tenant}`);
  }
  return tags;
}

/**
 * Tags a POST evicts, from its function name and its body in any shape: an object, or an array
 * of objects (PostgREST calls with the first; every element's tenant is evicted all the same).
 */
export function tagsForWrite(fn: string, body: unknown): string[] {
  if (EVICTS_NOTHING.has(fn)) return [];
  const records = (Array.isArray(body) ? body : [body]).filter(
    (item): item is Record<string, unknown> => item !== null && typeof item === "object" && !Array.isArray(item),
  );
  const tags = new Set<string>();
  for (const record of records) {
    for (const name of TAG_ARGUMENTS) {
      const tenant = canonicalUuid(record[name]);
      if (tenant) tags.add(`tenant:${tenant}`);
    }
    const rule = EXPLICIT_RULES[fn];
    if (rule) for (const tag of rule.evicts(record)) tags.add(tag);
  }
  return [...tags];
}
