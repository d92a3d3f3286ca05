// What every response carries: health, request ids, CORS, one log line per request without
// secrets, and PostgREST-shaped answers for routes the API does not have.
import { afterAll, describe, expect, test } from "bun:test";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { testStack } from "../support/stack";
import { call, newUser, signIn, signUp } from "./helpers";

const started: RunningApi[] = [];
afterAll(async () => {
  for (const api of started) await api.stop();
});
const canStartInstances = Boolean(testStack().apiEnv);
const SKIP_REASON = "[starts its own API instance: not with API_URL]";

describe("GET /health", () => {
  test("reports Postgres, Redis and the upstream with latencies", async () => {
    const result = await call("/health");
    expect(result.status).toBe(200);
    expect(result.json.status).toBe("ok");
    expect(result.json.down).toEqual([]);
    const parts = Object.keys(result.json.checks).sort();
    expect(parts).toEqual(["postgres", "redis", expect.stringMatching(/^(engine|postgrest)$/)].sort());
    for (const part of Object.values<any>(result.json.checks)) {
      expect(part.status).toBe("up");
      expect(typeof part.latency_ms).toBe("number");
    }
  });
});

describe("request ids", () => {
  test("a new id on every response, the caller's when it sends a sane one", async () => {
    const a = await call("/health");
    const b = await call("/health");
    expect(a.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.headers.get("x-request-id")).not.toBe(b.headers.get("x-request-id"));
    expect((await call("/rpc/me", { headers: { "X-Request-Id": "trace-42.abc" } })).headers.get("x-request-id")).toBe("trace-42.abc");
    const hostile = await call("/health", { headers: { "X-Request-Id": "x".repeat(300) } });
    expect(hostile.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("routes the API does not have", () => {
  test("404 in PostgREST's shape", async () => {
    const result = await call("/no/such/route");
    expect(result.status).toBe(404);
    expect(Object.keys(result.json)).toEqual(["code", "details", "hint", "message"]);
    expect(result.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(result.headers.get("x-content-type-options")).toBe("nosniff");
  });

  test("relation reads are forwarded: an unknown table gets PostgREST's 404", async () => {
    const result = await call("/no_such_table?select=id&id=eq.1&id=lt.5");
    expect(result.status).toBe(404);
    expect(result.json.code).toBe("PGRST205");
  });

  test("PUT on a function: 405 in PostgREST's shape", async () => {
    const result = await call("/rpc/me", { method: "PUT", body: {} });
    expect(result.status).toBe(405);
    expect(Object.keys(result.json)).toEqual(["code", "details", "hint", "message"]);
  });
});

describe.skipIf(!canStartInstances)(`CORS, routing and request logs ${SKIP_REASON}`, () => {
  test("a very short Host header does not change which route answers", async () => {
    const api = await startApi(loadConfig(testStack().apiEnv!), () => {});
    started.push(api);
    const result = await api.gateway.handle(new Request("http://a/rpc/me"));
    // The anonymous role may not run api.me: PostgREST's 401 for /rpc/me, not a relation lookup of "me".
    expect(result.status).toBe(401);
    expect(((await result.json()) as { code: string }).code).toBe("42501");
  });

  test("only the configured origins get CORS headers; preflight answered", async () => {
    const env = { ...testStack().apiEnv!, CORS_ORIGINS: "https://app.example.com" };
    const api = await startApi(loadConfig(env), () => {});
    started.push(api);
    const preflight = await fetch(`${api.url}/rpc/me`, {
      method: "OPTIONS",
      headers: { Origin: "https://app.example.com", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("Authorization");
    const allowed = await call("/health", { base: api.url, headers: { Origin: "https://app.example.com" } });
    expect(allowed.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(allowed.headers.get("access-control-expose-headers")).toContain("X-Request-Id");
    const other = await call("/health", { base: api.url, headers: { Origin: "https://evil.example.com" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    // No cookies are used: never credentials. A preflight from another origin learns nothing.
    expect(preflight.headers.get("access-control-allow-credentials")).toBeNull();
    expect(allowed.headers.get("access-control-allow-credentials")).toBeNull();
    expect(preflight.headers.get("vary")).toBe("Origin");
    const refused = await fetch(`${api.url}/rpc/me`, { method: "OPTIONS", headers: { Origin: "https://evil.example.com", "Access-Control-Request-Method": "GET" } });
    expect(refused.status).toBe(204);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
    expect(refused.headers.get("access-control-allow-methods")).toBeNull();
    // The answer's own Vary keeps its names and gains Origin, as its Allow-Origin depends on it.
    const user = newUser();
    await signUp(user, api.url);
    const session = await signIn(user, api.url);
    const read = await call("/rpc/me", { base: api.url, token: session.access_token, headers: { Origin: "https://app.example.com" } });
    expect(read.status).toBe(200);
    expect(read.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(read.headers.get("vary")).toBe("Accept, Prefer, Range, Origin");
    // A plain OPTIONS (no Access-Control-Request-Method) is no preflight: the route answers it.
    const options = await call("/rpc/me", { base: api.url, method: "OPTIONS", headers: { Origin: "https://app.example.com" } });
    expect(options.status).toBe(405);
    expect(Object.keys(options.json)).toEqual(["code", "details", "hint", "message"]);
    expect(options.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("with CORS_ORIGINS=*: any origin, Allow-Origin *, and no Vary added", async () => {
    const env = { ...testStack().apiEnv!, CORS_ORIGINS: "*" };
    const api = await startApi(loadConfig(env), () => {});
    started.push(api);
    const health = await call("/health", { base: api.url, headers: { Origin: "https://anyone.example" } });
    expect(health.headers.get("access-control-allow-origin")).toBe("*");
    expect(health.headers.get("access-control-expose-headers")).toContain("Retry-After");
    expect(health.headers.get("vary")).toBeNull();
    const missing = await call("/no/such/route", { base: api.url, headers: { Origin: "https://anyone.example" } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get("vary")).toBeNull();
    expect(missing.headers.get("access-control-allow-origin")).toBe("*");
  });

  test("one JSON line per request with method, path, status, duration and id; no tokens or passwords", async () => {
    const lines: string[] = [];
    const env = { ...testStack().apiEnv!, LOG_REQUESTS: "true" };
    const api = await startApi(loadConfig(env), (line) => lines.push(line));
    started.push(api);
    const user = newUser();
    await signUp(user, api.url);
    const session = await signIn(user, api.url);
    await call("/rpc/me", { base: api.url, token: session.access_token, headers: { "X-Request-Id": "log-test-1" } });
    await call(`/rpc/validate_token?refresh_token=${session.refresh_token}`, { base: api.url });

    const requests = lines.map((l) => JSON.parse(l)).filter((e) => e.event === "request");
    expect(requests.map((e) => `${e.method} ${e.path} ${e.status}`)).toEqual([
      "POST /rpc/sign_up 200",
      "POST /rpc/sign_in 200",
      "GET /rpc/me 200",
      "GET /rpc/validate_token 200",
    ]);
    const me = requests[2];
    expect(me.request_id).toBe("log-test-1");
    expect(typeof me.duration_ms).toBe("number");
    expect(me.client_ip).toMatch(/^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
    // Paths no route has, and preflights, are logged too, each with the id it was answered with.
    const missing = await call("/no/such/route?x=1", { base: api.url });
    const preflight = await fetch(`${api.url}/rpc/me`, { method: "OPTIONS", headers: { Origin: "https://a.example", "Access-Control-Request-Method": "GET" } });
    const later = lines.map((l) => JSON.parse(l)).filter((e) => e.event === "request").slice(4);
    expect(later.map((e) => `${e.method} ${e.path} ${e.status}`)).toEqual(["GET /no/such/route 404", "OPTIONS /rpc/me 204"]);
    expect(later.map((e) => e.request_id)).toEqual([missing.headers.get("x-request-id"), preflight.headers.get("x-request-id")]);
    const everything = lines.join("\n");
    for (const secret of [user.password, session.access_token, session.refresh_token, session.access_token.split(".")[2]!]) {
      expect(everything).not.toContain(secret);
    }
  });
});
