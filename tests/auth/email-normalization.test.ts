// auth.normalize_email and its use by api.sign_up / api.sign_in: a lookalike of an address is
// either refused or the same account, never a second account that looks like the first.
import { afterAll, describe, expect, test } from "bun:test";
import { adminSql, call, callAs, signIn, signUp, uniqueEmail } from "./support";
import { testStack } from "../support/stack";

const admin = adminSql();
afterAll(() => admin.end());

const PASSWORD = "correct horse battery";
const normalize = async (raw: string) => {
  try {
    return { value: (await admin`select auth.normalize_email(${raw}) as n`)[0]!.n as string };
  } catch (error) {
    const e = error as { code: string; message: string; hint: string };
    return { error: { code: e.code, message: e.message, hint: e.hint } };
  }
};
const signUpAs = (email: string) => call("sign_up", { email, password: PASSWORD, first_name: "Ada", last_name: "Lovelace" });

/** The lookalikes of `email`: each must be refused or be `email` itself. */
function lookalikes(local: string, domain = "example.com") {
  return {
    refused: {
      "trailing NBSP": `${local}@${domain}\u00a0`,
      "zero-width space": `${local}\u200b@${domain}`,
      "zero-width joiner": `${local}\u200d@${domain}`,
      "BOM": `\ufeff${local}@${domain}`,
      "soft hyphen": `${local}\u00ad@${domain}`,
      "word joiner": `${local}@exam\u2060ple.com`,
      "right-to-left override": `${local}\u202e@${domain}`,
      "en quad inside": `${local}\u2000@${domain}`,
      "narrow NBSP": `${local}@${domain}\u202f`,
      "ideographic space": `\u3000${local}@${domain}`,
      "fullwidth first letter": `\uff41${local.slice(1)}@${domain}`,
      "fullwidth at sign": `${local}\uff20${domain}`,
      "ligature": `${local}@\ufb01${domain.slice(2)}`,
      "control character": `${local}\u0007@${domain}`,
      "DEL": `${local}\u007f@${domain}`,
      "tag character": `${local}\u{e0041}@${domain}`,
    },
  };
}

describe("auth.normalize_email", () => {
  test("trims ASCII whitespace, composes (NFC) and lower-cases, non-ASCII letters too", async () => {
    expect(await normalize("  Ada@Example.COM\t\n")).toEqual({ value: "ada@example.com" });
    // 'É' decomposed (E + U+0301) and upper case: the NFC lower-case 'é' (U+00E9)
    expect(await normalize("E\u0301va@Example.com")).toEqual({ value: "\u00e9va@example.com" });
    expect(await normalize("\u00c9VA@example.com")).toEqual({ value: "\u00e9va@example.com" });
    expect(await normalize("\u212aelvin@example.com")).toEqual({ value: "kelvin@example.com" }); // Kelvin sign → K
  });

  test("refuses control, invisible and non-ASCII space characters and compatibility forms, with a hint", async () => {
    for (const [name, raw] of Object.entries(lookalikes("ada").refused)) {
      const result = await normalize(raw);
      expect({ name, ...result }).toMatchObject({ name, error: { code: "22023", message: "email is not a valid address" } });
      expect(result.error!.hint).toContain("fullwidth");
    }
  });

  test("keeps the shape check: something@something.tld of at most 254 characters", async () => {
    for (const raw of ["", "ada", "ada@example", "a da@example.com", "@example.com", "ada@@example.com", `${"a".repeat(243)}@example.com`]) {
      expect((await normalize(raw)).error?.code).toBe("22023");
    }
    expect((await normalize(`${"a".repeat(242)}@example.com`)).value).toHaveLength(254);
  });

  test("is callable by its owner only, not by anon or authenticated", async () => {
    const [owner] = await admin`select auth.normalize_email('A@B.co') as n, pg_get_userbyid(proowner) as owner, proacl::text as acl
                                  from pg_proc where oid = 'auth.normalize_email(text)'::regprocedure`;
    expect(owner).toEqual({ n: "a@b.co", owner: "auth_admin", acl: "{auth_admin=X/auth_admin}" });
    for (const role of ["anon", "authenticated"] as const) {
      const result = await callAs(admin, role, null, (tx) => tx`select auth.normalize_email('a@b.co')`);
      expect(result.error?.code).toBe("42501");
    }
  });
});

describe("sign_up and sign_in", () => {
  test("no lookalike of an existing address creates a second account", async () => {
    const local = `ada-${crypto.randomUUID().slice(0, 8)}`;
    const email = `${local}@example.com`;
    await signUp(email, PASSWORD);
    for (const [name, raw] of Object.entries(lookalikes(local).refused)) {
      const result = await signUpAs(raw);
      expect({ name, status: result.status, body: result.body }).toMatchObject({ name, status: 400, body: { code: "22023", message: "email is not a valid address" } });
    }
    const [row] = await admin`select count(*) as n from auth.users where email like ${`%${local.slice(4)}%`}`;
    expect(Number(row!.n)).toBe(1);
  });

  test("an NFD or upper-case non-ASCII form is the same account as the NFC form", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const nfc = `\u00e9va-${tag}@example.com`;
    const created = await signUpAs(`E\u0301VA-${tag}@example.com`);
    expect(created.status).toBe(200);
    expect(created.body.email).toBe(nfc);
    for (const form of [nfc, `e\u0301va-${tag}@example.com`, `\u00c9va-${tag}@EXAMPLE.com`]) {
      const again = await signUpAs(form);
      expect({ status: again.status, code: again.body.code }).toEqual({ status: 409, code: "PT409" });
      const signedIn = await signIn(form, PASSWORD, { client: "203.0.113.50" });
      expect(signedIn.status).toBe(200);
      expect(signedIn.body.user.email).toBe(nfc);
    }
  });

  test("sign_in with a refused lookalike answers exactly like a wrong password", async () => {
    const email = uniqueEmail("signin-lookalike");
    await signUp(email, PASSWORD);
    const lookalike = await signIn(`${email}\u00a0`, PASSWORD, { client: "203.0.113.51" });
    const wrong = await signIn(email, "not the password", { client: "203.0.113.51" });
    expect(lookalike).toEqual(wrong);
    expect(lookalike.status).toBe(401);
  });

  test("over HTTP a lookalike sign-up is PostgREST's 400 with the rule in the hint", async () => {
    const email = uniqueEmail("http-lookalike");
    const res = await fetch(`${testStack().apiUrl}/rpc/sign_up`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: email.replace("@", "\u200b@"), password: PASSWORD, first_name: "A", last_name: "B" }),
    });
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body).toMatchObject({ code: "22023", message: "email is not a valid address" });
    expect(body.hint).toContain("invisible");
  });
});
