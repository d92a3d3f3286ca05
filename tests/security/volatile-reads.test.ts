// Attack class 2: GET/HEAD of a function that changes state ran it read-only, which made
// sign_in an unlimited password oracle (401 for a wrong password, 405 for the right one).
import { describe, expect, test } from "bun:test";
import { adminSql } from "../compliance/support";
import { call, newUser, signUp } from "../api/helpers";
import { raw } from "./support";

const POST_ONLY = ["sign_in", "sign_up", "issue_token", "revoke_token", "revoke_all_tokens"];

describe("volatile functions are POST only", () => {
  test("GET and HEAD of every auth function are 405 before anything runs, right password or wrong", async () => {
    const user = newUser();
    await signUp(user);
    const sql = adminSql(1);
    const loginBefore = await sql`select last_login_at from auth.users where email = ${user.email}`;
    const answers = new Set<string>();
    for (const fn of POST_ONLY) {
      for (const password of [user.password, "wrong password"]) {
        const query = new URLSearchParams({ email: user.email, password, refresh_token: "x", first_name: "A", last_name: "B" });
        for (const method of ["GET", "HEAD"]) {
          const answer = await raw(method, `/rpc/${fn}?${query}`);
          expect({ fn, method, status: answer.status }).toEqual({ fn, method, status: 405 });
          expect(answer.headers.get("allow")).toBe("POST");
          if (method === "GET") answers.add(answer.text.replace(method, "M"));
        }
      }
    }
    // One and the same answer whatever the function, method or password.
    expect([...answers]).toEqual(['{"code":"AA101","details":null,"hint":"Call it with POST.","message":"Cannot use the M method on a volatile function"}']);
    const loginAfter = await sql`select last_login_at from auth.users where email = ${user.email}`;
    expect(loginAfter).toEqual(loginBefore);
    await sql.end();
  });

  test("a compliance function that writes is POST only too, from the catalogue", async () => {
    const user = newUser();
    await signUp(user);
    const { json } = await call("/rpc/sign_in", { body: user });
    const answer = await call("/rpc/create_tenant?name=Acme", { token: json.access_token });
    expect(answer.status).toBe(405);
    expect(answer.json.code).toBe("AA101");
    const listed = await call("/rpc/my_tenants", { token: json.access_token });
    expect(listed.status).toBe(200);
    expect(listed.text).not.toContain("Acme");
  });

  test("read-only functions still answer GET", async () => {
    const user = newUser();
    await signUp(user);
    const { json } = await call("/rpc/sign_in", { body: user });
    expect((await call("/rpc/me", { token: json.access_token })).status).toBe(200);
  });
});
