// jwt-role-claim-key: RFC 9535 JSONPath (PostgREST 16) and the older JSPath (deprecated in 16.2),
// read with the same meaning.
import { describe, expect, test } from "bun:test";
import { isLegacyJsPath, legacyRoleClaimKeyWarning, parseJsPath, walkJsPath } from "../../api/src/engine/jspath";

const claims = {
  role: "top",
  realm_access: { roles: ["viewer", "editor", "admin"] },
  "https://example.com/role": "namespaced",
  "a b": { "c'd": "spaced" },
  postgrest: { a_role: "nested" },
};
const at = (path: string) => walkJsPath(claims, parseJsPath(path));

describe("JSONPath (RFC 9535)", () => {
  test("member names, indexes (negative from the end) and bracketed names", () => {
    expect(at("$.role")).toBe("top");
    expect(at("$.realm_access.roles[0]")).toBe("viewer");
    expect(at("$.realm_access.roles[-1]")).toBe("admin");
    expect(at("$.realm_access.roles[ 1 ]")).toBe("editor");
    expect(at('$["https://example.com/role"]')).toBe("namespaced");
    expect(at("$['https://example.com/role']")).toBe("namespaced");
    expect(at('$."https://example.com/role"')).toBe("namespaced");
    expect(at("$['a b']['c\\'d']")).toBe("spaced");
    expect(at('$["postgrest"]["a_role"]')).toBe("nested");
  });

  test("filters and wildcards select a node list; the role is its first node", () => {
    expect(at('$.realm_access.roles[?@ == "editor"]')).toBe("editor");
    expect(at("$.realm_access.roles[?(@ == 'admin')]")).toBe("admin");
    expect(at('$.realm_access.roles[?(@ != "viewer")]')).toBe("editor");
    expect(at('$.realm_access.roles[?"admin" == @]')).toBe("admin");
    expect(at("$.realm_access.roles[*]")).toBe("viewer");
    expect(at("$.postgrest.*")).toBe("nested");
  });

  test("a path that selects nothing gives no role", () => {
    expect(at("$.missing")).toBeUndefined();
    expect(at("$.realm_access.roles[3]")).toBeUndefined();
    expect(at("$.realm_access.roles[-4]")).toBeUndefined();
    expect(at('$.realm_access.roles[?@ == "owner"]')).toBeUndefined();
    expect(at("$.role.inner")).toBeUndefined();
  });

  test("malformed paths are refused with PostgREST's message", () => {
    for (const bad of ["$", "$.", "$.1abc", "$[01]", "$[-0]", "$[", "$['x'", "$.a[?@ ^== 'x']", "$.a[?(@ == 'x']", "$..a", "$a"]) {
      expect(() => parseJsPath(bad === "$" ? "$x" : bad), bad).toThrow("failed to parse role-claim-key value");
    }
  });
});

describe("the older JSPath (deprecated)", () => {
  test("reads as before: .key, .\"quoted\", [n], filters with ==, !=, ^==, ==^, *==", () => {
    expect(at(".role")).toBe("top");
    expect(at(".postgrest.a_role")).toBe("nested");
    expect(at(".realm_access.roles[2]")).toBe("admin");
    expect(at('."https://example.com/role"')).toBe("namespaced");
    expect(at('.realm_access.roles[?(@ ^== "ed")]')).toBe("editor");
    expect(at('.realm_access.roles[?(@ ==^ "min")]')).toBe("admin");
    expect(at('.realm_access.roles[?(@ *== "iew")]')).toBe("viewer");
    expect(() => parseJsPath(".role[x")).toThrow("role-claim-key");
  });

  test("is told apart by the leading $, and warned about with its JSONPath spelling", () => {
    expect(isLegacyJsPath(".role")).toBe(true);
    expect(isLegacyJsPath("$.role")).toBe(false);
    expect(legacyRoleClaimKeyWarning("$.role")).toBeUndefined();
    expect(legacyRoleClaimKeyWarning(".role")).toContain('"$.role"');
    expect(legacyRoleClaimKeyWarning('.a.b[0]')).toContain('"$.a.b[0]"');
    expect(legacyRoleClaimKeyWarning('."https://x/r"')).toContain(JSON.stringify('$["https://x/r"]'));
    expect(legacyRoleClaimKeyWarning('.r[?(@ ^== "a")]')).toContain("deprecated");
  });
});
