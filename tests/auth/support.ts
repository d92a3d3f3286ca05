import postgres from "postgres";
import { randomUUID } from "node:crypto";
import { testStack } from "../support/stack";

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
