import { afterAll, describe, expect, test } from "bun:test";
import { adminSql, call as rpc, signUp, uniqueEmail } from "./support";

const sql = adminSql();
afterAll(() => sql.end());

/** api.sign_up through the engine, anonymously; `error` is the body of a failed answer. */
const call = async (email: unknown, password: unknown, first: unknown, last: unknown) => {
  const answer = await rpc("sign_up", { email, password, first_name: first, last_name: last });
  return answer.status === 200 ? { status: answer.status, user: answer.body } : { status: answer.status, error: answer.body };
};

const countUsers = async () => Number((await sql`select count(*) as n from auth.users`)[0]!.n);

describe("sign_up", () => {
  test("creates the user and returns its profile, never the hash", async () => {
    const email = uniqueEmail("signup");
    const result = await call(`  ${email.toUpperCase()} `, "correct horse battery", " Ada ", "Lovelace");
    expect(result.status).toBe(200);
    const user = result.user;
    expect(Object.keys(user).sort()).toEqual(["created_at", "email", "email_verified_at", "first_name", "id", "last_login_at", "last_name"]);
    expect(user).toMatchObject({ email, first_name: "Ada", last_name: "Lovelace", last_login_at: null, email_verified_at: null });
    const [row] = await sql`select password_hash from auth.users where id = ${user.id}`;
    const cost = (await sql`select auth.bcrypt_cost() as cost`)[0]!.cost;
    expect(row!.password_hash.startsWith(`$2a$${String(cost).padStart(2, "0")}$`)).toBe(true);
    expect(JSON.stringify(user)).not.toContain(row!.password_hash);
  });

  test("a duplicate email, in any case and with spaces, is a conflict", async () => {
    const email = uniqueEmail("dup");
    await signUp(email);
    const result = await call(` ${email.toUpperCase()}`, "another password", "B", "C");
    expect(result).toEqual({ status: 409, error: { code: "PT409", details: null, hint: "Sign in instead.", message: "an account with this email already exists" } });
  });

  const invalid: [string, unknown[], string][] = [
    ["null email", [null, "password123", "A", "B"], "email is not a valid address"],
    ["empty email", ["", "password123", "A", "B"], "email is not a valid address"],
    ["no at sign", ["user.example.com", "password123", "A", "B"], "email is not a valid address"],
    ["no domain dot", ["user@example", "password123", "A", "B"], "email is not a valid address"],
    ["space inside", ["us er@example.com", "password123", "A", "B"], "email is not a valid address"],
    ["email of 255 characters", [`${"a".repeat(243)}@example.com`, "password123", "A", "B"], "email is not a valid address"],
    ["null password", ["x@example.com", null, "A", "B"], "password is too short"],
    ["7-character password", ["x@example.com", "1234567", "A", "B"], "password is too short"],
    ["73-byte password", ["x@example.com", "a".repeat(73), "A", "B"], "password is too long"],
    ["25 three-byte characters (75 bytes)", ["x@example.com", "€".repeat(25), "A", "B"], "password is too long"],
    ["blank first name", ["x@example.com", "password123", "   ", "B"], "first_name and last_name are required"],
    ["null last name", ["x@example.com", "password123", "A", null], "first_name and last_name are required"],
    ["101-character name", ["x@example.com", "password123", "A".repeat(101), "B"], "first_name and last_name are required"],
  ];
  for (const [name, args, message] of invalid) {
    test(`rejects ${name} with a client error and writes nothing`, async () => {
      const before = await countUsers();
      const result = await call(...(args as [unknown, unknown, unknown, unknown]));
      expect({ status: result.status, code: result.error?.code, message: result.error?.message }).toEqual({ status: 400, code: "22023", message });
      expect(await countUsers()).toBe(before);
    });
  }

  test("accepts a password of exactly 72 bytes and an email of exactly 254 characters", async () => {
    const email = `${"a".repeat(242 - 36)}${uniqueEmail("").slice(1)}`;
    expect(email.length).toBe(254);
    const result = await call(email, "b".repeat(72), "A", "B");
    expect(result.status).toBe(200);
  });

  // Against an external stack the cost is 12: 50 hashes take seconds on two cores.
  test("50 concurrent sign-ups with one email create exactly one user", async () => {
    const email = uniqueEmail("race");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => call(i % 2 ? email : email.toUpperCase(), "password123", "A", "B")),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409 && r.error?.code === "PT409")).toHaveLength(49);
    const [row] = await sql`select count(*) as n from auth.users where email = ${email}`;
    expect(Number(row!.n)).toBe(1);
  }, 120_000);

  test("the bcrypt cost defaults to 12 when the database sets none", async () => {
    const email = uniqueEmail("cost");
    await sql.begin(async (tx) => {
      await tx`select set_config('autoaudit.bcrypt_cost', '', true)`;
      await tx`select api.sign_up(${email}, 'password123', 'A', 'B')`;
    });
    const [row] = await sql`select password_hash from auth.users where email = ${email}`;
    expect(row!.password_hash).toMatch(/^\$2a\$12\$/);
  });
});
