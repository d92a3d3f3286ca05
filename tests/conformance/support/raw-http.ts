import { connect } from "node:net";

export interface RawResponse {
  status: number;
  statusText: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Map<string, string>;
  body: Buffer;
}

export interface RawRequest {
  method: string;
  /** Request target exactly as it goes on the wire. */
  target: string;
  headers: [string, string][];
  body?: Buffer;
}

/**
 * A minimal HTTP/1.1 client over a plain socket, so the request line carries the path
 * byte for byte (fetch/URL would normalise it) and the reason phrase can be read back.
 */
export function sendRaw(port: number, request: RawRequest, timeoutMs = 10_000): Promise<RawResponse> {
  const lines = [`${request.method} ${request.target} HTTP/1.1`];
  const names = new Set(request.headers.map(([name]) => name.toLowerCase()));
  if (!names.has("host")) lines.push(`Host: 127.0.0.1:${port}`);
  for (const [name, value] of request.headers) lines.push(`${name}: ${value}`);
  if (request.body !== undefined && !names.has("content-length")) lines.push(`Content-Length: ${request.body.length}`);
  lines.push("Connection: close", "", "");
  const head = Buffer.from(lines.join("\r\n"), "latin1");

  return new Promise((resolvePromise, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, "127.0.0.1", () => {
      socket.write(request.body ? Buffer.concat([head, request.body]) : head);
    });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no complete response within ${timeoutMs} ms`)));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      try {
        resolvePromise(parseResponse(Buffer.concat(chunks), request.method === "HEAD"));
      } catch (error) {
        reject(error);
      }
    });
  });
}

function parseResponse(data: Buffer, isHead: boolean): RawResponse {
  const end = data.indexOf("\r\n\r\n");
  if (end < 0) throw new Error(`incomplete HTTP response (${data.length} bytes): ${JSON.stringify(data.toString("latin1").slice(0, 200))}`);
  const [statusLine = "", ...headerLines] = data.subarray(0, end).toString("latin1").split("\r\n");
  const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!match) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
  const status = Number(match[1]);
  const headers = new Map<string, string>();
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const previous = headers.get(name);
    headers.set(name, previous === undefined ? value : `${previous}, ${value}`);
  }
  let body = data.subarray(end + 4);
  const noBody = isHead || status === 204 || status === 304 || (status >= 100 && status < 200);
  if (noBody) body = Buffer.alloc(0);
  else if ((headers.get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) body = dechunk(body);
  else if (headers.has("content-length")) body = body.subarray(0, Number(headers.get("content-length")));
  return { status, statusText: match[2] ?? "", headers, body };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const lineEnd = data.indexOf("\r\n", offset);
    if (lineEnd < 0) throw new Error("truncated chunked body");
    const size = Number.parseInt(data.subarray(offset, lineEnd).toString("latin1").split(";")[0]!, 16);
    if (!Number.isFinite(size)) throw new Error("bad chunk size");
    if (size === 0) return Buffer.concat(parts);
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    offset = lineEnd + 2 + size + 2;
  }
}

/**
 * Percent-encodes only what cannot go on the wire (controls, space, non-ASCII); `%XX`, `+`
 * and every other printable character stay as written.
 */
export function wireTarget(path: string): string {
  let out = "";
  for (const byte of Buffer.from(path, "utf8")) {
    out += byte <= 0x20 || byte >= 0x7f ? `%${byte.toString(16).toUpperCase().padStart(2, "0")}` : String.fromCharCode(byte);
  }
  return out;
}
