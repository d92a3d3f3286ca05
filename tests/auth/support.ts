import postgres from "postgres";
import { randomUUID } from "node:crypto";
import { testStack } from "../support/stack";
import { connectPostgres } from "../../api/src/db/connection";
import { mintToken } from "../api/helpers";
import { accessTokenFor, engineRpc } from "../support/engine";

export type Sql = postgres.Sql;

/** A superuser pool on the test database; callers end it in afterAll. */
export function adminSql(): Sql {
  return postgres(testStack().databaseUrl, { max: 8, onnotice: () => {} });
}

/** The outcome of SQL run as a role, for privilege checks below the API (tables and helpers it does not expose). */
export interface CallResult<T> {
  value?: T;
  error?: { code: string; message: string; hint?: string };
}

/** Runs `query` as `role` with `request.jwt.claims` in one transaction (committed when it returns). */
export async function callAs<T>(
  sql: Sql,
  role: "anon" | "authenticated",
  claims: Record<string, unknown> | null,
  query: (tx: postgres.TransactionSql) => Promise<T>,
): Promise<CallResult<T>> {
  try {
    return await sql.begin(async (tx) => {
      await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${claims ? JSON.stringify(claims) : ""}, true)`;
      return { value: await query(tx) };
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
  user: { id: string; email: string; first_name: string; last_name: string; email_verified_at?: string | null };
  session_id: string;
  refresh_token: string;
  refresh_expires_at: string;
}

/** api.sign_up through the engine; the new user's profile. */
export async function signUp(email: string, password = "correct horse battery"): Promise<SignedIn["user"]> {
  const answer = await call("sign_up", { email, password, first_name: "Ada", last_name: "Lovelace" });
  if (answer.status !== 200) throw new Error(`sign_up failed: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** An answer of the engine: status, headers (lower-case names; Content-Length is checked, then left out) and body. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: any;
}

export interface CallOptions {
  /** Bearer token; none: anonymous. */
  token?: string;
  /** X-Forwarded-For, as a proxy in front of the API would send it; none when undefined. */
  client?: string;
  /** Database settings of the engine's sessions (see tests/support/engine.ts). */
  settings?: Record<string, string>;
}

/** POST /rpc/<fn> through the engine, as the authenticator like PostgREST. */
export async function call(fn: string, args: Record<string, unknown>, options: CallOptions = {}): Promise<Answer> {
  const headers: Record<string, string> = options.client === undefined ? {} : { "X-Forwarded-For": options.client };
  const answer = await engineRpc(fn, args, { token: options.token, headers, settings: options.settings });
  const { "content-length": _length, ...rest } = answer.headers;
  return { status: answer.status, headers: rest, body: answer.body };
}

/** api.sign_in through the engine; a failed attempt is answered (and committed) with response.status, so it counts. */
export function signIn(email: string | null, password: string | null = "correct horse battery", options: CallOptions = {}): Promise<Answer> {
  return call("sign_in", { email, password }, options);
}

export function issueToken(token: string | null): Promise<Answer> {
  return call("issue_token", { refresh_token: token });
}

/** An access token for a session `signIn` opened, as the gateway mints it. */
export function tokenOf(session: SignedIn): Promise<string> {
  return accessTokenFor(session.user, session.session_id);
}

/** A token signed with the API's secret carrying exactly `claims` (plus the audience), for claims the gateway never mints. */
export function tokenWithClaims(claims: Record<string, unknown>): Promise<string> {
  return mintToken({ aud: testStack().jwtAudience, ...claims });
}

/** A pool on the test database as the authenticator (what PostgREST and the engine use). */
export function authenticatorSql(max = 16): Sql {
  return connectPostgres(testStack().authenticatorUrl, { max, onnotice: () => {} });
}
