import { PostgrestClient } from "@supabase/postgrest-js";
import type { DatabaseBreaker } from "./db-breaker";
import { gatewayErrors, type ApiError } from "./errors";

/** A fetch-compatible function: the embedded engine's `fetch` seam, or global fetch to PostgREST. */
export type UpstreamFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Headers of the caller that PostgREST acts on, forwarded as they came. */
const FORWARDED_HEADERS = ["authorization", "prefer", "accept", "range", "range-unit", "x-request-id"] as const;
/** Upstream headers that describe the transport of that hop, not the answer. */
const HOP_HEADERS = ["content-length", "connection", "transfer-encoding", "content-encoding", "keep-alive", "date", "server"];

type Client = PostgrestClient<any, any, any>;
const MAX_CLIENTS = 32;

export interface UpstreamRequest {
  method: "GET" | "HEAD" | "POST";
  /** `/rpc/<fn>` call, or a relation read (`GET /<relation>`). */
  target: { rpc: string } | { relation: string };
  /** POST body (already parsed JSON). */
  args?: unknown;
  /** GET/HEAD query string, forwarded in order (repeated keys included). */
  query?: URLSearchParams;
  /** Accept-Profile / Content-Profile of the caller, when given. */
  schema?: string;
  headers: Headers;
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
  constructor(readonly apiError: ApiError) {
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
  /** One client per schema: building one per request costs a Headers copy from a plain object. */
  private readonly clients = new Map<string | undefined, Client>();
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
    const { response, body, result } = await this.exchange(request, parse ? "parse" : "text");
    return {
      status: response.status,
      headers: this.ownHeaders(response),
      body: body!,
      data: parse ? result.data : null,
      error: parse ? (result.error as UpstreamResponse["error"]) : null,
    };
  }

  /** The answer as the Response to give the caller: PostgREST's status, headers and body. */
  async relay(request: UpstreamRequest): Promise<Response> {
    const { response, body } = await this.exchange(request, "relay");
    const headers = this.ownHeaders(response);
    // Unread (the engine's own Response, its headers cleaned in place): relayed as it is.
    if (body === undefined) return response;
    return new Response(nullBodyStatus(response.status) ? null : body, { status: response.status, headers });
  }

  private async exchange(request: UpstreamRequest, mode: "parse" | "text" | "relay"): Promise<Exchange> {
    if (this.breaker?.isDown()) throw new UpstreamFailure(gatewayErrors.upstreamUnavailable("the database is unreachable"));
    let raw: Response | undefined;
    let body: string | undefined;
    let expired = false;
    const readBody = mode !== "relay" || !this.buffered;
    const capture: UpstreamFetch = (input, init) =>
      // Enforced here, not only through the abort signal: an in-process upstream may not
      // watch the signal, and no request may wait on a stuck upstream forever.
      withDeadline(
        this.fetchImpl(input, init).then(async (response) => {
          if (readBody) body = await response.text();
          raw = response;
          // postgrest-js reads what it is given: the answer only where the gateway wants its reading.
          if (mode !== "parse") return unreadAnswer(response);
          return new Response(nullBodyStatus(response.status) ? null : body, { status: response.status, statusText: response.statusText, headers: response.headers });
        }),
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
      const error = result.error as { message?: string } | null;
      throw new UpstreamFailure(gatewayErrors.upstreamUnavailable(`upstream unreachable: ${error?.message ?? "no response"}`));
    }
    if (raw.status === 503) void this.breaker?.suspect();
    return { response: raw, body, result };
  }

  private builder(request: UpstreamRequest, fetch: UpstreamFetch) {
    const client = this.client(request.schema);
    let builder;
    if ("rpc" in request.target) {
      builder = client.rpc(request.target.rpc, (request.method === "POST" ? request.args : {}) as never, {
        get: request.method === "GET",
        head: request.method === "HEAD",
      });
    } else {
      builder = client.from(request.target.relation).select(request.query?.get("select") ?? "*", { head: request.method === "HEAD" });
    }
    if (request.query?.size) {
      // The builder API models filters one by one; the caller's query string is already in
      // PostgREST's syntax, so it goes onto the request URL unchanged (order and repeats kept).
      const url = (builder as unknown as { url: URL }).url;
      for (const [name, value] of request.query) {
        if (name === "select" && "relation" in request.target) continue;
        url.searchParams.append(name, value);
      }
    }
    for (const name of FORWARDED_HEADERS) {
      const value = request.headers.get(name);
      if (value !== null) builder.setHeader(name, value);
    }
    // Each exchange captures its own raw answer (see exchange), so the shared client's builder
    // gets this request's fetch; postgrest-js calls the fetch its builder holds.
    (builder as unknown as { fetch: UpstreamFetch }).fetch = fetch;
    return builder;
  }

  private client(schema: string | undefined): Client {
    let client = this.clients.get(schema);
    if (!client) {
      client = new PostgrestClient(this.baseUrl, {
        // Never called: every builder gets its request's capturing fetch.
        fetch: (() => Promise.reject(new Error("postgrest-js called the shared client's fetch"))) as unknown as typeof globalThis.fetch,
        schema,
        retry: false,
      });
      // The profile comes from the caller: unknown ones (PostgREST refuses them) are not kept.
      if (this.clients.size < MAX_CLIENTS) this.clients.set(schema, client);
    }
    return client;
  }

  /** The answer's headers without the hop's: in place on the engine's own Response, else a copy. */
  private ownHeaders(response: Response): Headers {
    if (this.buffered) {
      for (const name of HOP_HEADERS) response.headers.delete(name);
      return response.headers;
    }
    const headers = new Headers();
    response.headers.forEach((value, name) => {
      if (!HOP_HEADERS.includes(name)) headers.set(name, value);
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

function nullBodyStatus(status: number): boolean {
  return status === 204 || status === 304;
}

/** `work`, or a rejection once `ms` have passed (then `onExpire` runs first). */
function withDeadline<T>(work: Promise<T>, ms: number, onExpire: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onExpire();
      reject(new Error("upstream deadline passed"));
    }, ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** The embedded engine's `fetch(Request)` as a fetch-compatible function. */
export function engineFetch(engine: { fetch(request: Request): Promise<Response> }): UpstreamFetch {
  return (input, init) => engine.fetch(input instanceof Request && !init ? input : new Request(input, init));
}
