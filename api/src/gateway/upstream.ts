import { PostgrestClient } from "@supabase/postgrest-js";
import type { Engine } from "../engine";
import type { DatabaseBreaker } from "./db-breaker";
import { withDeadline } from "./deadline";
import { gatewayErrors, type ApiError } from "./errors";
import type { VerifiedToken } from "./jwt";
import { encodeSegment } from "./resolve";

/**
 * The one seam to PostgREST: a Request in, its Response out, whether the upstream is a real
 * PostgREST over HTTP (global fetch) or the embedded engine in this process (Engine.handle).
 * `verified` is the caller's token as the gateway verified it: a value in this process, never
 * a header, so only the in-process engine can take it (and only for that very token); over
 * HTTP it is not sent and PostgREST verifies the token itself.
 */
export type UpstreamFetch = (request: Request, verified?: VerifiedToken) => Promise<Response>;

/**
 * Headers of the caller that PostgREST acts on, forwarded as they came (user-agent: sign_in
 * records it with the session, for my_sessions). X-Forwarded-For is not
 * among them: the gateway sends the address it saw itself (clientAddress), never the client's.
 */
const FORWARDED_HEADERS = ["authorization", "prefer", "accept", "range", "range-unit", "x-request-id", "user-agent"] as const;
/** Upstream headers that describe the transport of that hop, not the answer. */
const HOP_HEADERS = new Set(["content-length", "connection", "transfer-encoding", "content-encoding", "keep-alive", "date", "server"]);

export interface UpstreamRequest {
  method: "GET" | "HEAD" | "POST";
  /** `/rpc/<fn>` call, or a relation read (`GET /<relation>`). */
  target: { rpc: string } | { relation: string };
  /** POST body (already parsed JSON). */
  args?: unknown;
  /** GET/HEAD query string, forwarded in order (repeated keys included). */
  query?: URLSearchParams;
  /** The exposed schema the request targets (Accept-Profile / Content-Profile). */
  schema?: string;
  headers: Headers;
  /**
   * The caller's address as the gateway saw it: sent as the only X-Forwarded-For entry (the
   * caller's own header is never forwarded), so the database's sign-in throttling
   * (request.headers) can trust it.
   */
  clientAddress?: string;
  /** The gateway's request id (a valid caller id, or one it made): replaces the caller's X-Request-Id. */
  requestId?: string;
  /** The caller's bearer token as the gateway verified it (see UpstreamFetch). */
  verified?: VerifiedToken;
  /**
   * Whether postgrest-js reads the answer into `data` / `error` (default true). False where the
   * gateway only needs the raw answer: postgrest-js then gets an empty body to read, which
   * spares a JSON parse of every body (10 KB for a 50-rule list).
   */
  parse?: boolean;
}

/** PostgREST's answer exactly as it came (status, headers, body), plus postgrest-js's reading of it. */
export interface UpstreamResponse {
  status: number;
  /** Without the headers of the hop (HOP_HEADERS). */
  headers: Headers;
  body: string;
  /** postgrest-js's reading of the answer; null when the request asked for no parse. */
  data: unknown;
  error: { code?: string; message?: string; details?: string | null; hint?: string | null } | null;
}

export class UpstreamFailure extends Error {
  constructor(
    readonly apiError: ApiError,
    /** What went wrong, for the log only. */
    readonly reason?: string,
  ) {
    super(apiError.message);
  }
}

export interface UpstreamOptions {
  /** Longest wait for an answer, body included. */
  timeoutMs: number;
  /**
   * The upstream answers with its whole body in memory and a Response of its own making (the
   * embedded engine), so relaying it needs neither a body read nor a copy of its headers.
   */
  buffered?: boolean;
  breaker?: DatabaseBreaker;
}

/** What one exchange left: the upstream's Response (body unread unless `body` is set). */
interface Exchange {
  response: Response;
  body: string | undefined;
  result: { data: unknown; error: unknown };
}

/**
 * Talks to PostgREST (or the engine) through @supabase/postgrest-js, used as any client uses it
 * (PostgrestClient.rpc / from().select() with a custom fetch). postgrest-js builds and sends
 * the request; the capturing fetch keeps the raw response so the gateway can relay
 * PostgREST's status, headers and body byte for byte, which postgrest-js's parsed result
 * alone would not preserve (Content-Range, headers set by functions, number formatting).
 */
export class Upstream {
  private readonly timeoutMs: number;
  private readonly buffered: boolean;
  private readonly breaker: DatabaseBreaker | undefined;

  constructor(
    private readonly baseUrl: string,
    private readonly fetchImpl: UpstreamFetch,
    options: UpstreamOptions,
  ) {
    this.timeoutMs = options.timeoutMs;
    this.buffered = options.buffered ?? false;
    this.breaker = options.breaker;
  }

  /** The answer with its body read (and parsed by postgrest-js unless `parse: false`). */
  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    const parse = request.parse !== false;
    return this.answer(await this.exchange(request, parse ? "parse" : "text"), parse);
  }

  /** The answer as the Response to give the caller: PostgREST's status, headers and body. */
  async relay(request: UpstreamRequest): Promise<Response> {
    const exchanged = await this.exchange(request, "relay");
    // Unread: the engine's own Response, relayed as it is.
    if (exchanged.body === undefined) return exchanged.response;
    return toResponse(this.answer(exchanged, false));
  }

  private answer({ response, body, result }: Exchange, parse: boolean): UpstreamResponse {
    return {
      status: response.status,
      headers: this.ownHeaders(response),
      body: body!,
      data: parse ? result.data : null,
      error: parse ? (result.error as UpstreamResponse["error"]) : null,
    };
  }

  private async exchange(request: UpstreamRequest, mode: "parse" | "text" | "relay"): Promise<Exchange> {
    if (this.breaker?.isDown()) throw new UpstreamFailure(gatewayErrors.databaseUnreachable());
    let raw: Response | undefined;
    let body: string | undefined;
    let expired = false;
    const answered = (response: Response) => {
      raw = response;
      // postgrest-js reads what it is given: the answer only where the gateway wants its
      // reading, else an empty one (sparing a JSON parse of bodies only relayed).
      if (mode !== "parse") return new Response(null, { status: response.status, statusText: response.statusText });
      return new Response(nullBodyStatus(response.status) ? null : body, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    // The engine's relayed answers are not read at all (see relay).
    const readBody = mode !== "relay" || !this.buffered;
    const capture = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const sent = this.fetchImpl(new Request(input, init), request.verified);
      // Enforced here, not only through the abort signal: an in-process upstream may not
      // watch the signal, and no request may wait on a stuck upstream forever.
      return withDeadline(
        readBody
          ? sent.then(async (response) => {
              body = await response.text();
              return answered(response);
            })
          : sent.then(answered),
        this.timeoutMs,
        () => (expired = true),
      );
    };

    // postgrest-js types its fetch as `typeof fetch`, which also carries Bun's static extras.
    const builder = this.builder(request, capture as typeof globalThis.fetch);
    const result = await builder;
    if (!raw) {
      if (expired) {
        // A stuck upstream is usually a database that went away: say so when it did.
        if (await this.breaker?.suspect()) throw new UpstreamFailure(gatewayErrors.databaseUnreachable());
        throw new UpstreamFailure(gatewayErrors.upstreamTimeout());
      }
      // The reason is for the operator's log, never for the client (it can be any internal error text).
      const error = result.error as { message?: string } | null;
      throw new UpstreamFailure(gatewayErrors.upstreamSilent(), error?.message ?? "no response");
    }
    if (raw.status === 503) void this.breaker?.suspect();
    return { response: raw, body, result };
  }

  private builder(request: UpstreamRequest, fetch: typeof globalThis.fetch) {
    const headers = new Headers();
    for (const name of FORWARDED_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    if (request.clientAddress) headers.set("x-forwarded-for", request.clientAddress);
    if (request.requestId) headers.set("x-request-id", request.requestId);
    const client = new PostgrestClient(this.baseUrl, { fetch, schema: request.schema, retry: false, headers });
    const { method } = request;
    if ("rpc" in request.target) {
      // Arguments of a GET or HEAD are the caller's query string, appended below as it came.
      const builder = client.rpc(encodeSegment(request.target.rpc), method === "POST" ? request.args as object : {}, { get: method === "GET", head: method === "HEAD" });
      appendQuery(urlOf(builder), request.query);
      return builder;
    }
    const builder = client.from(encodeSegment(request.target.relation)).select(request.query?.get("select") ?? "*", { head: method === "HEAD" });
    // select= went through postgrest-js's own select(); the rest of the query as it came.
    appendQuery(urlOf(builder), request.query, "select");
    return builder;
  }

  /**
   * The answer's headers without those of the hop. The engine's own Response carries none (it
   * describes the answer, and its one Content-Length matches the body relayed unchanged), so
   * its headers serve as they are.
   */
  private ownHeaders(response: Response): Headers {
    if (this.buffered) return response.headers;
    const headers = new Headers();
    response.headers.forEach((value, name) => {
      if (!HOP_HEADERS.has(name)) headers.set(name, value);
    });
    return headers;
  }

}

/** The request URL a postgrest-js builder will send (a protected member in its types). */
function urlOf(builder: object): URL {
  return (builder as { url: URL }).url;
}

/**
 * The caller's query string onto the request URL, unchanged (order and repeats kept): it is
 * already in PostgREST's syntax, which postgrest-js's filter methods would rebuild one by one.
 */
function appendQuery(url: URL, query: URLSearchParams | undefined, except?: string) {
  if (!query?.size) return;
  for (const [name, value] of query) if (name !== except) url.searchParams.append(name, value);
}

/** An answer read here as the Response for the caller, with the gateway's X-Cache when given. */
export function toResponse(response: UpstreamResponse, cache?: "HIT" | "MISS"): Response {
  if (cache) response.headers.set("X-Cache", cache);
  return new Response(nullBodyStatus(response.status) ? null : response.body, { status: response.status, headers: response.headers });
}

function nullBodyStatus(status: number): boolean {
  return status === 204 || status === 304;
}

/** The embedded engine as the upstream: its handler, called in-process with the gateway's verification. */
export function engineFetch(engine: Pick<Engine, "handle">): UpstreamFetch {
  return (request, verified) => engine.handle(request, verified);
}

/** A real PostgREST as the upstream: the request over HTTP, the verification left behind. */
export const httpFetch: UpstreamFetch = (request) => fetch(request);
