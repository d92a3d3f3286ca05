import type { OidcProviderConfig } from "../../config/oidc";

/** The verified ID token's claims (openid-client has checked issuer, audience, signature, nonce, expiry). */
export type IdClaims = Record<string, unknown> & { iss: string; sub: string };

/** Who signed in, as gateway.sign_in_with_identity takes it. */
export interface ProviderIdentity {
  subject: string;
  tenantId: string | null;
  email: string | null;
  emailVerified: boolean;
  firstName: string | null;
  lastName: string | null;
}

/** Why an ID token was refused after openid-client accepted it. */
export class IdentityRefused extends Error {
  constructor(readonly status: 401 | 403, message: string, readonly details: string | null = null) {
    super(message);
  }
}

const text = (value: unknown): string | null => (typeof value === "string" && value.trim() !== "" ? value.trim() : null);

/**
 * Microsoft Entra ID's own rules, on top of openid-client's checks: the issuer is the one of
 * the token's tenant (the discovered issuer of a multi-tenant authority is a template,
 * `https://login.microsoftonline.com/{tenantid}/v2.0`), the tenant is allowed, and the stable
 * identity is (tid, oid), never the pairwise `sub`.
 */
export function checkEntraClaims(claims: IdClaims, issuerTemplate: string, entra: NonNullable<OidcProviderConfig["entra"]>): { tid: string; oid: string } {
  const tid = text(claims.tid)?.toLowerCase();
  const oid = text(claims.oid)?.toLowerCase();
  if (!tid || !oid) throw new IdentityRefused(401, "the ID token has no tenant (tid) or object id (oid)");
  const expectedIssuer = issuerTemplate.replace("{tenantid}", tid);
  if (claims.iss !== expectedIssuer) {
    throw new IdentityRefused(401, "the ID token's issuer is not the one of its tenant", `expected ${expectedIssuer}`);
  }
  if (!entra.allowedTenants.includes("*") && !entra.allowedTenants.includes(tid)) {
    throw new IdentityRefused(403, "this organization (tenant) may not sign in", `tenant ${tid} is not in the allowlist`);
  }
  return { tid, oid };
}

/** The identity an ID token names, by the provider's preset. */
export function identityOf(claims: IdClaims, provider: OidcProviderConfig, issuerTemplate: string): ProviderIdentity {
  const names = nameOf(claims);
  if (provider.preset === "entra" && provider.entra) {
    const { tid, oid } = checkEntraClaims(claims, issuerTemplate, provider.entra);
    // Entra's `email` is not verified unless the xms_edov optional claim says so.
    let email = claims.xms_edov === true || claims.xms_edov === "1" || claims.xms_edov === "true" ? text(claims.email) : null;
    if (!email && provider.entra.useUpnAsEmail) email = text(claims.upn);
    return { subject: oid, tenantId: tid, email, emailVerified: email !== null, ...names };
  }
  const email = text(claims.email);
  return { subject: claims.sub, tenantId: null, email, emailVerified: email !== null && claims.email_verified === true, ...names };
}

function nameOf(claims: IdClaims): { firstName: string | null; lastName: string | null } {
  let firstName = text(claims.given_name);
  let lastName = text(claims.family_name);
  const full = text(claims.name);
  if ((!firstName || !lastName) && full) {
    const parts = full.split(/\s+/);
    firstName ??= parts[0] ?? null;
    lastName ??= parts.length > 1 ? parts.slice(1).join(" ") : null;
  }
  return { firstName, lastName };
}
