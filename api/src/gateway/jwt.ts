import { compactVerify, decodeProtectedHeader, SignJWT } from "jose";
import { LRUCache } from "lru-cache";
import { jwtVerifications } from "../engine/jwt";
import { gatewayError, type ApiError } from "./errors";

/** Claims the gateway reads from an access token. Anything else is passed through untouched. */
export interface AccessClaims {
  sub?: string;
  role?: string;
  sid?: string;
  email?: string;
  exp?: number;
  [claim: string]: unknown;
}

/** A session's assurance level and the methods that reached it (auth.sessions.aal / amr). */
export interface SessionAssurance {
  aal: "aal1" | "aal2";
  amr: { method: string; timestamp: number; provider?: string }[];
}

export interface VerifiedToken {
  token: string;
  claims: AccessClaims;
}

/** PostgREST tolerates this much clock difference on exp, nbf and iat. */
const CLOCK_SKEW_SECONDS = 30;
const HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"] as const;
type HmacAlgorithm = (typeof HMAC_ALGORITHMS)[number];
const isHmac = (alg: unknown): alg is HmacAlgorithm => HMAC_ALGORITHMS.includes(alg as HmacAlgorithm);
const VERIFIED_CACHE_MAX = 20_000;

function jwtError(code: "PGRST301" | "PGRST303", message: string, details: string | null = null): ApiError {
  return gatewayError(code, {
    params: { reason: message },
    details,
    headers: { "WWW-Authenticate": `Bearer error="invalid_token", error_description=${JSON.stringify(message)}` },
  });
}

const decoder = new TextDecoder();

/**
 * Verifies bearer tokens the way PostgREST does (same checks, same codes and messages), so a
 * client sees identical errors whether the gateway or PostgREST refuses a token; and mints the
 * access tokens that sign_in / issue_token hand out.
 */
export class JwtService {
  private readonly key: Uint8Array;
  /**
   * Imported once per algorithm: importing the raw secret on every verification costs more than
   * the HMAC. At most one per HMAC algorithm (no other reaches cryptoKey).
   */
  private readonly cryptoKeys: Partial<Record<HmacAlgorithm, Promise<CryptoKey>>> = {};
  /**
   * token → claims, for tokens already verified; least recently used out, each kept until its
   * exp (no longer), and re-checked for expiry on each hit so the answer is PostgREST's "JWT expired".
   */
  private readonly verified: LRUCache<string, AccessClaims>;

  constructor(
    secret: string,
    private readonly audience: string | undefined,
    private readonly accessTtlSeconds: number,
    verifiedCacheMax = VERIFIED_CACHE_MAX,
  ) {
    this.key = new TextEncoder().encode(secret);
    this.verified = new LRUCache({ max: verifiedCacheMax });
  }

  /**
   * The token from an Authorization header, undefined for none, or a PostgREST 401 (thrown).
   * Answered at once for a token verified before (the common case), else after verification.
   */
  verifyHeader(authorization: string | null): VerifiedToken | undefined | Promise<VerifiedToken> {
    if (authorization === null) return undefined;
    const match = /^bearer\s?(.*)$/is.exec(authorization.trim());
    // PostgREST ignores Authorization schemes other than Bearer (the request stays anonymous).
    if (!match) return undefined;
    const token = (match[1] ?? "").trim();
    if (token === "") throw jwtError("PGRST301", "Empty JWT is sent in Authorization header");
    const known = this.known(token);
    if (known) return { token, claims: known };
    return this.verify(token).then((claims) => ({ token, claims }));
  }

  async verify(token: string): Promise<AccessClaims> {
    const known = this.known(token);
    if (known) return known;
    if (jwtVerifications.hasSubscribers) jwtVerifications.publish({ verifier: "gateway" });
    const now = Math.floor(Date.now() / 1000);
    const parts = token.split(".");
    if (parts.length !== 3) throw jwtError("PGRST301", `Expected 3 parts in JWT; got ${parts.length}`);
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw jwtError("PGRST301", "JWT cryptographic operation failed");
    }
    if (alg === "none") {
      throw jwtError("PGRST301", "Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'");
    }
    if (!isHmac(alg)) {
      throw jwtError("PGRST301", "No suitable key or wrong key type", "None of the keys was able to decode the JWT");
    }
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(token, await this.cryptoKey(alg), { algorithms: [...HMAC_ALGORITHMS] }));
    } catch {
      throw jwtError("PGRST301", "No suitable key or wrong key type", "None of the keys was able to decode the JWT");
    }
    let claims: unknown;
    try {
      claims = JSON.parse(decoder.decode(payload));
    } catch {
      throw jwtError("PGRST301", "JWT cryptographic operation failed");
    }
    if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
      throw jwtError("PGRST303", "Parsing claims failed");
    }
    const typed = claims as AccessClaims;
    this.checkClaimTypes(typed);
    this.checkTimes(typed, now);
    this.checkAudience(typed);
    // Kept until the token expires (plus the tolerated skew); a token without exp, until pushed out.
    const ttl = typeof typed.exp === "number" ? (typed.exp + CLOCK_SKEW_SECONDS - now) * 1000 : 0;
    this.verified.set(token, typed, { ttl });
    return typed;
  }

  /** The claims of a token verified before, re-checked for expiry; undefined when not seen yet. */
  private known(token: string): AccessClaims | undefined {
    const cached = this.verified.get(token);
    if (cached) this.checkTimes(cached, Math.floor(Date.now() / 1000));
    return cached;
  }

  private cryptoKey(alg: HmacAlgorithm): Promise<CryptoKey> {
    return (this.cryptoKeys[alg] ??= crypto.subtle.importKey("raw", this.key as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: `SHA-${alg.slice(2)}` }, false, ["sign", "verify"]));
  }

  private checkClaimTypes(claims: AccessClaims) {
    for (const name of ["exp", "nbf", "iat"]) {
      if (claims[name] !== undefined && typeof claims[name] !== "number") {
        throw jwtError("PGRST303", `The JWT '${name}' claim must be a number`);
      }
    }
    const aud = claims.aud;
    if (aud !== undefined && typeof aud !== "string" && !(Array.isArray(aud) && aud.every((a) => typeof a === "string"))) {
      throw jwtError("PGRST303", "The JWT 'aud' claim must be a string or an array of strings");
    }
  }

  private checkTimes(claims: AccessClaims, now: number) {
    if (typeof claims.exp === "number" && now - CLOCK_SKEW_SECONDS >= claims.exp) throw jwtError("PGRST303", "JWT expired");
    if (typeof claims.nbf === "number" && now + CLOCK_SKEW_SECONDS < claims.nbf) throw jwtError("PGRST303", "JWT not yet valid");
    if (typeof claims.iat === "number" && now + CLOCK_SKEW_SECONDS < claims.iat) throw jwtError("PGRST303", "JWT issued at future");
  }

  private checkAudience(claims: AccessClaims) {
    if (this.audience === undefined || claims.aud === undefined) return;
    const auds = Array.isArray(claims.aud) ? (claims.aud as string[]) : [claims.aud as string];
    // PostgREST ignores an empty audience list, and refuses a token naming only other audiences.
    if (Array.isArray(claims.aud) && auds.length === 0) return;
    if (!auds.includes(this.audience)) throw jwtError("PGRST303", "JWT not in audience");
  }

  /**
   * An access token for a session that sign_in, issue_token, exchange_auth_code or an MFA step
   * just opened, rotated or raised. `aal` and `amr` (RFC 8176 methods with their times, as
   * Supabase Auth writes them) are the session's, from the database, so a refreshed token keeps
   * them; the SQL helpers auth.aal() and auth.require_fresh_aal2() read them back.
   */
  async mintAccessToken(
    user: { id: string; email: string; emailVerified?: boolean },
    sessionId: string,
    assurance: SessionAssurance,
  ): Promise<{ token: string; expiresIn: number }> {
    const now = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = {
      role: "authenticated", sid: sessionId, email: user.email, email_verified: user.emailVerified === true,
      aal: assurance.aal, amr: assurance.amr,
    };
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(user.id)
      .setIssuedAt(now)
      .setExpirationTime(now + this.accessTtlSeconds);
    if (this.audience !== undefined) jwt.setAudience(this.audience);
    return { token: await jwt.sign(await this.cryptoKey("HS256")), expiresIn: this.accessTtlSeconds };
  }
}
