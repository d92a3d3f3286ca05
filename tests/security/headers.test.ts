// Attack class 12: answers without the headers that stop sniffing, framing and referrer leaks.
import { describe, expect, test } from "bun:test";
import { call } from "../api/helpers";
import { testStack } from "../support/stack";

function expectSecurityHeaders(headers: Headers, where: string) {
  expect({ where, nosniff: headers.get("x-content-type-options") }).toEqual({ where, nosniff: "nosniff" });
  expect({ where, frame: headers.get("x-frame-options") }).toEqual({ where, frame: "DENY" });
  expect({ where, referrer: headers.get("referrer-policy") }).toEqual({ where, referrer: "no-referrer" });
  expect({ where, ancestors: headers.get("content-security-policy")?.includes("frame-ancestors 'none'") }).toEqual({ where, ancestors: true });
}

describe("security headers", () => {
  test("every kind of answer carries them", async () => {
    for (const path of ["/health", "/rpc/me", "/rpc/nope", "/no/such/path", "/docs", "/docs/json", "/docs/assets/swagger-ui.css"]) {
      const answer = await fetch(`${testStack().apiUrl}${path}`);
      await answer.arrayBuffer();
      expectSecurityHeaders(answer.headers, path);
    }
    const failed = await call("/rpc/sign_in", { body: { email: "nobody@example.com", password: "wrong password" } });
    expectSecurityHeaders(failed.headers, "failed sign_in");
    expect(failed.headers.get("cache-control")).toBe("no-store");
  });

  test("API answers may load nothing; the docs page only what this server serves", async () => {
    const api = await fetch(`${testStack().apiUrl}/rpc/me`);
    expect(api.headers.get("content-security-policy")).toStartWith("default-src 'none'");
    const docs = await fetch(`${testStack().apiUrl}/docs`);
    const csp = docs.headers.get("content-security-policy")!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain("http");
    expect(csp).not.toContain("'unsafe-eval'");
  });
});
