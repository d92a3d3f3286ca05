/**
 * Which cached GET answers a successful write evicts.
 *
 * Generic rule (what the compliance functions rely on): an answer whose arguments include
 * `tenant_id` is tagged `tenant:<tenant_id>`, and a successful POST to any function whose
 * arguments include `tenant_id` evicts that tag. The table below adds explicit rules for writes
 * whose arguments do not name the tenant.
 */
export interface CacheRule {
  /** Extra tags a successful POST to this function evicts, computed from its arguments. */
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
 */
export const NEVER_CACHED = new Set(["session_active", "validate_token", "me", "scan", "scan_job", "my_tenants", "my_invitations"]);

/**
 * Writes that name a tenant but evict nothing. decline_invitation changes no answer a member of
 * the tenant can read (list_invitations shows a declined invitation until it expires), and
 * evicting the tenant's answers would itself tell its admins, through X-Cache, that someone with
 * an account answered their invitation. (accept_invitation does evict: the invitee becomes a
 * member, so list_members and the tenant's other answers change.)
 */
export const EVICTS_NOTHING = new Set(["decline_invitation"]);

/** Tags of a GET answer, from its arguments. */
export function tagsForRead(args: Record<string, unknown>): string[] {
  const tags: string[] = [];
  for (const name of TAG_ARGUMENTS) {
    const value = args[name];
    if (typeof value === "string" && value !== "") tags.push(`tenant:${value}`);
  }
  return tags;
}

/** Tags a successful POST evicts, from its function name and arguments. */
export function tagsForWrite(fn: string, args: unknown): string[] {
  if (EVICTS_NOTHING.has(fn)) return [];
  const record = args !== null && typeof args === "object" && !Array.isArray(args) ? (args as Record<string, unknown>) : {};
  const tags = tagsForRead(record);
  const rule = EXPLICIT_RULES[fn];
  if (rule) tags.push(...rule.evicts(record));
  return [...new Set(tags)];
}
