// Attack class 1: a path that the gateway and the upstream would read differently. Every
// variant of an auth function's name is either that function, with all its protections, or a
// function that does not exist; never the function without them.
import { describe, expect, test } from "bun:test";
import { adminSql } from "../compliance/support";
import { call, newUser, signIn, signUp } from "../api/helpers";
import { isPostgrestError, raw } from "./support";

const AUTH_FUNCTIONS = ["sign_in", "sign_up", "issue_token", "revoke_token", "revoke_all_tokens"];
/** Suffixes and wrappings that URL parsers fold away or split on. */
const VARIANTS = (fn: string) => [
  `${fn}%23`, `${fn}%3F`, `${fn}%3Fx=1`, `${fn}%2F`, `${fn}%20`, `${fn}%00`, `${fn}%09`, `%20${fn}`,
  `x%2F..%2F${fn}`, `x%2F%2E%2E%2F${fn}`, `.%2F${fn}`, `%2E%2F${fn}`, `${fn}%2F.`, `${fn}%252F`, `${fn}%23x`,
];

describe("one reading of the function name", () => {
  test("no variant of an auth function's name reaches that function", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    // Each function's own arguments, so that reaching it would succeed.
    const bodies: Record<string, unknown> = {
      sign_in: { email: user.email, password: user.password },
      sign_up: { email: `other-${user.email}`, password: user.password, first_name: "A", last_name: "B" },
      issue_token: { refresh_token: tokens.refresh_token },
      revoke_token: { refresh_token: tokens.refresh_token },
      revoke_all_tokens: {},
    };
    const sql = adminSql(1);
    const before = await sql`select count(*)::int as n from auth.sessions s join auth.users u on u.id = s.user_id where u.email = ${user.email}`;
    const wrong: string[] = [];
    for (const fn of AUTH_FUNCTIONS) {
      for (const variant of VARIANTS(fn)) {
        const answer = await raw("POST", `/rpc/${variant}`, { body: bodies[fn], headers: { Authorization: `Bearer ${tokens.access_token}` } });
        if (answer.status < 400 || answer.text.includes("refresh_token\":") || !isPostgrestError(answer.json)) {
          wrong.push(`${variant} → ${answer.status} ${answer.text.slice(0, 120)}`);
        }
      }
    }
    expect(wrong).toEqual([]);
    // Nothing signed in: not one session was opened by the variants.
    const after = await sql`select count(*)::int as n from auth.sessions s join auth.users u on u.id = s.user_id where u.email = ${user.email}`;
    expect(after[0]!.n).toBe(before[0]!.n);
    // Nothing revoked or rotated either, and no second account.
    expect((await call("/rpc/validate_token", { body: { refresh_token: tokens.refresh_token } })).json.active).toBe(true);
    expect((await sql`select count(*)::int as n from auth.users where email = ${`other-${user.email}`}`)[0]!.n).toBe(0);
    await sql.end();
  });

  test("a variant is answered as PostgREST answers a function that does not exist", async () => {
    const answer = await raw("POST", "/rpc/sign_in%23", { body: { email: "a@example.com", password: "x" } });
    expect(answer.status).toBe(404);
    expect(answer.json.code).toBe("PGRST202");
    expect(answer.json.message).toBe("Could not find the function api.sign_in#(email, password) in the schema cache");
  });

  test("dot segments written on the wire are not another way in", async () => {
    const user = newUser();
    await signUp(user);
    for (const target of ["/rpc/x/../sign_in", "/rpc/./sign_in", "/x/../rpc/sign_in", "/rpc/%2e%2e", "/rpc/%2E", "/rpc%2Fsign_in", "//rpc/sign_in"]) {
      const answer = await raw("POST", target, { body: { email: user.email, password: user.password } });
      // Either refused, or sign_in itself with its wrapping (an access token, never the raw session).
      if (answer.status === 200) {
        expect({ target, keys: Object.keys(answer.json).sort() }).toEqual({ target, keys: ["aal", "access_token", "expires_in", "factors", "mfa_required", "refresh_expires_at", "refresh_token", "token_type", "user"] });
        expect(answer.headers.get("cache-control")).toBe("no-store");
      } else {
        expect({ target, error: isPostgrestError(answer.json) }).toEqual({ target, error: true });
        expect(answer.text).not.toContain("refresh_token");
      }
    }
  });

  test("a trailing slash is the function itself, with its protections", async () => {
    const user = newUser();
    await signUp(user);
    const answer = await raw("POST", "/rpc/sign_in/", { body: { email: user.email, password: user.password } });
    expect(answer.status).toBe(200);
    expect(typeof answer.json.access_token).toBe("string");
    expect(answer.headers.get("cache-control")).toBe("no-store");
  });

  test("revoke_token through a variant revokes nothing; through its name, the session ends", async () => {
    const user = newUser();
    await signUp(user);
    const tokens = await signIn(user);
    expect((await call("/rpc/me", { token: tokens.access_token })).status).toBe(200);
    const variant = await raw("POST", "/rpc/revoke_token%23", { body: { refresh_token: tokens.refresh_token } });
    expect(variant.status).toBe(404);
    expect((await call("/rpc/me", { token: tokens.access_token })).status).toBe(200);
    expect((await call("/rpc/revoke_token", { body: { refresh_token: tokens.refresh_token } })).status).toBe(200);
    const after = await call("/rpc/me", { token: tokens.access_token });
    expect(after.status).toBe(401);
    expect(after.json.code).toBe("AA301");
  });

  test("an unexposed schema is refused before any policy, as PostgREST refuses it", async () => {
    const answer = await raw("POST", "/rpc/sign_in", { body: { email: "a@example.com", password: "x" }, headers: { "Content-Profile": "auth" } });
    expect(answer.status).toBe(406);
    expect(answer.json).toEqual({ code: "PGRST106", details: null, hint: "Only the following schemas are exposed: api", message: "Invalid schema: auth" });
  });
});
