// Attack classes 3, 4 and 11: bodies and query strings the limiter read differently (arrays),
// or whose parsing cost the single event loop (deep nesting, thousands of arguments).
import { describe, expect, test } from "bun:test";
import { call, newUser, signUp } from "../api/helpers";
import { testStack } from "../support/stack";
import { isPostgrestError } from "./support";

describe("array and non-object bodies", () => {
  test("a locked account stays locked when the attempt comes as an array body", async () => {
    const user = newUser();
    await signUp(user);
    let limited = 0;
    for (let i = 0; i < 12 && !limited; i++) {
      const answer = await call("/rpc/sign_in", { body: { email: user.email, password: `wrong ${i}` } });
      if (answer.status === 429) limited++;
    }
    expect(limited).toBe(1);
    const asArray = await call("/rpc/sign_in", { body: [{ email: user.email, password: user.password }] });
    expect(asArray.status).toBe(429);
    expect(asArray.text).not.toContain("refresh_token");
  });

  test("an array body signs in as its first object does, with the token wrapping", async () => {
    const user = newUser();
    await signUp(user);
    const answer = await call("/rpc/sign_in", { body: [{ email: user.email, password: user.password }, { email: "x@example.com", password: "y" }] });
    expect(answer.status).toBe(200);
    expect(typeof answer.json.access_token).toBe("string");
    expect(answer.headers.get("cache-control")).toBe("no-store");
  });

  test("bodies of other shapes are a 4xx in PostgREST's shape", async () => {
    for (const body of ["\"text\"", "42", "null", "true", "[[1]]", "[1,2]", "[null]", "{\"email\":", "[]"]) {
      const answer = await call("/rpc/sign_in", { body });
      expect({ body, status: answer.status >= 400 && answer.status < 500 }).toEqual({ body, status: true });
      expect(isPostgrestError(answer.json)).toBe(true);
      expect(answer.text).not.toContain("refresh_token");
    }
  });
});

describe("bounded parse cost", () => {
  const nested = (depth: number) => `{"refresh_token":${"[".repeat(depth)}${"]".repeat(depth)}}`;

  test("deeply nested JSON is a 400 naming the bound, never a 5xx or an internal message", async () => {
    for (const fn of ["issue_token", "sign_in", "list_rules", "no_such_function"]) {
      const answer = await call(`/rpc/${fn}`, { body: nested(50_000) });
      expect({ fn, status: answer.status }).toEqual({ fn, status: 400 });
      expect(answer.json).toEqual({ code: "PGRST102", details: "JSON nesting is deeper than 64 levels", hint: null, message: "Empty or invalid json" });
    }
    // Up to the bound is JSON like any other.
    const ok = await call("/rpc/issue_token", { body: nested(60) });
    expect(ok.status).toBe(401);
  });

  test("other callers are answered while nested bodies arrive in parallel", async () => {
    const user = newUser();
    await signUp(user);
    const { json } = await call("/rpc/sign_in", { body: user });
    const started = performance.now();
    const floods = Array.from({ length: 8 }, () => call("/rpc/issue_token", { body: nested(50_000) }));
    const me = call("/rpc/me", { token: json.access_token }).then((r) => ({ ...r, ms: performance.now() - started }));
    const [mine, ...nestedAnswers] = await Promise.all([me, ...floods]);
    expect(mine!.status).toBe(200);
    for (const answer of nestedAnswers) expect(answer.status).toBe(400);
    console.log(`[security] me answered in ${mine!.ms.toFixed(1)} ms beside 8 nested 100 KB bodies`);
  });

  test("thousands of query arguments are refused before they are parsed", async () => {
    const many = Array.from({ length: 1500 }, (_, i) => `a=${i}`).join("&");
    const answer = await call(`/rpc/me?${many}`);
    expect(answer.status).toBe(400);
    expect(answer.json).toEqual({ code: "PGRST100", details: "At most 100 parameters are accepted", hint: null, message: "Too many query parameters" });
    const relation = await call(`/people?${many}`);
    expect(relation.status).toBe(400);
    expect(relation.json.code).toBe("PGRST100");
  });

  test("the engine applies the same bounds to callers that reach it directly", async () => {
    // The engine alone (bun run rpc-engine) has no gateway in front of it.
    const { createEngine, engineConfigFromEnv } = await import("../../api/src/engine");
    const engine = await createEngine(engineConfigFromEnv({ PGRST_DB_URI: testStack().authenticatorUrl, PGRST_DB_SCHEMAS: "api", PGRST_DB_ANON_ROLE: "anon", PGRST_JWT_SECRET: "x".repeat(40) }));
    try {
      const deep = await engine.fetch(new Request("http://engine/rpc/issue_token", { method: "POST", headers: { "Content-Type": "application/json" }, body: nested(50_000) }));
      expect(deep.status).toBe(400);
      expect((await deep.json()).code).toBe("PGRST102");
      const many = Array.from({ length: 1500 }, (_, i) => `a${i}=1`).join("&");
      const wide = await engine.fetch(new Request(`http://engine/rpc/session_active?${many}`));
      expect(wide.status).toBe(400);
      expect((await wide.json()).code).toBe("PGRST100");
    } finally {
      await engine.close();
    }
  });
});

describe("arrays PostgREST refuses", () => {
  test("objects with different keys are refused as PostgREST refuses them, not called with the first", async () => {
    const user = newUser();
    await signUp(user);
    const answer = await call("/rpc/sign_in", { body: [{ email: user.email, password: user.password }, { email: user.email }] });
    expect(answer.status).toBe(400);
    expect(answer.json).toEqual({ code: "PGRST102", details: null, hint: null, message: "All object keys must match" });
  });
});
