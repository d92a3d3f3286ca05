import { PostgrestClient, PostgrestFilterBuilder } from "@supabase/postgrest-js";
import type { DatabaseBreaker } from "./db-breaker";
import { withDeadline } from "./deadline";
import { gatewayErrors, type ApiError } from "./errors";
import { encodeSegment } from "./resolve";

/** A fetch-compatible function: the embedded engine's `fetch` seam, or global fetch to PostgREST. */
export type UpstreamFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

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
 * Talks to PostgREST (or the engine) through @supabase/postgrest-js. postgrest-js builds and
 * sends the request; the capturing fetch keeps the raw response so the gateway can relay
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
    if (this.breaker?.isDown()) throw new UpstreamFailure(gatewayErrors.upstreamUnavailable("the database is unreachable"));
    let raw: Response | undefined;
    let body: string | undefined;
    let expired = false;
    const answered = (response: Response) => {
      raw = response;
      // postgrest-js reads what it is given: the answer only where the gateway wants its reading.
      if (mode !== "parse") return unreadAnswer(response);
      return new Response(nullBodyStatus(response.status) ? null : body, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    // The engine's relayed answers are not read at all (see relay).
    const readBody = mode !== "relay" || !this.buffered;
    const capture: UpstreamFetch = (input, init) =>
      // Enforced here, not only through the abort signal: an in-process upstream may not
      // watch the signal, and no request may wait on a stuck upstream forever.
      withDeadline(
        readBody
          ? this.fetchImpl(input, init).then(async (response) => {
              body = await response.text();
              return answered(response);
            })
          : this.fetchImpl(input, init).then(answered),
        this.timeoutMs,
        () => (expired = true),
      );

    const builder = this.builder(request, capture);
    const result = await builder;
    if (!raw) {
      if (expired) {
        // A stuck upstream is usually a database that went away: say so when it did.
        if (await this.breaker?.suspect()) throw new UpstreamFailure(gatewayErrors.upstreamUnavailable("the database is unreachable"));
        throw new UpstreamFailure(gatewayErrors.upstreamTimeout());
      }
      // The reason is for the operator's log, never for the client (it can be any internal error text).
      const error = result.error as { message?: string } | null;
      throw new UpstreamFailure(gatewayErrors.upstreamUnavailable("the upstream did not answer"), error?.message ?? "no response");
    }
    if (raw.status === 503) void this.breaker?.suspect();
    return { response: raw, body, result };
  }

  private builder(request: UpstreamRequest, fetch: UpstreamFetch) {
    const headers = new Headers();
    for (const name of FORWARDED_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) headers.set(name, value);
    }
    if (request.clientAddress) headers.set("x-forwarded-for", request.clientAddress);
    if (request.requestId) headers.set("x-request-id", request.requestId);
    // postgrest-js types its fetch as `typeof fetch`, which also carries Bun's static extras.
    const send = fetch as typeof globalThis.fetch;
    if ("rpc" in request.target) {
      // The request PostgrestClient.rpc would build (no count option), made here: the client's
      // route to it costs a client, a URL parse of its own and two header copies per call.
      const url = new URL(`${this.baseUrl}/rpc/${encodeSegment(request.target.rpc)}`);
      appendQuery(url, request.query);
      return new PostgrestFilterBuilder<any, any, any, any>({
        method: request.method,
        url,
        headers,
        schema: request.schema,
        body: request.method === "POST" ? request.args : undefined,
        fetch: send,
        retry: false,
      });
    }
    const client = new PostgrestClient(this.baseUrl, { fetch: send, schema: request.schema, retry: false, headers });
    const builder = client.from(encodeSegment(request.target.relation)).select(request.query?.get("select") ?? "*", { head: request.method === "HEAD" });
    // select= went through postgrest-js's own select(); the rest of the query as it came.
    appendQuery((builder as unknown as { url: URL }).url, request.query, "select");
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

const NO_HEADERS = new Headers();
const emptyText = () => Promise.resolve("");

/**
 * What postgrest-js is handed where the gateway wants no reading of the answer: its status and
 * an empty body. A plain object with the members postgrest-js reads (ok, status, statusText,
 * headers, text) rather than a Response, which would cost a native object and its headers on
 * every relayed request.
 */
function unreadAnswer(response: Response): Response {
  return { ok: response.ok, status: response.status, statusText: response.statusText, headers: NO_HEADERS, text: emptyText } as unknown as Response;
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

/** The embedded engine's `fetch(Request)` as a fetch-compatible function. */
export function engineFetch(engine: { fetch(request: Request): Promise<Response> }): UpstreamFetch {
  return (input, init) => engine.fetch(input instanceof Request && !init ? input : new Request(input, init));
}
