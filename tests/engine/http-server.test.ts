// The engine served over node:http (what `bun run rpc-engine` runs): a function's custom reason
// phrase reaches the wire, bodies stream to the engine's own bound, and PostgREST 16's headers
// (Vary on results, none on errors) survive the adapter.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { defaultEngineConfig } from "../../api/src/config";
import { createEngine, type Engine } from "../../api/src/engine/index";
import { nodeRequestListener } from "../../api/src/engine/node-http";
import { testStack } from "../support/stack";
import { adminSql } from "./rpc-support";

const SCHEMA = `httpsrv_${process.pid}`;
const admin = adminSql();
let engine: Engine;
let server: Server;
let port: number;

beforeAll(async () => {
  await admin.unsafe(`create schema ${SCHEMA}`);
  await admin.unsafe(`create function ${SCHEMA}.custom_phrase() returns void language plpgsql as $$
    begin raise sqlstate 'PGRST' using message = '{"code":"123","message":"ABC"}',
      detail = '{"status":332,"status_text":"My Custom Status","headers":{"X-Header":"value"}}'; end $$`);
  await admin.unsafe(`create function ${SCHEMA}.echo(body text) returns text language sql as $$ select body $$`);
  engine = await createEngine(defaultEngineConfig({ dbSchemas: [SCHEMA], maxBodyBytes: 1024 }), { databaseUrl: testStack().databaseUrl, log: () => {} });
  server = createServer(nodeRequestListener((r) => engine.fetch(r), "http://127.0.0.1"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await engine.close();
  await admin.unsafe(`drop schema ${SCHEMA} cascade`);
  await admin.end();
});

/** One HTTP/1.1 exchange over a raw socket: the status line and headers as sent, and the body. */
function exchange(request: string): Promise<{ statusLine: string; headers: Map<string, string>; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let raw = "";
    socket.on("data", (d) => (raw += d.toString("utf8")));
    socket.on("error", reject);
    socket.on("end", () => {
      const [head = "", body = ""] = raw.split("\r\n\r\n");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
      resolve({ statusLine, headers, body });
    });
    socket.write(request);
  });
}

test("a function's custom reason phrase is sent on the wire, with its headers and body", async () => {
  const res = await exchange(`POST /rpc/custom_phrase HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`);
  expect(res.statusLine).toBe("HTTP/1.1 332 My Custom Status");
  expect(res.headers.get("x-header")).toBe("value");
  expect(res.headers.has("vary")).toBe(false);
  expect(JSON.parse(res.body)).toEqual({ code: "123", details: null, hint: null, message: "ABC" });
});

test("a result carries Vary and its standard reason phrase", async () => {
  const body = JSON.stringify({ body: "hello" });
  const res = await exchange(`POST /rpc/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  expect(res.statusLine).toBe("HTTP/1.1 200 OK");
  expect(res.headers.get("vary")).toBe("Accept, Prefer, Range");
  expect(res.body).toBe('"hello"');
});

test("a body past the engine's bound is refused while it streams in", async () => {
  const body = JSON.stringify({ body: "x".repeat(4096) });
  const res = await exchange(`POST /rpc/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  expect(res.statusLine).toBe("HTTP/1.1 413 Payload Too Large");
  expect(JSON.parse(res.body)).toEqual({ code: "PGRST102", details: "The body exceeds the limit of 1024 bytes", hint: null, message: "Request body is too large" });
});
