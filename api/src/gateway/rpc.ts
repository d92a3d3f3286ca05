import type { ApiConfig } from "../config";
import type { Admission } from "./admission";
import type { CachedResponse, ResponseCache } from "./cache";
import { NEVER_CACHED, tagsForRead, tagsForWrite } from "./cache-rules";
import type { FunctionCatalog } from "./catalog";
import { decodeUtf8Body, readBody } from "../engine/request";
import { gatewayErrors } from "./errors";
import type { JwtService, VerifiedToken } from "./jwt";
import type { RateLimiter } from "./rate-limit";
import type { SessionGuard } from "./sessions";
import { toResponse, UpstreamFailure, type Upstream, type UpstreamRequest, type UpstreamResponse } from "./upstream";

/** What the request envelope learns while handling one request (for the log line). */
export interface RequestNotes {
  cache?: "HIT" | "MISS" | "BYPASS";
  /** The caller's address (computed on demand). */
  clientIp?: () => string | undefined;
}

export interface RpcDeps {
  config: ApiConfig;
  jwt: JwtService;
  sessions: SessionGuard;
  upstream: Upstream;
  /** Where admitted bcrypt calls go when they have a lane of their own (see selectUpstream). */
  hashingUpstream?: Upstream;
  cache: ResponseCache;
  limiter: RateLimiter;
  admission: Admission;
  catalog: FunctionCatalog;
  log: (event: Record<string, unknown>) => void;
}

/** Headers of a cached answer worth replaying (the rest describe the original exchange). */
const REPLAYED_HEADERS = ["content-type", "content-range", "preference-applied"];
const AUTH_SCHEMA = "api";
const BCRYPT_FUNCTIONS = new Set(["sign_in", "sign_up"]);

/**
 * `/rpc/<fn>` and relation reads: verifies the caller's token and session, applies the
 * sign-in protections, the GET cache and the auth wrapping, and otherwise relays PostgREST's
 * answer unchanged.
 */
export class RpcHandler {
  constructor(private readonly deps: RpcDeps) {}

  async rpc(request: Request, fn: string, notes: RequestNotes): Promise<Response> {
    const method = request.method;
    if (method !== "GET" && method !== "HEAD" && method !== "POST") throw gatewayErrors.methodNotAllowed(method);
    let caller = this.authenticate(request);
    if (caller instanceof Promise) caller = await caller;
    const schema = this.profile(request, method);
    const effectiveSchema = schema ?? this.deps.config.schemas[0]!;

    if (method !== "POST") {
      const read = { method, target: { rpc: fn }, query: queryOf(request), schema, headers: request.headers, parse: false } as const;
      if (method === "GET" && this.cacheable(effectiveSchema, fn)) return this.cached(request, effectiveSchema, fn, read, caller, notes);
      return this.deps.upstream.relay(read);
    }

    const auth = effectiveSchema === AUTH_SCHEMA;
    const hashes = auth && BCRYPT_FUNCTIONS.has(fn);
    // Overloaded: refused before the body is even read, so a flood of sign-ins costs as little
    // as possible of the CPU the admitted hashes and every other route need.
    if (hashes && this.deps.admission.full()) throw gatewayErrors.overloaded(1);
    const args = await readArguments(request, this.deps.config.maxBodyBytes);
    // The auth functions read the caller's address (sign-in throttling in the database).
    const call = { method, target: { rpc: fn }, args, schema, headers: request.headers, clientIp: auth ? notes.clientIp?.() : undefined } as const;
    // Only the auth functions' answers are read here (tokens, sessions); the rest is relayed.
    if (!auth) return this.evictingWrites(fn, args, await this.deps.upstream.relay(call));
    const release = hashes ? await this.admitSignIn(fn, args, notes) : undefined;
    let response: UpstreamResponse;
    try {
      const upstream = release ? (this.deps.hashingUpstream ?? this.deps.upstream) : this.deps.upstream;
      response = await upstream.send(call);
    } finally {
      release?.();
    }
    return (await this.afterAuthCall(fn, args, response)) ?? this.evictingWrites(fn, args, toResponse(response));
  }

  async relation(request: Request, relation: string): Promise<Response> {
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") throw gatewayErrors.methodNotAllowed(method);
    const caller = this.authenticate(request);
    if (caller instanceof Promise) await caller;
    return this.deps.upstream.relay({ method, target: { relation }, query: queryOf(request), schema: this.profile(request, method), headers: request.headers });
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
    const active = this.deps.sessions.isActive(verified.claims.sid, verified.token);
    if (active === true) return verified;
    if (active === false) throw gatewayErrors.sessionRevoked();
    return active.then((isActive) => {
      if (!isActive) throw gatewayErrors.sessionRevoked();
      return verified;
    });
  }

  private profile(request: Request, method: string): string | undefined {
    return request.headers.get(method === "POST" ? "content-profile" : "accept-profile") ?? undefined;
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
    const pairs = [...query].sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
    const identity = caller ? `${String(caller.claims.role ?? "")}:${String(caller.claims.sub ?? "")}` : "anon";
    const key = JSON.stringify([schema, fn, pairs, identity, request.headers.get("accept") ?? "", request.headers.get("prefer") ?? ""]);
    const tags = tagsForRead(Object.fromEntries(query));
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
  private async admitSignIn(fn: string, args: unknown, notes: RequestNotes): Promise<() => void> {
    const { rateLimit } = this.deps.config;
    const limiter = this.deps.limiter;
    const ip = rateLimit.ipMax > 0 ? notes.clientIp?.() : undefined;
    if (ip) {
      const decision = await limiter.attempt(`ip:${ip}`, rateLimit.ipMax, rateLimit.ipWindowSeconds, true);
      if (!decision.allowed) throw gatewayErrors.rateLimited(decision.retryAfter, "client address");
    }
    const email = emailOf(args);
    if (rateLimit.emailMax > 0 && email) {
      // sign_in counts failures only (afterAuthCall); sign_up counts every attempt.
      const decision = await limiter.attempt(`email:${fn}:${email}`, rateLimit.emailMax, rateLimit.emailWindowSeconds, fn === "sign_up");
      if (!decision.allowed) throw gatewayErrors.rateLimited(decision.retryAfter, "account");
    }
    const release = await this.deps.admission.acquire();
    if (!release) throw gatewayErrors.overloaded(1);
    return release;
  }

  /** The auth functions' side effects on tokens, sessions and limits; a replacement answer or undefined. */
  private async afterAuthCall(fn: string, args: unknown, response: UpstreamResponse): Promise<Response | undefined> {
    const ok = response.status >= 200 && response.status < 300;
    switch (fn) {
      case "sign_in": {
        const email = emailOf(args);
        if (response.status === 401 && email && this.deps.config.rateLimit.emailMax > 0) {
          await this.deps.limiter.record(`email:sign_in:${email}`, this.deps.config.rateLimit.emailWindowSeconds);
        }
        return ok ? this.tokenResponse(response) : undefined;
      }
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
      case "revoke_all_tokens": {
        const sids = ok ? (response.data as { revoked_sessions?: unknown } | null)?.revoked_sessions : undefined;
        if (Array.isArray(sids)) await this.deps.sessions.markRevoked(sids.filter((s): s is string => typeof s === "string"));
        return undefined;
      }
      default:
        return undefined;
    }
  }

  /** sign_in / issue_token: the session from SQL becomes an access token plus the refresh token. */
  private async tokenResponse(response: UpstreamResponse): Promise<Response> {
    const session = response.data as {
      user?: { id?: string; email?: string };
      session_id?: string;
      refresh_token?: string;
      refresh_expires_at?: string;
    } | null;
    if (!session?.user?.id || !session.user.email || !session.session_id || !session.refresh_token) {
      this.deps.log({ event: "unexpected_session_shape", status: response.status });
      throw gatewayErrors.internal();
    }
    const { token, expiresIn } = await this.deps.jwt.mintAccessToken({ id: session.user.id, email: session.user.email }, session.session_id);
    this.deps.sessions.markActive(session.session_id);
    const body = JSON.stringify({
      access_token: token,
      token_type: "bearer",
      expires_in: expiresIn,
      refresh_token: session.refresh_token,
      refresh_expires_at: session.refresh_expires_at,
      user: session.user,
    });
    return new Response(body, {
      status: 200,
      headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
    });
  }
}

/** The query string of a GET or HEAD, forwarded as it came (order and repeated keys kept); undefined when empty. */
function queryOf(request: Request): URLSearchParams | undefined {
  const url = request.url;
  const start = url.indexOf("?");
  return start === -1 || start === url.length - 1 ? undefined : new URLSearchParams(url.slice(start + 1));
}

function replay(hit: CachedResponse): Response {
  const headers = new Headers(hit.headers);
  headers.set("X-Cache", "HIT");
  return new Response(hit.body, { status: hit.status, headers });
}

function emailOf(args: unknown): string | undefined {
  const email = args !== null && typeof args === "object" ? (args as { email?: unknown }).email : undefined;
  return typeof email === "string" ? email.trim().toLowerCase().slice(0, 254) : undefined;
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
  try {
    return JSON.parse(text);
  } catch {
    throw gatewayErrors.invalidJson();
  }
}

export { UpstreamFailure };
