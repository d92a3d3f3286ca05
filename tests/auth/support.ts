import postgres from "postgres";
import { randomUUID } from "node:crypto";
import { testStack } from "../support/stack";
import { connectPostgres } from "../../api/src/db/connection";

export type Sql = postgres.Sql;

/** A superuser pool on the test database; callers end it in afterAll. */
export function adminSql(): Sql {
  return postgres(testStack().databaseUrl, { max: 8, onnotice: () => {} });
}

/** The outcome of one call made the way PostgREST makes it: one transaction, role switched, claims set. */
export interface CallResult<T> {
  value?: T;
  error?: { code: string; message: string; hint?: string };
  /** What the function put in response.status, if anything. */
  responseStatus?: string | null;
}

/**
 * Calls `query` as `role` with `request.jwt.claims`, as PostgREST would: inside one transaction
 * that is committed when the function returns and rolled back when it raises.
 */
export async function callAs<T>(
  sql: Sql,
  role: "anon" | "authenticated",
  claims: Record<string, unknown> | null,
  query: (tx: postgres.TransactionSql) => Promise<T>,
): Promise<CallResult<T>> {
  try {
    return await sql.begin(async (tx) => {
      await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${claims ? JSON.stringify(claims) : ""}, true)`;
      const value = await query(tx);
      const [status] = await tx`select nullif(current_setting('response.status', true), '') as s`;
      return { value, responseStatus: status?.s ?? null };
    });
  } catch (error) {
    if (error instanceof postgres.PostgresError) {
      return { error: { code: error.code, message: error.message, hint: error.hint } };
    }
    throw error;
  }
}

export function uniqueEmail(tag = "user"): string {
  return `${tag}-${randomUUID()}@example.com`;
}

export interface SignedIn {
  user: { id: string; email: string; first_name: string; last_name: string };
  session_id: string;
  refresh_token: string;
  refresh_expires_at: string;
}

export async function signUp(sql: Sql, email: string, password = "correct horse battery") {
  const result = await callAs(sql, "anon", null, (tx) => tx`select api.sign_up(${email}, ${password}, 'Ada', 'Lovelace') as u`);
  if (result.error) throw new Error(`sign_up failed: ${result.error.message}`);
  return result.value![0]!.u as SignedIn["user"];
}

/**
 * sign_in answers a failed attempt with response.status (a raise would roll back the failure
 * count): such an answer is returned as `error`, the way PostgREST turns it into an error response.
 */
export async function signIn(sql: Sql, email: string | null, password: string | null = "correct horse battery"): Promise<CallResult<SignedIn>> {
  const result = await callAs(sql, "anon", null, (tx) => tx`select api.sign_in(${email}, ${password}) as s`);
  if (result.error) return { error: result.error };
  const answer = result.value![0]!.s;
  if (result.responseStatus) return { error: answer as { code: string; message: string; hint?: string }, responseStatus: result.responseStatus };
  return { value: answer as SignedIn };
}

export async function issueToken(sql: Sql, token: string) {
  const result = await callAs(sql, "anon", null, (tx) => tx`select api.issue_token(${token}) as s`);
  return { ...result, value: result.value?.[0]?.s as SignedIn & { code?: string; details?: string } | undefined };
}

/** An answer as PostgREST would send it: status, the headers the function chose, the body. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: any;
}

/**
 * api.sign_in called the way PostgREST calls it, as the authenticator: one transaction, role
 * anon, request.headers with X-Forwarded-For `client` (none when undefined), committed when it
 * returns. `settings` are set for this transaction only. A RAISE SQLSTATE 'PGRST' becomes the
 * status, headers and body it asks for; response.status and response.headers are applied.
 */
export async function sqlSignIn(
  app: Sql,
  email: string | null,
  password: string | null,
  options: { client?: string; settings?: Record<string, string> } = {},
): Promise<Answer> {
  try {
    return await app.begin(async (tx) => {
      await tx`set local role anon`;
      const headers = options.client === undefined ? "{}" : JSON.stringify({ "x-forwarded-for": options.client });
      await tx`select set_config('request.headers', ${headers}, true)`;
      for (const [name, value] of Object.entries(options.settings ?? {})) await tx`select set_config(${name}, ${value}, true)`;
      const [row] = await tx`
        select api.sign_in(${email}, ${password}) as body,
               nullif(current_setting('response.status', true), '') as status,
               nullif(current_setting('response.headers', true), '') as headers`;
      const extra = row!.headers ? (JSON.parse(row!.headers) as Record<string, string>[]) : [];
      return { status: row!.status ? Number(row!.status) : 200, headers: Object.assign({}, ...extra), body: row!.body };
    });
  } catch (error) {
    if (error instanceof postgres.PostgresError && error.code === "PGRST") {
      const detail = JSON.parse(error.detail!) as { status: number; headers: Record<string, string> };
      return { status: detail.status, headers: detail.headers, body: JSON.parse(error.message) };
    }
    throw error;
  }
}

/** A pool on the test database as the authenticator (what PostgREST and the engine use). */
export function authenticatorSql(max = 16): Sql {
  return connectPostgres(testStack().authenticatorUrl, { max, onnotice: () => {} });
}
