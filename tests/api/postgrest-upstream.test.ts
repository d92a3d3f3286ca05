// The API with POSTGREST_URL: its upstream reached over HTTP with fetch, as the real PostgREST is in
// docker compose. No PostgREST binary exists on these machines, so the server behind the URL is the
// embedded engine served on a free port; what is checked is the gateway's side of that hop: answers
// read within UPSTREAM_TIMEOUT_MS (body included) and relayed with PostgREST's status, headers and
// body, the hop's own transport headers replaced by the API's.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { loadConfig } from "../../api/src/config";
import { createEngine, engineConfigFromEnv, type Engine } from "../../api/src/engine";
import { startApi, type RunningApi } from "../../api/src/server";
import { testStack } from "../support/stack";
import { call, newUser, pgrstError, signIn, signUp } from "./helpers";

const env = testStack().apiEnv;
const UPSTREAM_TIMEOUT_MS = 800;

describe.skipIf(!env)("POSTGREST_URL: an upstream over HTTP [starts its own API and upstream: not with API_URL]", () => {
  let engine: Engine;
  let upstream: Server<unknown>;
  let api: RunningApi;

  beforeAll(async () => {
    engine = await createEngine(engineConfigFromEnv(env!), { log: () => {} });
    upstream = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(request) {
        const path = new URL(request.url).pathname;
        // Two functions that do not exist, standing for an upstream that stops answering:
        // before its headers, or in the middle of its body.
        if (path === "/rpc/stall_headers") return new Promise<Response>(() => {});
        if (path === "/rpc/stall_body") {
          const body = new ReadableStream({ start: (c) => c.enqueue(new TextEncoder().encode('{"partial":')) });
          return new Response(body, { headers: { "Content-Type": "application/json" } });
        }
        return engine.fetch(request);
      },
    });
    const apiEnv = { ...env!, POSTGREST_URL: `http://127.0.0.1:${upstream.port}`, UPSTREAM_TIMEOUT_MS: String(UPSTREAM_TIMEOUT_MS) };
    api = await startApi(loadConfig(apiEnv), () => {});
  }, 30_000);
  afterAll(async () => {
    await api?.stop();
    upstream?.stop(true);
    await engine?.close();
  });

  /** The same request on the upstream itself, for what the API must relay unchanged. */
  const direct = (path: string, headers: Record<string, string> = {}) => fetch(`http://127.0.0.1:${upstream.port}${path}`, { headers });

  test("the upstream is sent the target the gateway judged, so name tricks and GET of sign_in go nowhere", async () => {
    const seen: string[] = [];
    const user = newUser();
    expect((await signUp(user, api.url)).status).toBe(200);
    for (const variant of ["sign_in%23", "sign_in%3F", "x%2F..%2Fsign_in", "sign_in%20"]) {
      const answer = await call(`/rpc/${variant}`, { base: api.url, body: { email: user.email, password: user.password } });
      expect({ variant, status: answer.status, code: answer.json.code }).toEqual({ variant, status: 404, code: "PGRST202" });
      seen.push(answer.text);
    }
    expect(seen.join("")).not.toContain("refresh_token");
    const read = await call(`/rpc/sign_in?email=${encodeURIComponent(user.email)}&password=${encodeURIComponent(user.password)}`, { base: api.url });
    expect(read.status).toBe(405);
    expect(read.json.code).toBe("AA101");
  });

  test("health names the upstream postgrest and finds it up", async () => {
    const health = await call("/health", { base: api.url });
    expect(health.status).toBe(200);
    expect(health.json.checks.postgrest.status).toBe("up");
  });

  test("the whole flow works through it, and answers come back as the upstream gave them", async () => {
    const user = newUser();
    expect((await signUp(user, api.url)).status).toBe(200);
    const session = await signIn(user, api.url);
    const auth = { Authorization: `Bearer ${session.access_token}` };

    const viaApi = await call("/rpc/me", { base: api.url, token: session.access_token });
    const upstreamAnswer = await direct("/rpc/me", auth);
    const upstreamBody = await upstreamAnswer.text();
    expect(viaApi.status).toBe(200);
    expect(viaApi.text).toBe(upstreamBody);
    expect(viaApi.json.email).toBe(user.email);
    expect(viaApi.headers.get("content-range")).toBe(upstreamAnswer.headers.get("content-range"));
    expect(viaApi.headers.get("content-type")).toBe("application/json; charset=utf-8");
    // The API's own framing of the body it sends, not a copy of the hop's.
    expect(viaApi.headers.get("content-length")).toBe(String(Buffer.byteLength(viaApi.text)));
    expect(viaApi.headers.get("transfer-encoding")).toBeNull();
    expect(viaApi.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("errors are relayed with their status, body and headers", async () => {
    const anonymous = await call("/rpc/me", { base: api.url });
    const upstreamAnswer = await direct("/rpc/me");
    expect(anonymous.status).toBe(upstreamAnswer.status);
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).toBe(await upstreamAnswer.text());
    expect(anonymous.headers.get("www-authenticate")).toBe(upstreamAnswer.headers.get("www-authenticate"));

    const missing = await call("/no_such_table", { base: api.url });
    expect(missing.status).toBe(404);
    expect(missing.json.code).toBe("PGRST205");
    expect(missing.headers.get("proxy-status")).toBe("PostgREST; error=PGRST205");
  });

  test("an upstream that stops answering, before its headers or mid-body, gets 504 AA003 at the deadline", async () => {
    for (const fn of ["stall_headers", "stall_body"]) {
      const started = performance.now();
      const stalled = await call(`/rpc/${fn}`, { base: api.url, body: {} });
      const waited = performance.now() - started;
      expect(stalled.status).toBe(504);
      expect(stalled.json).toEqual(pgrstError("AA003", "The upstream did not answer in time"));
      expect(waited).toBeGreaterThanOrEqual(UPSTREAM_TIMEOUT_MS - 50);
    }
    // The API itself still answers at once.
    expect((await call("/health", { base: api.url })).status).toBe(200);
  });
});
