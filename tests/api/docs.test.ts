// Swagger UI at /docs with every asset served by the API itself (air-gapped servers), and the
// OpenAPI document at /docs/json matching the functions exposed in pg_proc.
import { afterAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { testStack } from "../support/stack";
import { call } from "./helpers";

const EXPECTED_TYPES: Record<string, RegExp> = {
  ".css": /^text\/css/,
  ".js": /^(text|application)\/javascript/,
  ".png": /^image\/png/,
};

describe("/docs", () => {
  test("serves the Swagger UI page whose every asset is local and served", async () => {
    const page = await call("/docs");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toStartWith("text/html");
    expect(page.text).toContain('id="swagger-ui"');
    const refs = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThanOrEqual(4);
    for (const ref of refs) {
      // No CDN, no other host: a path on this server.
      expect(ref).toStartWith("/");
      expect(ref).not.toStartWith("//");
      const asset = await call(ref);
      expect(asset.status).toBe(200);
      const ext = ref.slice(ref.lastIndexOf("."));
      expect(asset.headers.get("content-type")).toMatch(EXPECTED_TYPES[ext]!);
      expect(asset.text.length).toBeGreaterThan(0);
    }
    expect(refs.some((r) => r.endsWith("swagger-ui-bundle.js"))).toBe(true);
    // The initializer points the UI at our document, not at a remote example.
    const init = await call(refs.find((r) => r.endsWith("init.js"))!);
    expect(init.text).toContain('"/docs/json"');
    expect(init.text).not.toContain("http");
  });

  test("an asset name outside the Swagger UI set is a 404 in PostgREST's shape", async () => {
    for (const path of ["/docs/assets/package.json", "/docs/assets/..%2Fpackage.json", "/docs/assets/swagger-ui.js.map"]) {
      const result = await call(path);
      expect(result.status).toBe(404);
      expect(Object.keys(result.json)).toEqual(["code", "details", "hint", "message"]);
    }
  });
});

describe("/docs/json", () => {
  const sql = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
  afterAll(() => sql.end());

  test("is an OpenAPI 3 document whose functions are exactly those exposed in pg_proc", async () => {
    const result = await call("/docs/json");
    expect(result.status).toBe(200);
    const doc = result.json;
    expect(doc.openapi).toMatch(/^3\.\d+\.\d+$/);
    expect(typeof doc.info.title).toBe("string");
    expect(typeof doc.info.version).toBe("string");
    expect(doc.components.securitySchemes.bearerAuth).toEqual({ type: "http", scheme: "bearer", bearerFormat: "JWT" });

    const rows = await sql<{ proname: string; provolatile: string }[]>`
      select distinct proname, provolatile from pg_proc where pronamespace = 'api'::regnamespace and prokind = 'f'`;
    const documented = Object.keys(doc.paths).filter((p) => p.startsWith("/rpc/")).map((p) => p.slice(5)).sort();
    expect(documented).toEqual([...new Set(rows.map((r) => r.proname))].sort());
    for (const row of rows) {
      const path = doc.paths[`/rpc/${row.proname}`];
      expect(path.post).toBeDefined();
      // GET is offered exactly for STABLE/IMMUTABLE functions, as PostgREST allows it.
      expect(Boolean(path.get)).toBe(row.provolatile !== "v");
    }
  });

  test("describes parameters with types, responses with the error shape, and the bearer scheme", async () => {
    const doc = (await call("/docs/json")).json;
    const signIn = doc.paths["/rpc/sign_in"].post;
    const body = signIn.requestBody.content["application/json"].schema;
    expect(body.properties).toEqual({ email: { type: "string", description: "text" }, password: { type: "string", description: "text" } });
    expect(body.required).toEqual(["email", "password"]);
    expect(signIn.responses["200"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Token" });
    expect(signIn.responses["429"]).toBeDefined();
    expect(doc.paths["/rpc/me"].get.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths["/rpc/sign_up"].post.security).toEqual([{}, { bearerAuth: [] }]);

    // Structural validity: every operation has responses, every $ref resolves.
    const refs: string[] = [];
    const walk = (node: unknown) => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === "object") {
        for (const [key, value] of Object.entries(node)) {
          if (key === "$ref" && typeof value === "string") refs.push(value);
          else walk(value);
        }
      }
    };
    walk(doc);
    for (const ref of refs) {
      const target = ref.replace(/^#\//, "").split("/").reduce<any>((node, part) => node?.[part], doc);
      expect(target).toBeDefined();
    }
    // OpenID Connect sign-in: the two browser routes, and the exchange answering tokens.
    expect(doc.paths["/auth/authorize"].get.parameters.map((p: any) => p.name)).toEqual(["provider", "redirect_to", "code_challenge", "code_challenge_method"]);
    expect(Object.keys(doc.paths["/auth/callback"].get.responses)).toContain("302");
    expect(doc.paths["/rpc/exchange_auth_code"].post.responses["200"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Token" });
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(item)) {
        expect(["get", "post"]).toContain(method);
        expect(Object.keys(op.responses).length).toBeGreaterThan(0);
        expect(typeof op.operationId).toBe("string");
        if (path.startsWith("/rpc/")) expect(op.responses["401"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Error" });
      }
    }
  });
});
