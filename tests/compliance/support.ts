// The compliance functions called as clients call them: through the engine (tests/support/engine.ts),
// as users signed in with api.sign_in and holding the access token the gateway mints for that
// session. Statuses, headers and bodies are the engine's; this file maps no SQLSTATE to a status.
import postgres from "postgres";
import { randomUUID } from "node:crypto";
import { accessTokenFor, engineRpc } from "../support/engine";
import { testStack } from "../support/stack";

export type Sql = postgres.Sql;

export function adminSql(max = 8): Sql {
  return postgres(testStack().databaseUrl, { max, onnotice: () => {} });
}

/** PostgREST's error body, as the engine sends it. */
export interface RpcError {
  code: string;
  message: string;
  details: string | null;
  hint: string | null;
}

/** The engine's answer to POST /rpc/<fn>: the status with the body as `value` (2xx) or `error`. */
export interface RpcResult<T = any> {
  status: number;
  value?: T;
  error?: RpcError;
}

export interface TestUser {
  id: string;
  email: string;
  /** An access token of a session of the user's, as the gateway mints it. */
  token: string;
}

/** The whole answer (headers too) of api.<fn> called through the engine as `user` (null: anonymous). */
export async function rpcAnswer(user: TestUser | null, fn: string, args: Record<string, unknown> = {}, options: { settings?: Record<string, string> } = {}) {
  const answer = await engineRpc(fn, args, { token: user?.token, settings: options.settings });
  // The engine answers a call no function matches with 404 too: a test's typo must not pass for
  // a function's own 404.
  if (answer.body?.code === "PGRST202") throw new Error(`no api.${fn} takes (${Object.keys(args).join(", ")}): ${answer.text}`);
  return answer;
}

/** api.<fn> through the engine as `user` (null: anonymous), with `args` as the JSON body. */
export async function rpc<T = any>(user: TestUser | null, fn: string, args: Record<string, unknown> = {}, options: { settings?: Record<string, string> } = {}): Promise<RpcResult<T>> {
  const answer = await rpcAnswer(user, fn, args, options);
  return answer.status >= 200 && answer.status < 300
    ? { status: answer.status, value: answer.body as T }
    : { status: answer.status, error: answer.body as RpcError };
}

/** Like rpc, but fails the test with the engine's answer when the call fails. */
export async function rpcOk<T = any>(user: TestUser | null, fn: string, args: Record<string, unknown> = {}): Promise<T> {
  const result = await rpc<T>(user, fn, args);
  if (result.status !== 200) throw new Error(`api.${fn} failed: ${result.status} ${JSON.stringify(result.error)}`);
  return result.value as T;
}

/** Signs in through the engine (api.sign_in) and takes the access token the gateway would mint for that session. */
export async function signInUser(email: string, password: string): Promise<TestUser> {
  const session = await rpcOk<{ user: { id: string; email: string; email_verified_at: string | null }; session_id: string }>(null, "sign_in", { email, password });
  return { id: session.user.id, email: session.user.email, token: await accessTokenFor(session.user, session.session_id) };
}

export const PASSWORD = "correct horse battery";

export async function newUser(tag = "user"): Promise<TestUser> {
  const email = `${tag}-${randomUUID()}@example.com`;
  await rpcOk(null, "sign_up", { email, password: PASSWORD, first_name: "Test", last_name: tag });
  return signInUser(email, PASSWORD);
}

/** An admin invites `email` to the tenant (api.add_member); the invitation's answer. */
export async function invite(admin: TestUser, tenantId: string, email: string, role: string) {
  return rpcOk<{ tenant_id: string; email: string; role: string; status: string; expires_at: string }>(admin, "add_member", {
    tenant_id: tenantId,
    email,
    role,
  });
}

/**
 * Makes `user` a member of the tenant the only way there is: the admin invites their address
 * (as typed: `email`, default the user's own) and the user accepts.
 */
export async function addMember(admin: TestUser, tenantId: string, user: TestUser, role: string, email = user.email) {
  await invite(admin, tenantId, email, role);
  return rpcOk<{ tenant_id: string; role: string; previous_role: string | null }>(user, "accept_invitation", { tenant_id: tenantId });
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
export async function tenantWithRules(tag = "admin"): Promise<TenantFixture> {
  const admin = await newUser(tag);
  const tenant = await rpcOk<{ id: string }>(admin, "create_tenant", { name: `Tenant of ${tag}` });
  await rpcOk(admin, "upsert_rules", { tenant_id: tenant.id, framework: "cis-m365", rules: DEMO_RULES });
  return { admin, tenantId: tenant.id };
}

export type Result = "pass" | "fail" | "not_tested";

/** Findings for DEMO_RULES, one result per rule in order. */
export function findings(results: Result[], extra: Record<string, unknown> = {}) {
  return results.map((result, i) => ({ rule: DEMO_RULES[i]!.key, result, evidence: { checked: DEMO_RULES[i]!.key }, ...extra }));
}

export async function submit(user: TestUser, tenantId: string, results: Result[]) {
  return rpcOk<{ id: string; score: number | null; cursor: number }>(user, "submit_scan", {
    tenant_id: tenantId,
    framework: "cis-m365",
    findings: findings(results),
  });
}
