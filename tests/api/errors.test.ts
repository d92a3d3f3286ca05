// The closed list of the gateway's own errors (api/src/gateway/errors.ts): its codes, its
// documentation, and the answers the gateway gives from it over HTTP.
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { GATEWAY_ERRORS, gatewayError } from "../../api/src/gateway/errors";
import { withCurrentTables } from "../../api/src/gateway/errors-doc";
import { raw } from "../security/support";
import { call, ROOT } from "./helpers";

const GROUP_STATUSES: Record<string, (status: number) => boolean> = {
  "0": (s) => s === 503 || s === 504,
  "1": (s) => s >= 400 && s < 500,
  "3": (s) => s >= 400 && s < 500,
  "4": (s) => s === 429 || s === 503,
  "5": (s) => s === 500,
};

describe("the list", () => {
  test("the gateway's own codes are AA + 3 digits in a documented group; borrowed codes are PostgREST's or SQL's", () => {
    for (const [code, spec] of Object.entries(GATEWAY_ERRORS)) {
      if (spec.source === "gateway") {
        expect({ code, ok: /^AA[0-5][0-9]{2}$/.test(code) }).toEqual({ code, ok: true });
        expect({ code, status: spec.status, fits: GROUP_STATUSES[code[2]!]?.(spec.status) }).toEqual({ code, status: spec.status, fits: true });
      } else if (spec.source === "postgrest") {
        expect({ code, ok: /^PGRST[0-9]{3}$/.test(code) }).toEqual({ code, ok: true });
      } else {
        expect({ code, ok: /^(PT[0-9]{3}|[0-9A-Z]{5})$/.test(code) }).toEqual({ code, ok: true });
      }
      expect({ code, documented: spec.meaning.length > 0 && spec.when.length > 0 }).toEqual({ code, documented: true });
    }
  });

  test("docs/reference/errors.md shows the list as it is (regenerate with bun api/src/cli/errors-doc.ts)", async () => {
    const document = await Bun.file(resolve(ROOT, "docs/reference/errors.md")).text();
    expect(withCurrentTables(document)).toBe(document);
    for (const code of Object.keys(GATEWAY_ERRORS)) expect(document).toContain(`| \`${code}\` |`);
  });

  test("an error is built from the list: status, message and hint from it, the named values filled in", () => {
    const error = gatewayError("AA401", { params: { seconds: "7" }, details: "Limit per client address reached", headers: { "Retry-After": "7" } });
    expect({ status: error.status, body: JSON.parse(error.body()), headers: error.headers }).toEqual({
      status: 429,
      body: { code: "AA401", details: "Limit per client address reached", hint: "Retry after 7 seconds.", message: "Too many requests" },
      headers: { "Retry-After": "7" },
    });
    // A value that looks like a placeholder is not expanded again.
    expect(gatewayError("PGRST101", { params: { method: "{method}" } }).message).toBe("Cannot use the {method} method on RPC");
  });

  test("a code outside the list, or a missing value, does not compile", () => {
    // @ts-expect-error PGRST429 is not in the list (and never was PostgREST's).
    expect(() => gatewayError("PGRST429")).toThrow();
    // @ts-expect-error AA101's message names {method}.
    expect(gatewayError("AA101").message).toBe("Cannot use the  method on a volatile function");
    // @ts-expect-error AA500 names no values.
    expect(gatewayError("AA500", { params: { method: "GET" } }).message).toBe("Internal gateway error");
  });
});

describe("the gateway's answers", () => {
  test("PUT, PATCH and DELETE of a function are PostgREST's PGRST101", async () => {
    for (const method of ["PUT", "PATCH", "DELETE"]) {
      const answer = await call("/rpc/me", { method, body: {} });
      expect({ method, status: answer.status, body: answer.json }).toEqual({
        method, status: 405, body: { code: "PGRST101", details: null, hint: null, message: `Cannot use the ${method} method on RPC` },
      });
    }
  });

  test("writes on a relation are AA102; a method PostgREST serves nowhere is PGRST117", async () => {
    for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
      const answer = await call("/no_such_table", { method, body: {} });
      expect({ method, status: answer.status, body: answer.json }).toEqual({
        method, status: 405,
        body: { code: "AA102", details: null, hint: GATEWAY_ERRORS.AA102.hint, message: `Unsupported HTTP method: ${method}` },
      });
    }
    const odd = await raw("PROPFIND", "/no_such_table");
    expect({ status: odd.status, body: odd.json }).toEqual({
      status: 405, body: { code: "PGRST117", details: null, hint: null, message: "Unsupported HTTP method: PROPFIND" },
    });
  });

  test("an unknown route and an unexposed schema are PostgREST's PGRST125 and PGRST106", async () => {
    const route = await call("/a/b/c");
    expect({ status: route.status, body: route.json }).toEqual({
      status: 404, body: { code: "PGRST125", details: "No route for /a/b/c", hint: null, message: "Invalid path specified in request URL" },
    });
    const schema = await call("/rpc/me", { headers: { "Accept-Profile": "secret" } });
    expect({ status: schema.status, body: schema.json }).toEqual({
      status: 406,
      body: { code: "PGRST106", details: null, hint: expect.stringMatching(/^Only the following schemas are exposed: /), message: "Invalid schema: secret" },
    });
  });
});
