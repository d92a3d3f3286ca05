import postgres from "postgres";
import { randomUUID } from "node:crypto";
import { testStack } from "../support/stack";

export type Sql = postgres.Sql;

export function adminSql(max = 8): Sql {
  return postgres(testStack().databaseUrl, { max, onnotice: () => {} });
}

export interface RpcError {
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

export interface RpcResult<T = any> {
  value?: T;
  error?: RpcError;
  /** The HTTP status PostgREST would answer with. */
  status: number;
}

/**
 * PostgREST's SQLSTATE → HTTP mapping for the codes these functions can raise (see its docs,
 * "Errors"), so tests can assert "a client error, never a 500" at the SQL level.
 */
export function httpStatusOf(code: string, role: "anon" | "authenticated"): number {
  const custom = /^PT(\d{3})$/.exec(code);
  if (custom) return Number(custom[1]);
  if (code === "42501") return role === "anon" ? 401 : 403;
  if (code === "23503" || code === "23505") return 409;
  if (code === "42883" || code === "42P01") return 404;
  if (code === "P0001") return 400;
  if (/^(08|53)/.test(code)) return 503;
  if (/^(09|0L|0P|25|2D|38|39|3B|40|54|55|57|58|F0|HV|P0|XX)/.test(code)) return code.startsWith("0L") || code.startsWith("0P") ? 403 : 500;
  return 400;
}

/** `RAISE SQLSTATE 'PGRST'`: the status is in the JSON of its DETAIL (500 when it does not parse, as PostgREST's PGRST121). */
export function pgrstStatusOf(detail: string | undefined): number {
  try {
    const status = JSON.parse(detail ?? "").status;
    return typeof status === "number" ? status : 500;
  } catch {
    return 500;
  }
}

const signatures = new Map<string, Map<string, string>>();

/** Argument names and types of api.<fn>, as PostgREST's schema cache would know them. */
async function signatureOf(sql: Sql, fn: string): Promise<Map<string, string>> {
  let sig = signatures.get(fn);
  if (!sig) {
    const rows = await sql`
      select a.name, format_type(a.type, null) as type
        from pg_proc p, unnest(p.proargnames, p.proargtypes::oid[]) as a (name, type)
       where p.pronamespace = 'api'::regnamespace and p.proname = ${fn}`;
    sig = new Map(rows.map((r) => [r.name as string, r.type as string]));
    signatures.set(fn, sig);
  }
  return sig;
}

/**
 * Calls api.<fn> the way PostgREST does: one transaction, `set local role`, the JWT claims in
 * request.jwt.claims, named arguments taken from a JSON body through json_to_record (so a
 * wrong type fails in the database exactly as it would behind PostgREST).
 */
export async function rpc<T = any>(
  sql: Sql,
  userId: string | null,
  fn: string,
  args: Record<string, unknown> = {},
): Promise<RpcResult<T>> {
  const role = userId ? "authenticated" : "anon";
  const sig = await signatureOf(sql, fn);
  const names = Object.keys(args);
  for (const name of names) if (!sig.has(name)) throw new Error(`api.${fn} has no argument ${name}`);
  const quote = (id: string) => `"${id.replaceAll('"', '""')}"`;
  const call = names.length
    ? `select api.${quote(fn)}(${names.map((n) => `${quote(n)} => x.${quote(n)}`).join(", ")}) as v
         from json_to_record($1::json) as x(${names.map((n) => `${quote(n)} ${sig.get(n)}`).join(", ")})`
    : `select api.${quote(fn)}() as v`;
  try {
    const value = await sql.begin(async (tx) => {
      await tx`select set_config('role', ${role}, true),
                      set_config('request.jwt.claims', ${userId ? JSON.stringify({ sub: userId, role }) : ""}, true)`;
      const rows = await tx.unsafe(call, names.length ? [args as postgres.JSONValue] : []);
      return rows[0]?.v as T;
    });
    return { value: value as T, status: 200 };
  } catch (error) {
    if (error instanceof postgres.PostgresError) {
      return {
        error: { code: error.code, message: error.message, detail: error.detail, hint: error.hint },
        status: error.code === "PGRST" ? pgrstStatusOf(error.detail) : httpStatusOf(error.code, role),
      };
    }
    throw error;
  }
}

/** Like rpc, but fails the test with the database's message when the call fails. */
export async function rpcOk<T = any>(sql: Sql, userId: string | null, fn: string, args: Record<string, unknown> = {}): Promise<T> {
  const result = await rpc<T>(sql, userId, fn, args);
  if (result.error) throw new Error(`api.${fn} failed: ${result.error.code} ${result.error.message}`);
  return result.value as T;
}

export interface TestUser {
  id: string;
  email: string;
}

export async function newUser(sql: Sql, tag = "user"): Promise<TestUser> {
  const email = `${tag}-${randomUUID()}@example.com`;
  const user = await rpcOk<{ id: string; email: string }>(sql, null, "sign_up", {
    email,
    password: "correct horse battery",
    first_name: "Test",
    last_name: tag,
  });
  return { id: user.id, email: user.email };
}

/** An admin invites `email` to the tenant (api.add_member); the invitation's answer. */
export async function invite(sql: Sql, adminId: string, tenantId: string, email: string, role: string) {
  return rpcOk<{ tenant_id: string; email: string; role: string; status: string; expires_at: string }>(sql, adminId, "add_member", {
    tenant_id: tenantId,
    email,
    role,
  });
}

/**
 * Makes `user` a member of the tenant the only way there is: the admin invites their address
 * (as typed: `email`, default the user's own) and the user accepts.
 */
export async function addMember(sql: Sql, adminId: string, tenantId: string, user: TestUser, role: string, email = user.email) {
  await invite(sql, adminId, tenantId, email, role);
  return rpcOk<{ tenant_id: string; role: string; previous_role: string | null }>(sql, user.id, "accept_invitation", { tenant_id: tenantId });
}

export const DEMO_RULES = [
  { key: "1.1.1", title: "Ensure Administrative accounts are cloud-only", severity: "high" },
  { key: "1.1.3", title: "Ensure that between two and four global admins are designated", severity: "medium" },
  { key: "1.3.1", title: "Ensure the 'Password expiration policy' is set to never expire", severity: "low" },
  { key: "2.1.1", title: "Ensure Safe Links for Office Applications is Enabled", severity: "medium" },
  { key: "3.1.1", title: "Ensure Microsoft 365 audit log search is Enabled", severity: "high" },
  { key: "5.2.2.1", title: "Ensure multifactor authentication is enabled for all users in administrative roles", severity: "critical" },
];

export interface TenantFixture {
  admin: TestUser;
  tenantId: string;
}

/** A user who admins a fresh tenant with DEMO_RULES loaded for framework cis-m365. */
export async function tenantWithRules(sql: Sql, tag = "admin"): Promise<TenantFixture> {
  const admin = await newUser(sql, tag);
  const tenant = await rpcOk<{ id: string }>(sql, admin.id, "create_tenant", { name: `Tenant of ${tag}` });
  await rpcOk(sql, admin.id, "upsert_rules", { tenant_id: tenant.id, framework: "cis-m365", rules: DEMO_RULES });
  return { admin, tenantId: tenant.id };
}

export type Result = "pass" | "fail" | "not_tested";

/** Findings for DEMO_RULES, one result per rule in order. */
export function findings(results: Result[], extra: Record<string, unknown> = {}) {
  return results.map((result, i) => ({ rule: DEMO_RULES[i]!.key, result, evidence: { checked: DEMO_RULES[i]!.key }, ...extra }));
}

export async function submit(sql: Sql, userId: string, tenantId: string, results: Result[]) {
  return rpcOk<{ id: string; score: number | null; cursor: number }>(sql, userId, "submit_scan", {
    tenant_id: tenantId,
    framework: "cis-m365",
    findings: findings(results),
  });
}
