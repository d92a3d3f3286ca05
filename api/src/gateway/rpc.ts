import type { ApiConfig } from "../config";
import type { Admission } from "./admission";
import type { CachedResponse, ResponseCache } from "./cache";
import { NEVER_CACHED, tagsForRead, tagsForWrite } from "./cache-rules";
import type { FunctionCatalog } from "./catalog";
import { checkQueryBounds, decodeUtf8Body, parseJsonBounded, readBody } from "../engine/request";
import { rawPath, resolveSchema, resolveTarget } from "./resolve";
import { gatewayErrors } from "./errors";
import type { JwtService, SessionAssurance, VerifiedToken } from "./jwt";
import QRCode from "qrcode";
import type { RateLimits } from "./rate-limit";
import type { RequestNotes } from "./request-context";
import type { SessionGuard } from "./sessions";
import { checkNewPassword } from "./password-policy";
import { toResponse, UpstreamFailure, type Upstream, type UpstreamRequest, type UpstreamResponse } from "./upstream";

export interface RpcDeps {
  config: ApiConfig;
  jwt: JwtService;
  sessions: SessionGuard;
  upstream: Upstream;
  cache: ResponseCache;
  limits: RateLimits;
  admission: Admission;
  catalog: FunctionCatalog;
  /** Links committed audit events into their chains before an audit read (AuditSealer.sealBeforeRead). */
  sealAuditTrail?: () => Promise<void>;
  log: (event: Record<string, unknown>) => void;
}

/** Headers of a cached answer worth replaying (the rest describe the original exchange). */
const REPLAYED_HEADERS = ["content-type", "content-range", "preference-applied"];
/** The request headers the upstream is sent that shape a read's answer (see FORWARDED_HEADERS). */
const ANSWER_HEADERS = ["accept", "prefer", "range", "range-unit"];
const AUTH_SCHEMA = "api";
const BCRYPT_FUNCTIONS = new Set(["sign_in", "sign_up", "reset_password", "change_password"]);
/** The audit trail's reads: a signed-in caller reads its events sealed (with their chain hashes). */
const AUDIT_READS = new Set(["my_security_events", "tenant_audit", "verify_audit_trail"]);
/** The auth functions that change state: never callable with GET or HEAD, whatever the catalogue says. */
const POST_ONLY = new Set([
  "sign_in", "sign_up", "issue_token", "revoke_token", "revoke_all_tokens",
  "verify_email", "resend_verification", "request_password_reset", "reset_password", "change_password",
  "revoke_session", "revoke_other_sessions", "exchange_auth_code", "unlink_identity",
  "mfa_enroll_totp", "mfa_verify_enrollment", "mfa_challenge", "mfa_verify", "mfa_use_recovery_code",
  "mfa_regenerate_recovery_codes", "mfa_unenroll", "set_tenant_require_mfa",
]);
/** The MFA functions: refused while MFA is off (MFA_ENABLED / MFA_ENCRYPTION_KEY). */
const MFA_FUNCTIONS = new Set([
  "mfa_enroll_totp", "mfa_verify_enrollment", "mfa_factors", "mfa_challenge", "mfa_verify", "mfa_use_recovery_code",
  "mfa_regenerate_recovery_codes", "mfa_unenroll", "set_tenant_require_mfa",
]);
/**
 * The MFA functions that encrypt or decrypt secrets (or digest recovery codes) in SQL: their
 * `mfa_key` argument is always MFA_ENCRYPTION_KEY, whatever the caller sent
 * (docs/decisions/0003-mfa-secrets.md).
 */
const MFA_KEY_FUNCTIONS = new Set(["mfa_enroll_totp", "mfa_verify_enrollment", "mfa_verify", "mfa_use_recovery_code", "mfa_regenerate_recovery_codes"]);
/** The answers of these functions, besides the session, that their token response keeps. */
const SESSION_EXTRAS = ["factor", "recovery_codes", "recovery_codes_remaining"] as const;

/**
 * `/rpc/<fn>` and relation reads: verifies the caller's token and session, applies the
 * sign-in protections, the GET cache and the auth wrapping, and otherwise relays PostgREST's
 * answer unchanged.
 */
export class RpcHandler {
  constructor(private readonly deps: RpcDeps) {}

  /**
   * `/rpc/<fn>` and `/<relation>`. The target, schema and arguments are read once (resolve.ts,
   * readArguments); every decision below is taken from that reading, and the upstream is sent
   * exactly it: the resolved name re-encoded, the resolved schema, the canonical arguments.
   */
  async handle(request: Request, notes: RequestNotes): Promise<Response> {
    const method = request.method;
    const target = resolveTarget(rawPath(request.url));
    const rpc = "rpc" in target;
    if (method !== "GET" && method !== "HEAD" && (method !== "POST" || !rpc)) {
      throw rpc ? gatewayErrors.rpcMethodNotAllowed(method) : gatewayErrors.relationMethodNotAllowed(method);
    }
    const query = queryOf(request);
    const schema = resolveSchema(request.headers, method, this.deps.config.schemas);
    let caller = this.authenticate(request);
    if (caller instanceof Promise) caller = await caller;
    const clientAddress = notes.clientIp();
    const requestId = notes.requestId;
    // The token as verified here travels with every upstream call (see UpstreamFetch).
    const verified = caller;
    if (!rpc) return this.deps.upstream.relay({ method, target, query, schema, headers: request.headers, clientAddress, requestId, verified });

    const fn = target.rpc;
    if (schema === AUTH_SCHEMA && MFA_FUNCTIONS.has(fn) && !this.deps.config.mfa.enabled) throw gatewayErrors.mfaDisabled();
    // Only for a verified caller: anonymous requests cannot make the database seal.
    if (caller && schema === AUTH_SCHEMA && AUDIT_READS.has(fn)) await this.deps.sealAuditTrail?.();
    if (method !== "POST") {
      if (this.postOnly(schema, fn)) throw gatewayErrors.readOfVolatile(method);
      const read = { method, target, query, schema, headers: request.headers, clientAddress, requestId, verified, parse: false } as const;
      if (method === "GET" && this.cacheable(schema, fn)) return this.cached(request, schema, fn, read, caller, notes);
      return this.deps.upstream.relay(read);
    }

    const auth = schema === AUTH_SCHEMA;
    const hashes = auth && BCRYPT_FUNCTIONS.has(fn);
    // Overloaded: refused before the body is even read, so a flood of sign-ins costs as little
    // as possible of the CPU the admitted hashes and every other route need.
    if (hashes && this.deps.admission.full()) throw gatewayErrors.overloaded(1);
    const body = await readArguments(request, this.deps.config.maxBodyBytes);
    if (!auth) return this.evictingWrites(fn, body, await this.deps.upstream.relay({ method, target, args: body, schema, headers: request.headers, clientAddress, requestId, verified }));
    // The auth functions' answers are read here (tokens, sessions, limits): they are sent the
    // arguments the function receives (PostgREST calls with an array body's first object).
    const args = this.withMfaKey(fn, calledWith(body));
    // Before the hash: a guessable new password never costs a bcrypt.
    checkNewPassword(fn, args);
    const call = { method, target, args, schema, headers: request.headers, clientAddress, requestId, verified } as const;
    const release = hashes ? await this.admitSignIn(fn, args, clientAddress) : undefined;
    let response: UpstreamResponse;
    try {
      response = await this.deps.upstream.send(call);
    } finally {
      release?.();
    }
    return (await this.afterAuthCall(fn, args, clientAddress, response)) ?? this.evictingWrites(fn, args, toResponse(response));
  }

  /** The arguments, with the key the function needs in SQL where it needs one (a caller's own `mfa_key` is replaced). */
  private withMfaKey(fn: string, args: unknown): unknown {
    if (!MFA_KEY_FUNCTIONS.has(fn) || args === null || typeof args !== "object" || Array.isArray(args)) return args;
    return { ...(args as Record<string, unknown>), mfa_key: this.deps.config.mfa.key };
  }

  /** GET/HEAD of a function that can only change state: refused before anything runs. */
  private postOnly(schema: string, fn: string): boolean {
    if (schema === AUTH_SCHEMA && POST_ONLY.has(fn)) return true;
    const overloads = this.deps.catalog.find(schema, fn);
    return overloads.length > 0 && overloads.every((o) => o.volatility === "volatile");
  }

  /** A successful write's answer, once the cached reads it may have changed are evicted. */
  private async evictingWrites(fn: string, args: unknown, response: Response): Promise<Response> {
    if (response.status < 300) {
      const tags = tagsForWrite(fn, args);
      if (tags.length) await this.deps.cache.evict(tags);
    }
    return response;
  }

  /**
   * The verified token (or undefined for anonymous); refuses tokens of revoked sessions. Answered
   * at once when this process knows both the token and its session, the common case.
   */
  private authenticate(request: Request): VerifiedToken | undefined | Promise<VerifiedToken | undefined> {
    const verified = this.deps.jwt.verifyHeader(request.headers.get("authorization"));
    return verified instanceof Promise ? verified.then((v) => this.withActiveSession(v)) : this.withActiveSession(verified);
  }

  private withActiveSession(verified: VerifiedToken | undefined): VerifiedToken | undefined | Promise<VerifiedToken | undefined> {
    if (!verified || typeof verified.claims.sid !== "string") return verified;
    const active = this.deps.sessions.isActive(verified.claims.sid, String(verified.claims.sub ?? ""), verified.token);
    if (active === true) return verified;
    if (active === false) throw gatewayErrors.sessionRevoked();
    return active.then((isActive) => {
      if (!isActive) throw gatewayErrors.sessionRevoked();
      return verified;
    });
  }

  private cacheable(schema: string, fn: string): boolean {
    if (this.deps.config.cache.ttlSeconds === 0 || NEVER_CACHED.has(fn)) return false;
    const overloads = this.deps.catalog.find(schema, fn);
    return overloads.length > 0 && overloads.every((o) => o.volatility !== "volatile");
  }

  private async cached(
    request: Request,
    schema: string,
    fn: string,
    read: UpstreamRequest,
    caller: VerifiedToken | undefined,
    notes: RequestNotes,
  ): Promise<Response> {
    const cache = this.deps.cache;
    const query = read.query ?? new URLSearchParams();
    if (!cache.available()) {
      notes.cache = "BYPASS";
      const response = await this.deps.upstream.relay(read);
      response.headers.set("X-Cache", "MISS");
      return response;
    }
    const tags = tagsForRead(query);
    if (!tags) {
      notes.cache = "BYPASS";
      return this.deps.upstream.relay(read);
    }
    const pairs = [...query].sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
    // The assurance level is part of the caller: an answer read at aal2 is never one for aal1.
    const identity = caller ? `${String(caller.claims.role ?? "")}:${String(caller.claims.sub ?? "")}:${caller.claims.aal === "aal2" ? "aal2" : "aal1"}` : "anon";
    // Every header the upstream is sent that can change the answer is part of the key.
    const varying = ANSWER_HEADERS.map((name) => request.headers.get(name) ?? "");
    const key = JSON.stringify([schema, fn, pairs, identity, ...varying]);
    let versions: string[] | undefined;
    try {
      const found = await cache.lookup(key, tags);
      if (found.hit) {
        notes.cache = "HIT";
        return replay(found.hit);
      }
      versions = found.versions;
    } catch {
      // Redis failed mid-request: answer uncached.
    }
    notes.cache = "MISS";
    const response = await this.deps.upstream.send(read);
    if (response.status === 200 && versions) {
      const headers: [string, string][] = [];
      for (const name of REPLAYED_HEADERS) {
        const value = response.headers.get(name);
        if (value !== null) headers.push([name, value]);
      }
      await cache.store(key, tags, versions, { status: 200, headers, body: response.body }, this.deps.config.cache.ttlSeconds * 1000).catch(() => {});
    }
    return toResponse(response, "MISS");
  }

  /** Rate limits, then a free hashing slot; a release function for the slot. */
  private async admitSignIn(fn: string, args: unknown, clientAddress: string | undefined): Promise<() => void> {
    const { limits } = this.deps;
    if (clientAddress) await limits.perAddress.consume(clientAddress);
    const key = accountKey(fn, args, clientAddress);
    if (key) {
      // sign_in counts failures only (afterAuthCall); sign_up counts every attempt.
      await (fn === "sign_up" ? limits.perAccount.consume(key) : limits.perAccount.check(key));
    }
    const release = await this.deps.admission.acquire();
    if (!release) throw gatewayErrors.overloaded(1);
    return release;
  }

  /** The auth functions' side effects on tokens, sessions and limits; a replacement answer or undefined. */
  private async afterAuthCall(fn: string, args: unknown, clientAddress: string | undefined, response: UpstreamResponse): Promise<Response | undefined> {
    const ok = response.status >= 200 && response.status < 300;
    switch (fn) {
      case "sign_in": {
        const key = accountKey(fn, args, clientAddress);
        if (response.status === 401 && key) await this.deps.limits.perAccount.record(key);
        return ok ? this.tokenResponse(response) : undefined;
      }
      case "exchange_auth_code":
      case "mfa_verify":
      case "mfa_verify_enrollment":
      case "mfa_use_recovery_code":
        return ok ? this.tokenResponse(response) : undefined;
      case "mfa_enroll_totp":
        return ok ? enrolmentAnswer(response) : undefined;
      case "issue_token": {
        if (ok) return this.tokenResponse(response);
        const reused = reusedSession(response);
        if (reused) await this.deps.sessions.markRevoked([reused]);
        return undefined;
      }
      case "revoke_token": {
        const sid = ok ? (response.data as { session_id?: unknown } | null)?.session_id : undefined;
        if (typeof sid === "string") await this.deps.sessions.markRevoked([sid]);
        return undefined;
      }
      case "revoke_all_tokens":
      case "reset_password":
      case "change_password":
      case "revoke_session":
      case "revoke_other_sessions": {
        const sids = ok ? (response.data as { revoked_sessions?: unknown } | null)?.revoked_sessions : undefined;
        if (Array.isArray(sids)) await this.deps.sessions.markRevoked(sids.filter((s): s is string => typeof s === "string"));
        return undefined;
      }
      default:
        return undefined;
    }
  }

  /**
   * sign_in / exchange_auth_code / issue_token / the MFA steps: the session from SQL becomes an
   * access token (with the session's aal and amr) plus the refresh token; `mfa_required` says
   * a second step is needed, with the factors that can take it.
   */
  private async tokenResponse(response: UpstreamResponse): Promise<Response> {
    const session = response.data as {
      user?: { id?: string; email?: string; email_verified_at?: string | null };
      session_id?: string;
      refresh_token?: string;
      refresh_expires_at?: string;
      aal?: unknown;
      amr?: unknown;
      mfa_required?: unknown;
      factors?: unknown;
      [extra: string]: unknown;
    } | null;
    if (!session?.user?.id || !session.user.email || !session.session_id || !session.refresh_token) {
      this.deps.log({ event: "unexpected_session_shape", status: response.status });
      throw gatewayErrors.internal();
    }
    const { token, expiresIn } = await this.deps.jwt.mintAccessToken(
      { id: session.user.id, email: session.user.email, emailVerified: Boolean(session.user.email_verified_at) },
      session.session_id,
      assuranceOf(session.aal, session.amr),
    );
    this.deps.sessions.markActive(session.session_id, session.user.id);
    const body = JSON.stringify({
      access_token: token,
      token_type: "bearer",
      expires_in: expiresIn,
      refresh_token: session.refresh_token,
      refresh_expires_at: session.refresh_expires_at,
      user: session.user,
      aal: session.aal === "aal2" ? "aal2" : "aal1",
      mfa_required: session.mfa_required === true,
      factors: Array.isArray(session.factors) ? session.factors : [],
      ...Object.fromEntries(SESSION_EXTRAS.filter((name) => name in session).map((name) => [name, session[name]])),
    });
    return new Response(body, {
      status: 200,
      headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
    });
  }
}

/** mfa_enroll_totp's answer with the QR code of its otpauth:// URI, as SVG. */
async function enrolmentAnswer(response: UpstreamResponse): Promise<Response> {
  const factor = response.data as { totp?: { uri?: unknown } } | null;
  const uri = factor?.totp?.uri;
  if (typeof uri !== "string") return toResponse(response);
  const qr_code = await QRCode.toString(uri, { type: "svg", errorCorrectionLevel: "M", margin: 2 });
  return new Response(JSON.stringify({ ...factor, totp: { ...factor!.totp, qr_code } }), {
    status: response.status,
    headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
  });
}

/** The session's aal and amr as SQL reported them; aal1 and no methods for anything else. */
function assuranceOf(aal: unknown, amr: unknown): SessionAssurance {
  const methods = Array.isArray(amr)
    ? amr.filter((m): m is SessionAssurance["amr"][number] =>
        m !== null && typeof m === "object" && typeof (m as { method?: unknown }).method === "string" &&
        typeof (m as { timestamp?: unknown }).timestamp === "number")
    : [];
  return { aal: aal === "aal2" ? "aal2" : "aal1", amr: methods };
}

/**
 * The query string, forwarded as it came (order and repeated keys kept); undefined when empty.
 * Bounded in length and parameter count before it is parsed.
 */
function queryOf(request: Request): URLSearchParams | undefined {
  const url = request.url;
  const start = url.indexOf("?");
  if (start === -1 || start === url.length - 1) return undefined;
  const hash = url.indexOf("#", start);
  const raw = url.slice(start + 1, hash === -1 ? undefined : hash);
  checkQueryBounds(raw);
  return new URLSearchParams(raw);
}

function replay(hit: CachedResponse): Response {
  const headers = new Headers(hit.headers);
  headers.set("X-Cache", "HIT");
  return new Response(hit.body, { status: hit.status, headers });
}

/**
 * The gateway's first-filter key for an account's attempts: the address as the database
 * normalizes it (NFC, trimmed, lower case) together with the client address, so that nobody
 * can spend another person's allowance (the database keeps the per-account ceiling).
 */
function accountKey(fn: string, args: unknown, clientAddress: string | undefined): string | undefined {
  const email = args !== null && typeof args === "object" ? (args as { email?: unknown }).email : undefined;
  if (typeof email !== "string") return undefined;
  return `${fn}:${email.normalize("NFC").trim().toLowerCase().slice(0, 254)}|${clientAddress ?? ""}`;
}

/**
 * The arguments a function is called with for a body: an array of objects with the same keys is
 * called with its first object (PostgREST v16). Any other array is sent as it came, for the
 * upstream to refuse as PostgREST does ("All object keys must match").
 */
function calledWith(body: unknown): unknown {
  if (!Array.isArray(body)) return body;
  if (body.length === 0) return {};
  const keysOf = (item: unknown) =>
    item !== null && typeof item === "object" && !Array.isArray(item) ? Object.keys(item).sort().join("\u0000") : undefined;
  const first = keysOf(body[0]);
  return first !== undefined && body.every((item) => keysOf(item) === first) ? body[0] : body;
}

/** issue_token's reuse answer: 401 whose `details` is JSON text naming the revoked session. */
function reusedSession(response: UpstreamResponse): string | undefined {
  if (response.status !== 401 || typeof response.error?.details !== "string") return undefined;
  try {
    const details = JSON.parse(response.error.details) as { session_id?: unknown };
    return typeof details.session_id === "string" ? details.session_id : undefined;
  } catch {
    return undefined;
  }
}

/** The POST body as arguments: JSON (any value; PostgREST decides what fits) or a form. */
async function readArguments(request: Request, maxBytes: number): Promise<unknown> {
  // Same limits and errors as the engine, so both stacks refuse bad bodies alike.
  const text = decodeUtf8Body(await readBody(request, maxBytes));
  const type = request.headers.get("content-type") ?? "";
  if (type.startsWith("application/x-www-form-urlencoded")) return Object.fromEntries(new URLSearchParams(text));
  if (text.trim() === "") return {};
  return parseJsonBounded(text);
}

export { UpstreamFailure };
