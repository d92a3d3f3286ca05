/**
 * Direct-SQL baselines: the same SQL functions the API scenarios reach, called with postgres.js
 * (the client the engine uses) on a pool of the engine's size, as the same login, in the same
 * kind of transaction PostgREST opens (BEGIN, role + request.jwt.claims via set_config, the
 * call, COMMIT, pipelined on one connection). What the API adds on top is HTTP, the gateway,
 * postgrest-js and the engine's request handling.
 */
import type { Sql } from "postgres";
import { connectPostgres } from "../../api/src/db/connection";
import { measure, type Measurement } from "../lib";

export interface DirectOptions {
  concurrency: number;
  durationMs: number;
  warmupMs: number;
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
}

type Reserved = Sql & { release(): void };

/** One call of `statement` inside a request-like transaction; resolves to the call's text. */
async function inRequestTransaction(sql: Sql, role: string, claims: Record<string, unknown>, readOnly: boolean, statement: (tx: Sql) => Promise<{ body: string | null }[]>): Promise<string | null> {
  const tx = (await sql.reserve()) as Reserved;
  try {
    const begin = tx.unsafe(readOnly ? "begin isolation level read committed read only" : "begin isolation level read committed").execute();
    const settings = tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`.execute();
    const call = statement(tx);
    if ("execute" in call && typeof (call as { execute?: unknown }).execute === "function") (call as unknown as { execute(): void }).execute();
    const commit = tx.unsafe("commit").execute();
    const [, , rows] = await Promise.all([begin, settings, call, commit]);
    return rows[0]?.body ?? null;
  } finally {
    tx.release();
  }
}

/** The engine's pool: same size (PGRST_DB_POOL, default 10), same login, prepared statements. */
export function directPool(url: string, size = Number(process.env.PGRST_DB_POOL ?? 10)): Sql {
  return connectPostgres(url, { max: size, prepare: true, onnotice: () => {}, connection: { application_name: "autoaudit-load-direct" } });
}

/** crypt() at the stored hash's cost in a bare loop: the bcrypt limit of this machine. */
export async function bcryptLimit(sql: Sql, storedHash: string, options: DirectOptions): Promise<Measurement> {
  return measure(options, async () => {
    const rows = await sql`select extensions.crypt(${"load-test-password"}, ${storedHash}) = ${storedHash} as ok`;
    return rows[0]?.ok === true;
  });
}

/** The stored hash of one account (its cost is the server's, 12 unless the database overrides it). */
export async function storedHash(admin: Sql, email: string): Promise<{ hash: string; cost: number }> {
  const [row] = await admin`select password_hash as hash from auth.users where email = ${email}`;
  if (!row) throw new Error(`no account ${email}`);
  const hash = String(row.hash);
  return { hash, cost: Number(hash.split("$")[2]) };
}

export async function meDirect(sql: Sql, claims: Record<string, unknown>[], options: DirectOptions): Promise<Measurement> {
  let i = 0;
  return measure(options, async () => {
    const c = claims[i++ % claims.length]!;
    const body = await inRequestTransaction(sql, "authenticated", c, true, (tx) => tx`select api.me()::text as body`);
    return body !== null && body.includes('"id"');
  });
}

export async function validateDirect(sql: Sql, tokens: string[], options: DirectOptions): Promise<Measurement> {
  let i = 0;
  return measure(options, async () => {
    const token = tokens[i++ % tokens.length]!;
    const body = await inRequestTransaction(sql, "anon", { role: "anon" }, true, (tx) => tx`select api.validate_token(${token})::text as body`);
    return body !== null && body.includes('"active" : true');
  });
}

/**
 * issue_token as a client refreshing its session does it: each call presents a live token and
 * the token it gets back goes back into the pool (a token is held by one caller at a time, so
 * none is ever presented twice). The pool needs at least `concurrency` tokens.
 */
export async function issueTokenDirect(sql: Sql, tokens: string[], options: DirectOptions): Promise<Measurement> {
  const pool = [...tokens];
  return measure(options, async () => {
    const token = pool.pop();
    if (!token) return false;
    const body = await inRequestTransaction(sql, "anon", { role: "anon" }, false, (tx) => tx`select api.issue_token(${token})::text as body`);
    const next = body ? (JSON.parse(body) as { refresh_token?: string }).refresh_token : undefined;
    if (next) pool.push(next);
    return next !== undefined;
  });
}

/** Sessions with a fresh refresh token each, made in SQL (superuser) for the direct rotation chains. */
export async function sqlSessions(admin: Sql, userId: string, count: number): Promise<string[]> {
  const rows = await admin`
    with s as (insert into auth.sessions (user_id) select ${userId}::uuid from generate_series(1, ${count}) returning id)
    select (auth.new_refresh_token(s.id)).token as token from s`;
  return rows.map((r) => String(r.token));
}
