/**
 * One transaction per request, as PostgREST runs it: BEGIN ISOLATION LEVEL READ COMMITTED
 * [READ ONLY], the request GUCs and the role in one set_config statement, the pre-request
 * function, the caller's statement, then COMMIT or ROLLBACK, on a connection of its own
 * (docs/decisions/0002-request-transactions.md). The statements are issued together on the
 * reserved connection, so postgres.js pipelines them: a request that knows how it ends costs one
 * round trip to PostgreSQL once its statements are prepared on that connection.
 */
import type { Row, Sql } from "postgres";
import { ApiError } from "./errors";
import { isConnectionError } from "./pg-errors";
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
  /**
   * `Prefer: timezone=…`, given to PostgreSQL as it is (PostgREST 16 no longer checks it
   * first): an invalid zone fails the request with PostgreSQL's own 22023.
   */
  timezone?: string;
}

export interface TransactionOptions {
  readOnly: boolean;
  /** The caller's statement runs on a generic plan (plan_cache_mode for this transaction). */
  genericPlans?: boolean;
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

/** The caller's statement: its text with $n placeholders, and its values. */
export interface Statement {
  text: string;
  values: readonly unknown[];
  /** Prepared once per connection (a fixed text), or parsed each time (open-ended texts). */
  prepare: boolean;
}

// Prepared once per connection: each request then sends only Bind/Execute for them.
const PREPARED = { prepare: true };
const BEGIN = "begin isolation level read committed";
const BEGIN_READ_ONLY = "begin isolation level read committed read only";

const quoteSearchPath = (schemas: string[]) => schemas.map((s) => `"${s.replaceAll('"', '""')}"`).join(", ");

interface Waiter {
  /** Hands the caller a slot (the one a finished request just gave up). */
  grant: () => void;
}

const connectionError = (details: string) => new ApiError(503, "PGRST000", "Database connection error.", details);

/**
 * The engine's request connections: at most `size` (PGRST_DB_POOL) request transactions at a
 * time, each on a connection reserved from postgres.js for it alone and handed back when it ends,
 * as PostgREST's pool does; the pool's one extra connection stays free for the schema cache. A
 * request that finds every slot taken waits in line; one that gets neither a slot nor a
 * connection within the acquisition timeout gets PostgREST's 504 PGRST003 (all connections
 * busy) or 503 PGRST000 (a connection could not be opened).
 */
export class RequestConnections {
  private active = 0;
  private closed = false;
  private readonly waiters: Waiter[] = [];
  private readonly prepared = new Set<string>();

  constructor(
    private readonly sql: Sql,
    /** Request transactions at a time (the pool has one more connection, for the schema cache). */
    private readonly size: number,
    /**
     * Called when a connection is lost or a new one does not open in time: the owner replaces
     * the whole pool, which recovers as soon as the database does.
     */
    private readonly onConnectionLost: () => void = () => {},
    /** Distinct request-shaped statement texts prepared at most (see preparable). */
    private readonly preparedTexts = 200,
  ) {}

  /**
   * Whether a statement whose text depends on the request (select lists, aliases, filters, `in`
   * lists, order) may be prepared. postgres.js keeps a connection's prepared statements until the
   * connection closes, so only the first `preparedTexts` distinct texts are: the shapes clients
   * use get their plans kept, and a client that varies its aliases cannot grow every backend's
   * memory without bound (the rest are parsed and planned per request).
   */
  preparable(text: string): boolean {
    if (this.prepared.has(text)) return true;
    if (this.prepared.size >= this.preparedTexts) return false;
    this.prepared.add(text);
    return true;
  }

  /** A connection reserved for one request transaction; hand it back with release(). */
  async acquire(timeoutSeconds: number): Promise<ReservedSql> {
    if (this.closed) throw connectionError("the engine is shutting down");
    const deadline = performance.now() + timeoutSeconds * 1000;
    if (this.active < this.size) this.active++;
    else await this.slot(timeoutSeconds * 1000);
    try {
      return await this.reserve(Math.max(0, deadline - performance.now()));
    } catch (e) {
      this.free();
      throw e;
    }
  }

  /** Waits for a finished request's slot, or fails with PGRST003 when none comes in time. */
  private slot(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new ApiError(504, "PGRST003", "Timed out acquiring connection from connection pool."));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /**
   * A connection from postgres.js. With a slot in hand one is free or can be opened, so one that
   * does not come in time means the database cannot be reached (postgres.js keeps retrying a
   * server that accepts and drops connections): PGRST000, and the pool is replaced. A connection
   * that arrives after that goes straight back.
   */
  private reserve(timeoutMs: number): Promise<ReservedSql> {
    return new Promise<ReservedSql>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        reject(connectionError("timed out connecting to the database"));
        this.onConnectionLost();
      }, timeoutMs);
      (this.sql.reserve() as Promise<ReservedSql>).then(
        (conn) => {
          if (settled || this.closed) {
            conn.release();
            if (!settled) reject(connectionError("the engine is shutting down"));
            settled = true;
            return;
          }
          settled = true;
          clearTimeout(timer);
          resolve(conn);
        },
        (error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /**
   * Hands the connection back. A connection that failed is not: its pool is replaced (see
   * onConnectionLost), so no later request meets it half dead.
   */
  release(conn: ReservedSql, broken: boolean): void {
    if (broken) this.onConnectionLost();
    else conn.release();
    this.free();
  }

  private free(): void {
    // The slot passes straight to the next waiter, so `active` stays as it is.
    const next = this.waiters.shift();
    if (next) next.grant();
    else this.active--;
  }

  /** No new requests; those running finish and hand their connections back (before the pool ends). */
  close(): void {
    this.closed = true;
  }
}

/**
 * The request GUCs in one statement, in PostgREST's order.
 */
function settingsStatement(s: RequestSettings, genericPlans: boolean): { text: string; values: string[] } {
  const values = [quoteSearchPath(s.searchPath)];
  const sets = ["set_config('search_path', $1, true)"];
  const set = (name: string, value: string) => {
    values.push(value);
    sets.push(`set_config('${name}', $${values.length}, true)`);
  };
  if (s.role !== undefined) set("role", s.role);
  set("request.jwt.claims", JSON.stringify(s.claims));
  set("request.method", s.method);
  set("request.path", s.path);
  set("request.headers", JSON.stringify(s.headers));
  set("request.cookies", JSON.stringify(s.cookies));
  if (s.timezone !== undefined) set("timezone", s.timezone);
  if (genericPlans) sets.push("set_config('plan_cache_mode', 'force_generic_plan', true)");
  return { text: `select ${sets.join(", ")}`, values };
}

/** The call of PGRST_DB_PRE_REQUEST's function. */
const preRequestCall = (fn: string) => `select ${quoteQualified(fn)}()`;

/** Runs the caller's statement inside the request's transaction and returns its rows. */
export async function runInRequestTransaction(
  connections: RequestConnections,
  settings: RequestSettings,
  options: TransactionOptions,
  main: Statement,
  end: TransactionEnd<Row[]>,
): Promise<Row[]> {
  return (await runStatementsInRequestTransaction(connections, settings, options, [main], end))[0]!;
}

/**
 * The caller's statements, in order, inside the request's transaction (e.g. a read, then the
 * EXPLAIN of its count): the rows of each. `end` judges the first statement's rows.
 */
export async function runStatementsInRequestTransaction(
  connections: RequestConnections,
  settings: RequestSettings,
  options: TransactionOptions,
  statements: Statement[],
  end: TransactionEnd<Row[]>,
): Promise<Row[][]> {
  const conn = await connections.acquire(options.acquisitionTimeoutSeconds);
  let broken = false;
  try {
    return await inTransactionBlock(conn, settings, options, statements, end);
  } catch (e) {
    if (isConnectionError(e)) broken = true;
    throw e;
  } finally {
    connections.release(conn, broken);
  }
}

async function inTransactionBlock(
  tx: ReservedSql,
  settings: RequestSettings,
  options: TransactionOptions,
  statements: Statement[],
  end: TransactionEnd<Row[]>,
): Promise<Row[][]> {
  let ended = false;
  try {
    const { text, values } = settingsStatement(settings, options.genericPlans === true);
    const steps: Promise<unknown>[] = [
      tx.unsafe(options.readOnly ? BEGIN_READ_ONLY : BEGIN, [], PREPARED).execute(),
      tx.unsafe(text, values, PREPARED).execute(),
    ];
    if (options.preRequest) steps.push(tx.unsafe(preRequestCall(options.preRequest)).execute());
    // The extended protocol also for a statement without parameters (unsafe() would send those
    // as simple queries), so the caller's statement is prepared as `prepare` says.
    const first = steps.length;
    for (const main of statements) {
      steps.push(tx.unsafe(main.text, main.values as never[], { prepare: main.prepare, simple: false } as { prepare: boolean }).execute());
    }
    let endStep: Promise<unknown> | undefined;
    let endError: unknown;
    if (typeof end === "boolean") {
      const sent = tx.unsafe(end ? "commit" : "rollback", [], PREPARED).execute();
      // Handled at once: a lost connection rejects every queued statement together, and a
      // rejection whose handler is attached only after the others settle counts as unhandled.
      endStep = sent.then(() => {}, (e) => { endError = e; });
      steps.push(sent);
      ended = true;
    }
    // The first connection error fails the request at once. postgres.js holds back the
    // statements after one it must describe first (new to the connection) and sends them as
    // answers arrive; when the connection closes meanwhile it rejects only those it had sent,
    // and the held-back ones never settle (porsager/postgres#1208). The connection is then
    // never reused (see RequestConnections.release).
    const lost = new Promise<never>((_, reject) => {
      for (const step of steps) step.catch((e: unknown) => { if (isConnectionError(e)) reject(e); });
    });
    lost.catch(() => {});
    const all = Promise.allSettled(endStep ? steps.slice(0, -1) : steps);
    const settled = await Promise.race([all, lost]);
    if (endStep) await Promise.race([endStep, lost]);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failure) throw failure.reason;
    // COMMIT itself can fail (a deferred constraint, a lost connection): then nothing was kept.
    if (endError !== undefined) throw endError;
    const results = settled.slice(first, first + statements.length).map((r) => (r as PromiseFulfilledResult<Row[]>).value);
    if (typeof end === "function") {
      const commit = end(results[0]!);
      ended = true;
      await tx.unsafe(commit ? "commit" : "rollback", [], PREPARED);
    }
    return results;
  } catch (e) {
    if (!ended && !isConnectionError(e)) await tx.unsafe("rollback").catch(() => {});
    throw e;
  }
}
