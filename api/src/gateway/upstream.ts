import { PostgrestClient } from "@supabase/postgrest-js";
import type { DatabaseBreaker } from "./db-breaker";
import { gatewayErrors, type ApiError } from "./errors";

/** A fetch-compatible function: the embedded engine's `fetch` seam, or global fetch to PostgREST. */
export type UpstreamFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Headers of the caller that PostgREST acts on, forwarded as they came. */
const FORWARDED_HEADERS = ["authorization", "prefer", "accept", "range", "range-unit", "x-request-id"] as const;
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
  /** Accept-Profile / Content-Profile of the caller, when given. */
  schema?: string;
  headers: Headers;
  /**
   * Whether postgrest-js reads the answer into `data` / `error` (default true). False where the
   * gateway only relays the raw answer: postgrest-js then gets an empty body to read, which
   * spares a JSON parse of every relayed body (10 KB for a 50-rule list).
   */
  parse?: boolean;
}

/** PostgREST's answer exactly as it came (status, headers, body), plus postgrest-js's reading of it. */
export interface UpstreamResponse {
  status: number;
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

/**
 * Talks to PostgREST (or the engine) through @supabase/postgrest-js. postgrest-js builds and
 * sends the request; the capturing fetch keeps the raw response so the gateway can relay
 * PostgREST's status, headers and body byte for byte, which postgrest-js's parsed result
 * alone would not preserve (Content-Range, headers set by functions, number formatting).
 */
export class Upstream {
  constructor(
    private readonly baseUrl: string,
    private readonly fetchImpl: UpstreamFetch,
    private readonly timeoutMs: number,
    private readonly breaker?: DatabaseBreaker,
  ) {}

  async send(request: UpstreamRequest): Promise<UpstreamResponse> {
    if (this.breaker?.isDown()) throw new UpstreamFailure(gatewayErrors.upstreamUnavailable("the database is unreachable"));
    let raw: { status: number; headers: Headers; body: string } | undefined;
    let expired = false;
    const capture: UpstreamFetch = async (input, init) => {
      // Enforced here, not only through the abort signal: an in-process upstream may not
      // watch the signal, and no request may wait on a stuck upstream forever.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          expired = true;
          reject(new Error("upstream deadline passed"));
        }, this.timeoutMs);
      });
      let response: Response;
      let body: string;
      try {
        response = await Promise.race([this.fetchImpl(input, init), deadline]);
        body = await Promise.race([response.text(), deadline]);
      } finally {
        clearTimeout(timer);
      }
      raw = { status: response.status, headers: response.headers, body };
      return new Response(request.parse === false ? "" : body, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    const client = new PostgrestClient(this.baseUrl, {
      // postgrest-js types its fetch as `typeof fetch`, which also carries Bun's static extras.
      fetch: capture as typeof fetch,
      schema: request.schema,
      retry: false,
    });

    let builder;
    if ("rpc" in request.target) {
      builder = client.rpc(request.target.rpc, (request.method === "POST" ? request.args : {}) as never, {
        get: request.method === "GET",
        head: request.method === "HEAD",
      });
    } else {
      builder = client.from(request.target.relation).select(request.query?.get("select") ?? "*", { head: request.method === "HEAD" });
    }
    if (request.query) {
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
    const headers = new Headers();
    raw.headers.forEach((value, name) => {
      if (!HOP_HEADERS.has(name)) headers.set(name, value);
    });
    const parsed = request.parse !== false;
    return { status: raw.status, headers, body: raw.body, data: parsed ? result.data : null, error: parsed ? (result.error as UpstreamResponse["error"]) : null };
  }
}

/** The embedded engine's `fetch(Request)` as a fetch-compatible function. */
export function engineFetch(engine: { fetch(request: Request): Promise<Response> }): UpstreamFetch {
  return (input, init) => engine.fetch(input instanceof Request && !init ? input : new Request(input, init));
}
