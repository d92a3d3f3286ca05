// MFA test helpers: calls made the way PostgREST makes them (one transaction, role and claims
// set, the test's clock in autoaudit.mfa_clock), and real RFC 6238 codes computed here with
// the otpauth library from the secret the database handed out: an implementation independent
// of the SQL one.
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { Secret, TOTP } from "otpauth";
import { connectPostgres } from "../../api/src/db/connection";
import { call, type CallResult } from "../api/helpers";
import { testStack } from "../support/stack";

export type Sql = postgres.Sql;

export const adminSql = (): Sql => postgres(testStack().databaseUrl, { max: 4, onnotice: () => {} });
export const authenticatorSql = (): Sql => connectPostgres(testStack().authenticatorUrl, { max: 4, onnotice: () => {} });

/** The key SQL-level calls pass as mfa_key (what the gateway sends from MFA_ENCRYPTION_KEY). */
export const SQL_KEY = randomBytes(36).toString("base64url");
export const PASSWORD = "correct horse battery";

/** The code of `secret` (base32) at `epochSeconds`. */
export function totp(secret: string, epochSeconds: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 }).generate({ timestamp: epochSeconds * 1000 });
}

/** A code that is none of the codes of the window around `epochSeconds`. */
export function wrongCode(secret: string, epochSeconds: number): string {
  const taken = new Set([-30, 0, 30].map((d) => totp(secret, epochSeconds + d)));
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, "0");
    if (!taken.has(code)) return code;
  }
}

export interface Answer {
  status: number;
  body: any;
  headers: Record<string, string>;
}

export interface Caller {
  sub: string;
  sid: string;
  aal: string;
  amr: unknown[];
}

/**
 * Calls `select api.<fn>(named args)` as `authenticated` (or anon without a caller), with the
 * clock at `clock` (epoch seconds), and answers as PostgREST would: response.status and
 * response.headers when the function set them, the raised error's status otherwise.
 */
export async function sqlCall(sql: Sql, caller: Caller | null, fn: string, args: Record<string, unknown>, clock?: number, settings: Record<string, string> = {}): Promise<Answer> {
  const names = Object.keys(args);
  const text = `select api.${fn}(${names.map((n, i) => `${n} => $${i + 1}`).join(", ")}) as v`;
  try {
    return await sql.begin(async (tx) => {
      const claims = caller ? JSON.stringify({ role: "authenticated", ...caller }) : "";
      await tx`select set_config('role', ${caller ? "authenticated" : "anon"}, true), set_config('request.jwt.claims', ${claims}, true),
                      set_config('autoaudit.mfa_clock', ${clock === undefined ? "" : String(clock)}, true)`;
      for (const [name, value] of Object.entries(settings)) await tx`select set_config(${name}, ${value}, true)`;
      const [row] = await tx.unsafe(text, names.map((n) => args[n] as postgres.ParameterOrJSON<never>));
      const [status] = await tx`select nullif(current_setting('response.status', true), '') as s, nullif(current_setting('response.headers', true), '') as h`;
      const headers = Object.assign({}, ...(status?.h ? (JSON.parse(status.h) as Record<string, string>[]) : []));
      return { status: status?.s ? Number(status.s) : 200, body: row!.v, headers };
    });
  } catch (error) {
    if (!(error instanceof postgres.PostgresError)) throw error;
    if (error.code === "PGRST") {
      const detail = JSON.parse(error.detail!) as { status: number; headers: Record<string, string> };
      return { status: detail.status, body: JSON.parse(error.message), headers: detail.headers };
    }
    const status = /^PT\d{3}$/.test(error.code) ? Number(error.code.slice(2)) : error.code === "22023" || error.code === "22P02" ? 400 : 500;
    return { status, body: { code: error.code, message: error.message, details: error.detail ?? null, hint: error.hint ?? null }, headers: {} };
  }
}

export async function sqlOk(sql: Sql, caller: Caller | null, fn: string, args: Record<string, unknown>, clock?: number): Promise<any> {
  const answer = await sqlCall(sql, caller, fn, args, clock);
  if (answer.status !== 200) throw new Error(`api.${fn}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

/** A new account, signed in over SQL: the caller its session's claims make. */
export async function sqlAccount(sql: Sql): Promise<{ email: string; caller: Caller; session: any }> {
  const email = `mfa-${randomUUID()}@example.com`;
  await sqlOk(sql, null, "sign_up", { email, password: PASSWORD, first_name: "Ada", last_name: "Lovelace" });
  const session = await sqlOk(sql, null, "sign_in", { email, password: PASSWORD });
  return { email, session, caller: callerOf(session) };
}

export const callerOf = (session: any): Caller => ({ sub: session.user.id, sid: session.session_id, aal: session.aal, amr: session.amr });

/** An account with a verified TOTP factor (enrolled and verified at `clock`), its session now at aal2. */
export async function sqlEnrolled(sql: Sql, clock: number) {
  const account = await sqlAccount(sql);
  const factor = await sqlOk(sql, account.caller, "mfa_enroll_totp", { friendly_name: "Phone", mfa_key: SQL_KEY }, clock);
  const verified = await sqlOk(sql, account.caller, "mfa_verify_enrollment", { factor_id: factor.id, code: totp(factor.totp.secret, clock), mfa_key: SQL_KEY }, clock);
  return { ...account, factor, secret: factor.totp.secret as string, verified, caller: callerOf(verified) };
}

// ── over HTTP, through the gateway ─────────────────────────────────────────

export const rpc = (fn: string, token: string | undefined, body?: unknown): Promise<CallResult> => call(`/rpc/${fn}`, { token, body: body ?? {} });

export function claimsOf(accessToken: string): any {
  return JSON.parse(Buffer.from(accessToken.split(".")[1]!, "base64url").toString("utf8"));
}

export const now = () => Math.floor(Date.now() / 1000);

/**
 * Makes the factor's last accepted step lie in the past, as if the codes of the window had
 * expired: over HTTP the clock is the real one, so a second code in the same 30 s needs this.
 */
export async function stepsPass(admin: Sql, factorId: string) {
  await admin`update auth.mfa_factors set last_used_step = last_used_step - 3 where id = ${factorId}`;
}

/** A user signed up and in over HTTP, with a verified factor; the tokens are aal2. */
export async function httpEnrolled(admin: Sql) {
  const email = `mfa-${randomUUID()}@example.com`;
  const password = `pw-${randomUUID()}`;
  const signedUp = await call("/rpc/sign_up", { body: { email, password, first_name: "Ada", last_name: "Lovelace" } });
  if (signedUp.status !== 200) throw new Error(signedUp.text);
  const first = (await call("/rpc/sign_in", { body: { email, password } })).json;
  const factor = (await rpc("mfa_enroll_totp", first.access_token, { friendly_name: "Phone" })).json;
  const verified = await rpc("mfa_verify_enrollment", first.access_token, { factor_id: factor.id, code: totp(factor.totp.secret, now()) });
  if (verified.status !== 200) throw new Error(verified.text);
  await stepsPass(admin, factor.id);
  return { email, password, factor, secret: factor.totp.secret as string, aal2: verified.json, first };
}

/** Signs in again (aal1) and takes the second step with a fresh code: the aal2 tokens. */
export async function httpStepUp(admin: Sql, user: { email: string; password: string; secret: string; factor: { id: string } }) {
  const aal1 = (await call("/rpc/sign_in", { body: { email: user.email, password: user.password } })).json;
  const challenge = (await rpc("mfa_challenge", aal1.access_token, { factor_id: user.factor.id })).json;
  const verified = await rpc("mfa_verify", aal1.access_token, { challenge_id: challenge.id, code: totp(user.secret, now()) });
  if (verified.status !== 200) throw new Error(verified.text);
  await stepsPass(admin, user.factor.id);
  return { aal1, aal2: verified.json };
}
