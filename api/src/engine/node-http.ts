/**
 * Serving `engine.fetch` over node:http. Bun.serve (1.4.5) writes its own reason phrase and
 * ignores `Response.statusText`, so a function's `RAISE SQLSTATE 'PGRST'` with a `status_text`
 * would not reach the wire; node:http's `statusMessage` does. The request body is streamed to
 * the engine, which bounds it (ENGINE_MAX_BODY_BYTES) as it reads.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import { Readable } from "node:stream";

type Fetch = (request: Request) => Promise<Response>;

export function nodeRequestListener(fetch: Fetch, origin: string) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? "GET";
    const headers = new Headers();
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    const hasBody = method !== "GET" && method !== "HEAD";
    let response: Response;
    try {
      response = await fetch(
        new Request(`${origin}${req.url ?? "/"}`, {
          method,
          headers,
          body: hasBody ? (Readable.toWeb(req) as unknown as ReadableStream<Uint8Array>) : undefined,
          duplex: "half",
        } as RequestInit),
      );
    } catch {
      // engine.fetch answers every failure itself; this is a request that could not be built.
      res.writeHead(400, { "Content-Type": "text/plain; charset=utf-8" }).end("Bad Request");
      return;
    }
    res.statusCode = response.status;
    res.statusMessage = response.statusText || STATUS_CODES[response.status] || "Unknown";
    for (const [name, value] of response.headers) if (name !== "set-cookie") res.setHeader(name, value);
    const cookies = response.headers.getSetCookie();
    if (cookies.length > 0) res.setHeader("Set-Cookie", cookies);
    const body = Buffer.from(await response.arrayBuffer());
    res.end(method === "HEAD" || body.length === 0 ? undefined : body);
  };
}
