/**
 * One transaction per request, as PostgREST runs it: BEGIN (read only for reads), the request
 * GUCs and the role in one set_config statement, the pre-request function, the caller's
 * statement, then COMMIT or ROLLBACK. All of it is pipelined on one reserved connection, so a
 * request costs one network round trip when the end of the transaction is known up front.
 */
import type { PendingQuery, Row, Sql } from "postgres";
import { ApiError } from "./errors";
import { quoteQualified } from "./sql-ident";

export interface RequestSettings {
  /** Role for `SET LOCAL ROLE`; undefined keeps the connecting user. */
  role: string | undefined;
  claims: Record<string, unknown>;
  method: string;
  path: string;
  /** Lower-cased header names → values (without Cookie). */
  headers: Record<string, string>;
  cookies: Record<string, string>;
  /** The schema of the request first, then PGRST_DB_EXTRA_SEARCH_PATH. */
  searchPath: string[];
}

export interface TransactionOptions {
  readOnly: boolean;
  /** Qualified function name from PGRST_DB_PRE_REQUEST. */
  preRequest?: string;
  /** Seconds to wait for a pooled connection before PGRST003. */
  acquisitionTimeoutSeconds: number;
}

/**
 * `commit: boolean` ends the transaction in the same pipeline; a function decides it from the
 * result instead (one more round trip), e.g. to roll back when a singular response is refused.
 */
export type TransactionEnd<T> = boolean | ((result: T) => boolean);

export type ReservedSql = Sql & { release(): void };

const quoteSearchPath = (schemas: string[]) => schemas.map((s) => `"${s.replaceAll('"', '""')}"`).join(", ");

async function reserve(sql: Sql, timeoutSeconds: number): Promise<ReservedSql> {
  const pending = sql.reserve() as Promise<ReservedSql>;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // Whoever gets the connection later hands it straight back.
      pending.then((c) => c.release(), () => {});
      reject(new ApiError(504, "PGRST003", "Timed out acquiring connection from connection pool."));
    }, timeoutSeconds * 1000);
  });
  try {
    return await Promise.race([pending, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function settingsQuery(tx: Sql, s: RequestSettings): PendingQuery<Row[]> {
  const claims = JSON.stringify(s.claims);
  const headers = JSON.stringify(s.headers);
  const cookies = JSON.stringify(s.cookies);
  const searchPath = quoteSearchPath(s.searchPath);
  return s.role === undefined
    ? tx`select set_config('search_path', ${searchPath}, true), set_config('request.jwt.claims', ${claims}, true),
                set_config('request.method', ${s.method}, true), set_config('request.path', ${s.path}, true),
                set_config('request.headers', ${headers}, true), set_config('request.cookies', ${cookies}, true)`
    : tx`select set_config('search_path', ${searchPath}, true), set_config('role', ${s.role}, true),
                set_config('request.jwt.claims', ${claims}, true),
                set_config('request.method', ${s.method}, true), set_config('request.path', ${s.path}, true),
                set_config('request.headers', ${headers}, true), set_config('request.cookies', ${cookies}, true)`;
}

/**
 * Runs `main` inside the request's transaction. `main` must issue its query synchronously
 * (return the pending query, or a promise of it) so it joins the pipeline.
 */
export async function runInRequestTransaction<T>(
  sql: Sql,
  settings: RequestSettings,
  options: TransactionOptions,
  main: (tx: Sql) => PendingQuery<Row[]> | Promise<T>,
  end: TransactionEnd<T>,
): Promise<T> {
  const tx = await reserve(sql, options.acquisitionTimeoutSeconds);
  let ended = false;
  try {
    const steps: Promise<unknown>[] = [];
    steps.push(tx.unsafe(options.readOnly ? "begin isolation level read committed read only" : "begin isolation level read committed").execute());
    steps.push(settingsQuery(tx, settings).execute());
    if (options.preRequest) steps.push(tx.unsafe(`select ${quoteQualified(options.preRequest)}()`).execute());
    const pendingMain = main(tx);
    if ("execute" in pendingMain && typeof pendingMain.execute === "function") pendingMain.execute();
    steps.push(pendingMain as Promise<unknown>);
    let endStep: Promise<unknown> | undefined;
    if (typeof end === "boolean") {
      endStep = tx.unsafe(end ? "commit" : "rollback").execute();
      ended = true;
    }
    const settled = await Promise.allSettled(steps);
    if (endStep) await endStep.catch(() => {});
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failure) {
      if (!ended) {
        ended = true;
        await tx.unsafe("rollback").catch(() => {});
      }
      throw failure.reason;
    }
    const result = (settled[settled.length - 1] as PromiseFulfilledResult<T>).value;
    if (typeof end === "function") {
      const commit = end(result);
      ended = true;
      await tx.unsafe(commit ? "commit" : "rollback");
    }
    return result;
  } catch (e) {
    if (!ended) await tx.unsafe("rollback").catch(() => {});
    throw e;
  } finally {
    tx.release();
  }
}
