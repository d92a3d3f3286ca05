/**
 * JWT verification as PostgREST does it: the token's signature against the configured HMAC
 * secret, JWK or JWK set (via jose), then exp/nbf/iat with 30 s of clock skew and aud against
 * PGRST_JWT_AUD, then the role from PGRST_JWT_ROLE_CLAIM_KEY or the anonymous role.
 * Failures are PGRST300–303 with PostgREST's statuses and WWW-Authenticate header.
 */
import { channel } from "node:diagnostics_channel";
import { compactVerify, importJWK, type JWK } from "jose";
import { ApiError } from "./errors";
import type { EngineConfig } from "../config/engine";
import { secretIsJwk } from "../config/engine";
import { parseJsPath, walkJsPath, type JsPath } from "./jspath";

const CLOCK_SKEW_SECONDS = 30;

export interface AuthResult {
  /** The role to switch to; undefined runs the request as the connecting user (no JWT secret, no anon role). */
  role: string | undefined;
  /** What `request.jwt.claims` holds: the token's claims with `role` set to the effective role. */
  claims: Record<string, unknown>;
  /** PostgREST's "authed": the request does not run as the anonymous role (decides 401 vs 403 on 42501). */
  authed: boolean;
}

/**
 * Published once per token whose signature is checked (a cache miss), by the engine and by the
 * gateway (`{ verifier: "engine" | "gateway" }`): what shows, in tests or tracing, that a request
 * through the embedded stack has its token verified once. Free while nobody subscribes.
 */
export const jwtVerifications = channel("autoaudit.jwt.verify");

/**
 * A caller's bearer token and the claims of it that the gateway verified, handed to the engine
 * in-process (Engine.handle), never in the request itself: nothing a client sends can make the
 * engine skip its own verification.
 */
export interface VerifiedCaller {
  token: string;
  claims: Record<string, unknown>;
}

type VerifyKey = { key: CryptoKey | Uint8Array; algs: Set<string> };

function invalidToken(code: string, message: string, details: string | null = null): ApiError {
  const description = JSON.stringify(message);
  return new ApiError(401, code, message, details, null, {
    "WWW-Authenticate": `Bearer error="invalid_token", error_description=${description}`,
  });
}

const decodeError = (message: string, details: string | null = null) => invalidToken("PGRST301", message, details);
const claimsError = (message: string) => invalidToken("PGRST303", message);

const HMAC_ALGS = ["HS256", "HS384", "HS512"];

function defaultAlg(jwk: JWK): string {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === "RSA") return "RS256";
  if (jwk.kty === "EC") return jwk.crv === "P-384" ? "ES384" : jwk.crv === "P-521" ? "ES512" : "ES256";
  if (jwk.kty === "OKP") return "EdDSA";
  return "HS256";
}

async function keysFromSecret(secret: string, isBase64: boolean): Promise<VerifyKey[]> {
  if (secretIsJwk(secret)) {
    const parsed = JSON.parse(secret) as JWK | { keys: JWK[] };
    const jwks: JWK[] = "keys" in parsed && Array.isArray(parsed.keys) ? parsed.keys : [parsed as JWK];
    const keys: VerifyKey[] = [];
    for (const jwk of jwks) {
      const alg = defaultAlg(jwk);
      try {
        const key = await importJWK({ ...jwk, key_ops: undefined }, alg);
        keys.push({ key: key as CryptoKey | Uint8Array, algs: new Set(jwk.kty === "oct" ? HMAC_ALGS : [alg]) });
      } catch {
        // A key that cannot be imported simply never verifies anything, as in PostgREST.
      }
    }
    return keys;
  }
  const bytes = isBase64 ? new Uint8Array(Buffer.from(secret, "base64")) : new TextEncoder().encode(secret);
  return [{ key: bytes, algs: new Set(HMAC_ALGS) }];
}

function decodeSegmentJson(segment: string): unknown {
  const text = Buffer.from(segment, "base64url").toString("utf8");
  return JSON.parse(text);
}

interface CachedToken {
  payload: Record<string, unknown>;
}

export class JwtAuthenticator {
  private keys: Promise<VerifyKey[]> | undefined;
  private readonly rolePath: JsPath;
  private readonly cache = new Map<string, CachedToken>();

  constructor(private readonly config: EngineConfig) {
    this.rolePath = parseJsPath(config.jwtRoleClaimKey);
    if (config.jwtSecret !== undefined) this.keys = keysFromSecret(config.jwtSecret, config.jwtSecretIsBase64);
  }

  /**
   * Resolves the request's role and claims from its Authorization header; throws ApiError as
   * PostgREST answers. With `verified` (an in-process gateway's verification of this very token)
   * the signature is not checked again; the claims still go through PostgREST's checks and role
   * resolution here, so the answer is the one the engine alone would give.
   */
  async authenticate(authorization: string | null, verified?: VerifiedCaller): Promise<AuthResult> {
    const token = bearerToken(authorization);
    if (token === undefined) return this.anonymous();
    if (!this.keys) throw new ApiError(500, "PGRST300", "Server lacks JWT secret");
    // Trusted only for the token the gateway verified: any other is verified as usual.
    const payload = verified !== undefined && verified.token === token ? verified.claims : await this.verifiedPayload(token);
    this.checkClaims(payload);
    const found = walkJsPath(payload, this.rolePath);
    let role: string | undefined;
    if (found !== undefined && found !== null) role = typeof found === "string" ? found : JSON.stringify(found);
    else role = this.config.dbAnonRole;
    if (role === undefined) throw anonymousDisabled();
    return { role, claims: { ...payload, role }, authed: role !== this.config.dbAnonRole };
  }

  private anonymous(): AuthResult {
    const anon = this.config.dbAnonRole;
    if (anon === undefined) {
      // With a JWT secret but no anonymous role, PostgREST requires a token. Without either
      // (the conformance "bulk" setup), requests run as the connecting user.
      if (this.config.jwtSecret !== undefined) throw anonymousDisabled();
      return { role: undefined, claims: {}, authed: false };
    }
    return { role: anon, claims: { role: anon }, authed: false };
  }

  private async verifiedPayload(token: string): Promise<Record<string, unknown>> {
    const cached = this.cache.get(token);
    if (cached) return cached.payload;
    if (jwtVerifications.hasSubscribers) jwtVerifications.publish({ verifier: "engine" });
    if (token === "") throw decodeError("Empty JWT is sent in Authorization header");
    const parts = token.split(".");
    if (parts.length !== 3) throw decodeError(`Expected 3 parts in JWT; got ${parts.length}`);
    let header: unknown;
    try {
      header = decodeSegmentJson(parts[0]!);
    } catch {
      throw decodeError("JWT cryptographic operation failed");
    }
    if (!header || typeof header !== "object" || typeof (header as { alg?: unknown }).alg !== "string") {
      throw decodeError("JWT cryptographic operation failed");
    }
    const alg = (header as { alg: string }).alg;
    if (alg === "none") throw decodeError("Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'");
    const keys = (await this.keys!).filter((k) => k.algs.has(alg));
    let verified: Uint8Array | undefined;
    for (const k of keys) {
      try {
        verified = (await compactVerify(token, k.key, { algorithms: [alg] })).payload;
        break;
      } catch {
        // try the next key
      }
    }
    if (!verified) throw decodeError("No suitable key or wrong key type", "None of the keys was able to decode the JWT");
    let payload: unknown;
    try {
      payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(verified));
    } catch {
      throw claimsError("Parsing claims failed");
    }
    if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw claimsError("Parsing claims failed");
    if (this.cache.size >= 1000) this.cache.clear();
    this.cache.set(token, { payload: payload as Record<string, unknown> });
    return payload as Record<string, unknown>;
  }

  /** exp, nbf, iat, aud in PostgREST's order; the first failure wins. */
  private checkClaims(claims: Record<string, unknown>): void {
    const now = Math.floor(Date.now() / 1000);
    const seconds = (v: number) => (Number.isInteger(v) ? v : 0);
    const time = (key: string, notNumber: string, invalid: (t: number) => boolean, failure: string) => {
      const v = claims[key];
      if (v === undefined || v === null) return;
      if (typeof v !== "number") throw claimsError(notNumber);
      if (invalid(seconds(v))) throw claimsError(failure);
    };
    time("exp", "The JWT 'exp' claim must be a number", (t) => now - CLOCK_SKEW_SECONDS > t, "JWT expired");
    time("nbf", "The JWT 'nbf' claim must be a number", (t) => now + CLOCK_SKEW_SECONDS < t, "JWT not yet valid");
    time("iat", "The JWT 'iat' claim must be a number", (t) => now + CLOCK_SKEW_SECONDS < t, "JWT issued at future");
    const aud = claims.aud;
    if (aud === undefined || aud === null) return;
    const audError = "The JWT 'aud' claim must be a string or an array of strings";
    const expected = this.config.jwtAud;
    const matches = (a: string) => expected === undefined || a === expected;
    if (typeof aud === "string") {
      if (!matches(aud)) throw claimsError("JWT not in audience");
    } else if (Array.isArray(aud)) {
      if (!aud.every((a) => typeof a === "string")) throw claimsError(audError);
      if (aud.length > 0 && !aud.some((a) => matches(a as string))) throw claimsError("JWT not in audience");
    } else {
      throw claimsError(audError);
    }
  }
}

function anonymousDisabled(): ApiError {
  return new ApiError(401, "PGRST302", "Anonymous access is disabled", null, null, { "WWW-Authenticate": "Bearer" });
}

/** The token of a `Bearer` Authorization header (scheme case-insensitive); undefined when there is none. */
export function bearerToken(authorization: string | null): string | undefined {
  if (authorization === null) return undefined;
  const space = authorization.indexOf(" ");
  const scheme = space < 0 ? authorization : authorization.slice(0, space);
  if (scheme.toLowerCase() !== "bearer") return undefined;
  return space < 0 ? "" : authorization.slice(space + 1).trim();
}
