// Hostile and malformed requests against the product's functions: every one gets a
// PostgREST-shaped 4xx (never a 500, never a stack trace), and nothing is written.
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Engine } from "../../api/src/engine/index";
import { adminSql, productEngine, signToken } from "./rpc-support";

const LIMIT = 16 * 1024;
const admin = adminSql();
let engine: Engine;

beforeAll(async () => {
  engine = await productEngine({ maxBodyBytes: LIMIT });
});
afterAll(async () => {
  await engine.close();
  await admin.end();
});

/** Row counts and a digest of every auth table: any write shows up here. */
async function checksum(): Promise<string> {
  const [row] = await admin`
    select (select count(*) from auth.users) as users, (select count(*) from auth.sessions) as sessions,
           (select count(*) from auth.refresh_tokens) as tokens,
           md5(coalesce((select string_agg(u::text, '|' order by u.id) from auth.users u), '') ||
               coalesce((select string_agg(s::text, '|' order by s.id) from auth.sessions s), '') ||
               coalesce((select string_agg(t::text, '|' order by t.id) from auth.refresh_tokens t), '')) as digest`;
  return JSON.stringify(row);
}

interface Case {
  label: string;
  request: () => Request;
  /** Exact status when the case pins one; otherwise any 4xx. */
  status?: number;
  code?: string;
}

const FUNCTIONS = ["sign_in", "sign_up", "issue_token", "validate_token", "revoke_token"];

const raw = (path: string, body: BodyInit | null, headers: Record<string, string> = { "Content-Type": "application/json" }, method = "POST") =>
  () => new Request(`http://engine${path}`, { method, headers, body });

const SQLISH = [
  "'; drop table auth.users; --", "\" or 1=1 --", "x') or ('1'='1", "1; select pg_sleep(10)", "$$; delete from auth.sessions; $$",
  "admin'--", "' union select password_hash from auth.users --", "\\'; truncate auth.refresh_tokens; --", "%' or email like '%",
  "*/ select 1 /*", "'); insert into auth.users default values; --", "\u0000", "null", "NULL::text", "current_user",
  "{\"role\":\"auth_admin\"}", "' || (select string_agg(email, ',') from auth.users) || '", "`rm -rf /`", "\\x00\\x01", "𝕏𝕏𝕏'",
];

function buildCases(): Case[] {
  const cases: Case[] = [];
  const malformed = ["{", "{\"email\":", "{\"email\": \"a\",}", "[1,2", "nul", "'x'", "{email: \"a\"}", "{\"a\":1}}", "{\"a\":\"\\x\"}", "   ", "{\"a\":1}{\"b\":2}", "\u0000"];
  for (const fn of FUNCTIONS) {
    for (const body of malformed) cases.push({ label: `malformed json to ${fn}: ${JSON.stringify(body)}`, request: raw(`/rpc/${fn}`, body), status: 400, code: "PGRST102" });
  }
  const nonObjects = ["5", "\"str\"", "true", "null", "[1,2]", "[[]]", "[{\"email\":\"a\",\"password\":\"b\"}, 3]", "[{\"email\":\"a\"},{\"password\":\"b\"}]"];
  for (const fn of FUNCTIONS) {
    for (const body of nonObjects) cases.push({ label: `non-object body to ${fn}: ${body}`, request: raw(`/rpc/${fn}`, body) });
  }
  const unknownParams = [{ foo: 1 }, { email: "a@b.co", password: "12345678", extra: 1 }, { "e-mail": "x" }, { "": 1 }, { "email; drop table auth.users": "x" }, { refresh_token: "x", token: "y" }];
  for (const fn of FUNCTIONS) {
    for (const body of unknownParams) cases.push({ label: `unknown parameters to ${fn}: ${JSON.stringify(body)}`, request: raw(`/rpc/${fn}`, JSON.stringify(body)), status: 404, code: "PGRST202" });
  }
  const wrongTypes: Record<string, unknown[]> = {
    sign_in: [{ email: { a: 1 }, password: [1] }, { email: 1, password: true }, { email: null, password: null }, { email: ["a"], password: { p: 1 } }],
    sign_up: [{ email: 1, password: 2, first_name: 3, last_name: 4 }, { email: null, password: null, first_name: null, last_name: null }, { email: { x: 1 }, password: "12345678", first_name: [], last_name: {} }],
    issue_token: [{ refresh_token: [1, 2] }, { refresh_token: 12 }, { refresh_token: null }, { refresh_token: { t: "x" } }],
  };
  for (const [fn, bodies] of Object.entries(wrongTypes)) {
    for (const body of bodies) cases.push({ label: `wrong types to ${fn}: ${JSON.stringify(body)}`, request: raw(`/rpc/${fn}`, JSON.stringify(body)) });
  }
  for (const value of SQLISH) {
    // NUL cannot become text: PostgreSQL's 22P05 (400) comes before the function's own 401.
    const nul = value.includes("\u0000");
    const fails = nul ? {} : { status: 401, code: "PT401" };
    cases.push({ label: `sql-looking sign_in email ${JSON.stringify(value)}`, request: raw("/rpc/sign_in", JSON.stringify({ email: value, password: value })), ...fails });
    cases.push({ label: `sql-looking sign_up email ${JSON.stringify(value)}`, request: raw("/rpc/sign_up", JSON.stringify({ email: value, password: "long enough pw", first_name: value, last_name: value })), status: 400 });
    cases.push({ label: `sql-looking refresh token ${JSON.stringify(value)}`, request: raw("/rpc/issue_token", JSON.stringify({ refresh_token: value })), ...fails });
    // A GET runs read-only, where sign_in cannot record a failure: it checks no password (405).
    cases.push({ label: `sql-looking GET argument ${JSON.stringify(value)}`, request: () => new Request(`http://engine/rpc/sign_in?email=${encodeURIComponent(value)}&password=x`), ...(nul ? {} : { status: 405, code: "25006" }) });
  }
  const big = "x".repeat(LIMIT + 1);
  for (const fn of FUNCTIONS) {
    cases.push({ label: `oversized body to ${fn}`, request: raw(`/rpc/${fn}`, JSON.stringify({ email: big, password: big })), status: 413 });
    // No Content-Length: the engine counts while streaming.
    cases.push({
      label: `oversized streamed body to ${fn}`,
      request: () => new Request(`http://engine/rpc/${fn}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: new ReadableStream({ start(c) { for (let i = 0; i < 40; i++) c.enqueue(new TextEncoder().encode("x".repeat(1024))); c.close(); } }),
      }),
      status: 413,
    });
  }
  const invalidUtf8 = [new Uint8Array([0xff, 0xfe]), new Uint8Array([0x7b, 0x22, 0x65, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), new Uint8Array([0xed, 0xa0, 0x80]), new Uint8Array([0xc0, 0xaf])];
  for (const fn of FUNCTIONS) {
    for (const bytes of invalidUtf8) cases.push({ label: `invalid utf-8 body to ${fn}: ${[...bytes].join(",")}`, request: raw(`/rpc/${fn}`, bytes), status: 400, code: "PGRST102" });
  }
  const queries = [
    "refresh_token=%FF", "refresh_token=%C3%28", "select=((", "select=id)", "order=;drop", "order=x.sideways", "limit=abc", "offset=-1",
    "and=(a.eq.1", "or=(a.eq.1,b.zz.2)", "x=not.", "refresh_token=x&id=in.(1,2", "refresh_token=x&select=a::text;drop", "refresh_token=x&id=unknownop.5",
    "refresh_token=x&a.b=eq.1", "refresh_token=x&order=a.b.c.d", "refresh_token=x&select=*,users(*)", "refresh_token=x&select=count()",
  ];
  for (const q of queries) cases.push({ label: `bad query string ${q}`, request: () => new Request(`http://engine/rpc/validate_token?${q}`) });
  for (const method of ["PUT", "PATCH", "DELETE"]) {
    for (const fn of FUNCTIONS) cases.push({ label: `${method} /rpc/${fn}`, request: raw(`/rpc/${fn}`, method === "DELETE" ? null : "{}", {}, method), status: 405, code: "PGRST101" });
  }
  const paths = ["/rpc/", "/rpc/a/b", "/rpc/%FF", "/rpc/sign_in%00", "/rpc/..%2Fauth.users", "/a/b/c", "/rpc/pg_sleep", "/rpc/current_user"];
  for (const p of paths) cases.push({ label: `path ${p}`, request: raw(p, "{}") });
  const headers: Array<[string, Record<string, string>, number]> = [
    ["unacceptable Accept", { Accept: "text/html" }, 406],
    ["unexposed Content-Profile", { "Content-Profile": "auth" }, 406],
    ["unexposed Content-Profile pg_catalog", { "Content-Profile": "pg_catalog" }, 406],
    ["garbage token", { Authorization: "Bearer garbage" }, 401],
    ["empty token", { Authorization: "Bearer " }, 401],
    ["strict unknown preference", { Prefer: "handling=strict, nonsense=1" }, 400],
    ["xml content type", { "Content-Type": "application/xml" }, 400],
  ];
  // Arguments that match each function, so the header is what the engine refuses.
  const validArgs: Record<string, unknown> = { sign_in: { email: "a@b.co", password: "x" }, issue_token: { refresh_token: "x" } };
  for (const [label, extra, status] of headers) {
    for (const [fn, args] of Object.entries(validArgs)) {
      cases.push({ label: `${label} on ${fn}`, request: raw(`/rpc/${fn}`, JSON.stringify(args), { "Content-Type": "application/json", ...extra }), status });
    }
  }
  return cases;
}

test("at least 200 malformed or hostile requests each get a PostgREST client error and change nothing", async () => {
  const cases = buildCases();
  expect(cases.length).toBeGreaterThanOrEqual(200);
  // A token for a role that may not run revoke_all_tokens' writes without a valid sub.
  const stranger = await signToken({ role: "authenticated", sub: "not-a-uuid" });
  cases.push({ label: "revoke_all_tokens with a bad sub", request: raw("/rpc/revoke_all_tokens", "{}", { "Content-Type": "application/json", Authorization: `Bearer ${stranger}` }), status: 401, code: "PT401" });

  const before = await checksum();
  const problems: string[] = [];
  for (const c of cases) {
    const res = await engine.fetch(c.request());
    const text = await res.text();
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const keys = body ? Object.keys(body).join(",") : "";
    if (res.status < 400 || res.status > 499) problems.push(`${c.label}: status ${res.status} ${text}`);
    else if (c.status !== undefined && res.status !== c.status) problems.push(`${c.label}: expected ${c.status}, got ${res.status} ${text}`);
    else if (keys !== "code,details,hint,message") problems.push(`${c.label}: body is not PostgREST's error shape: ${text}`);
    else if (c.code !== undefined && body!.code !== c.code) problems.push(`${c.label}: expected code ${c.code}, got ${text}`);
    else if (res.headers.get("content-length") !== String(Buffer.byteLength(text))) problems.push(`${c.label}: wrong Content-Length`);
    else if (/\bat .+\.ts:\d+/.test(text)) problems.push(`${c.label}: leaks a stack trace`);
  }
  expect(problems).toEqual([]);
  expect(await checksum()).toBe(before);
}, 60_000);
