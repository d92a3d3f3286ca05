/**
 * One transaction per request, as PostgREST runs it: read only for reads, the request GUCs and
 * the role in one set_config statement, the pre-request function, the caller's statement, then
 * COMMIT or ROLLBACK, on one reserved connection shared by pipelined requests.
 *
 * A request that commits (the usual case) sends it all as one protocol exchange: the settings
 * and the pre-request call as a prelude of the caller's statement (patches/postgres@3.4.9.patch)
 * with no Sync between them, so they run in one implicit transaction that the Sync commits, or
 * rolls back when any of them fails. That is the transaction PostgREST's BEGIN ISOLATION LEVEL
 * READ COMMITTED [READ ONLY] … COMMIT opens (read only set by the settings statement), where the
 * connection's default isolation is read committed, without the two statements and their round
 * of protocol work. A request whose end depends on its result (or that rolls back) uses BEGIN
 * … COMMIT/ROLLBACK, as does any connection whose default isolation is another one.
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
}

export interface TransactionOptions {
  readOnly: boolean;
  /** The caller's statement runs on a generic plan (plan_cache_mode for this transaction). */
  genericPlans?: boolean;
  /** Qualified function name from PGRST_DB_PRE_REQUEST. */
  preRequest?: string;
  /** Seconds to wait for a pooled connection before PGRST003. */
  acquisitionTimeoutSeconds: number;
  /**
   * Hold the connection alone instead of pipelining other requests behind this one. Writes can
   * be slow (a bcrypt hash takes a quarter of a second) and must not stall the reads queued
   * behind them on the same connection.
   */
  exclusive?: boolean;
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

interface Lane {
  conn: ReservedSql;
  /** Requests whose statements are queued on this connection. */
  inflight: number;
  /** A request that decides COMMIT/ROLLBACK after seeing its result holds the lane alone. */
  exclusive: boolean;
  broken: boolean;
  /** When a request last finished on this connection, or when it last got work while idle. */
  progressAt: number;
  /** Its default isolation was read committed when it opened, so an implicit transaction is PostgREST's. */
  implicitTransactions: boolean;
}

/** A busy connection that has finished nothing for this long gets no more requests queued on it. */
const STALLED_MS = 100;

interface Waiter {
  exclusive: boolean;
  resolve: (lane: Lane) => void;
  reject: (error: unknown) => void;
}

/**
 * The engine's connections. Each is reserved from postgres.js and carries whole request
 * transactions back to back: BEGIN … COMMIT of one request, then the next, all pipelined, so
 * concurrent requests share a connection the way plain queries do instead of holding it for a
 * round trip each. A request's statements are issued in one go, so transactions never interleave.
 */
export class ConnectionLanes {
  private readonly lanes: Lane[] = [];
  private reserving = 0;
  private closed = false;
  private probeTimeoutMs = 10_000;
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly sql: Sql,
    /** Connections to reserve at most (the pool has one more, for the schema cache). */
    private readonly size: number,
    /**
     * Called when a connection is lost or a new one does not answer: postgres.js can leave such
     * connections wedged, so the owner replaces the whole pool rather than reuse them.
     */
    private readonly onConnectionLost: () => void = () => {},
    /** Told each new connection's server process id before the connection carries requests. */
    private readonly onBackend: (pid: number) => void = () => {},
    /** Requests queued on one connection before another is preferred or callers wait. */
    private readonly depth = 16,
    /** Distinct request-shaped statement texts prepared at most (see preparable). */
    private readonly preparedTexts = 200,
  ) {}

  private readonly prepared = new Set<string>();

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

  /**
   * The busiest connection that still has room and is making progress. Packing requests onto
   * few connections, rather than spreading them, lets the requests issued in one task leave in
   * one write and lets a backend serve several of them per wakeup: on two cores that took about
   * a fifth of PostgreSQL's CPU per `me` away. A connection that has finished nothing for
   * STALLED_MS (a slow statement at its head, or a socket that died without a word) is passed
   * over, so requests do not pile up behind it.
   */
  private pick(): Lane | undefined {
    const now = performance.now();
    let best: Lane | undefined;
    for (const lane of this.lanes) {
      if (lane.exclusive || lane.broken || lane.inflight >= this.depth) continue;
      if (lane.inflight > 0 && now - lane.progressAt > STALLED_MS) continue;
      if (!best || lane.inflight > best.inflight) best = lane;
    }
    return best;
  }

  private take(lane: Lane, exclusive: boolean): Lane {
    if (lane.inflight === 0) lane.progressAt = performance.now();
    lane.inflight++;
    if (exclusive) lane.exclusive = true;
    return lane;
  }

  async acquire(exclusive: boolean, timeoutSeconds: number): Promise<Lane> {
    this.probeTimeoutMs = timeoutSeconds * 1000;
    if (this.closed) throw new ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", "the engine is shutting down");
    const idle = this.pick();
    if (idle && idle.inflight === 0) return this.take(idle, exclusive);
    if (this.lanes.length + this.reserving < this.size) this.grow();
    if (idle) return this.take(idle, exclusive);
    return new Promise<Lane>((resolve, reject) => {
      const waiter: Waiter = {
        exclusive,
        resolve: (lane) => {
          clearTimeout(timer);
          resolve(lane);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.dropWaiter(waiter);
        // No connection at all means the database cannot be reached (postgres.js keeps retrying
        // a server that accepts and drops connections); otherwise every connection is busy.
        reject(this.lanes.length === 0
          ? new ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", "timed out connecting to the database")
          : new ApiError(504, "PGRST003", "Timed out acquiring connection from connection pool."));
      }, timeoutSeconds * 1000);
      this.waiters.push(waiter);
    });
  }

  /**
   * Reserves one more connection in the background; waiters get it (or the error) when it is
   * ready. A new connection answers a probe (its backend's pid, for onBackend) before it carries
   * requests: postgres.js hands out connections to a server that accepts and drops them (a proxy
   * in front of a stopped database) and retries them forever, and no request should be queued
   * on one of those.
   */
  private grow(): void {
    this.reserving++;
    let settled = false;
    const failed = (error: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.reserving--;
      if (this.lanes.length > 0) return; // the others keep serving the waiters
      for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    };
    const timer = setTimeout(() => {
      failed(new ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", "timed out connecting to the database"));
      this.onConnectionLost();
    }, this.probeTimeoutMs);
    (this.sql.reserve() as Promise<ReservedSql>).then((conn) => {
      conn`select pg_backend_pid() as pid, current_setting('default_transaction_isolation') as isolation`.then(
        ([row]) => {
          if (settled) return; // given up on: it belongs to a pool being replaced
          settled = true;
          clearTimeout(timer);
          this.reserving--;
          if (this.closed) {
            conn.release();
            return;
          }
          try {
            this.onBackend(Number(row?.pid));
          } catch {
            // A hook that fails (e.g. not allowed to renice) leaves the connection as it is.
          }
          this.lanes.push({
            conn, inflight: 0, exclusive: false, broken: false, progressAt: performance.now(),
            implicitTransactions: row?.isolation === "read committed",
          });
          this.wake();
        },
        (error) => failed(error),
      );
    }, failed);
  }

  private dropWaiter(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  release(lane: Lane, exclusive: boolean, broken: boolean): void {
    lane.inflight--;
    lane.progressAt = performance.now();
    if (exclusive) lane.exclusive = false;
    if (broken && !lane.broken) {
      // The connection failed: never reuse it (see onConnectionLost).
      lane.broken = true;
      this.lanes.splice(this.lanes.indexOf(lane), 1);
      this.onConnectionLost();
    }
    this.wake();
  }

  private wake(): void {
    while (this.waiters.length > 0) {
      const lane = this.pick();
      if (!lane) return;
      const waiter = this.waiters.shift()!;
      waiter.resolve(this.take(lane, waiter.exclusive));
    }
  }

  /** Hands every connection back to the pool (before the pool is ended). */
  close(): void {
    this.closed = true;
    for (const lane of this.lanes.splice(0)) lane.conn.release();
  }
}

/**
 * The request GUCs in one statement, in PostgREST's order. `readOnly` adds transaction_read_only
 * for a transaction that was not opened with BEGIN … READ ONLY (turning it on is allowed at any
 * point of a transaction).
 */
function settingsStatement(s: RequestSettings, readOnly: boolean, genericPlans: boolean): { text: string; values: string[] } {
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
  if (readOnly) sets.push("set_config('transaction_read_only', 'on', true)");
  if (genericPlans) sets.push("set_config('plan_cache_mode', 'force_generic_plan', true)");
  return { text: `select ${sets.join(", ")}`, values };
}

/** The call of PGRST_DB_PRE_REQUEST's function. */
const preRequestCall = (fn: string) => `select ${quoteQualified(fn)}()`;

/** Runs the caller's statement inside the request's transaction and returns its rows. */
export async function runInRequestTransaction(
  lanes: ConnectionLanes,
  settings: RequestSettings,
  options: TransactionOptions,
  main: Statement,
  end: TransactionEnd<Row[]>,
): Promise<Row[]> {
  const exclusive = options.exclusive === true || typeof end !== "boolean";
  const lane = await lanes.acquire(exclusive, options.acquisitionTimeoutSeconds);
  let broken = false;
  try {
    return end === true && lane.implicitTransactions
      ? await inImplicitTransaction(lane.conn, settings, options, main)
      : await inTransactionBlock(lane.conn, settings, options, main, end);
  } catch (e) {
    if (isConnectionError(e)) broken = true;
    throw e;
  } finally {
    lanes.release(lane, exclusive, broken);
  }
}

function inImplicitTransaction(tx: ReservedSql, settings: RequestSettings, options: TransactionOptions, main: Statement): Promise<Row[]> {
  const prelude = [settingsStatement(settings, options.readOnly, options.genericPlans === true)];
  if (options.preRequest) prelude.push({ text: preRequestCall(options.preRequest), values: [] });
  // `prelude` is the patch's query option (not in postgres.js's types).
  return tx.unsafe(main.text, main.values as never[], { prepare: main.prepare, prelude } as { prepare: boolean });
}

async function inTransactionBlock(
  tx: ReservedSql,
  settings: RequestSettings,
  options: TransactionOptions,
  main: Statement,
  end: TransactionEnd<Row[]>,
): Promise<Row[]> {
  let ended = false;
  try {
    const { text, values } = settingsStatement(settings, false, options.genericPlans === true);
    const steps: Promise<unknown>[] = [
      tx.unsafe(options.readOnly ? BEGIN_READ_ONLY : BEGIN, [], PREPARED).execute(),
      tx.unsafe(text, values, PREPARED).execute(),
    ];
    if (options.preRequest) steps.push(tx.unsafe(preRequestCall(options.preRequest)).execute());
    steps.push(tx.unsafe(main.text, main.values as never[], { prepare: main.prepare }).execute());
    let endStep: Promise<unknown> | undefined;
    let endError: unknown;
    if (typeof end === "boolean") {
      // Handled at once: a lost connection rejects every queued statement together, and a
      // rejection whose handler is attached only after the others settle counts as unhandled.
      endStep = tx.unsafe(end ? "commit" : "rollback", [], PREPARED).execute()
        .then(() => {}, (e) => { endError = e; });
      ended = true;
    }
    const settled = await Promise.allSettled(steps);
    if (endStep) await endStep;
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failure) throw failure.reason;
    // COMMIT itself can fail (a deferred constraint, a lost connection): then nothing was kept.
    if (endError !== undefined) throw endError;
    const result = (settled[settled.length - 1] as PromiseFulfilledResult<Row[]>).value;
    if (typeof end === "function") {
      const commit = end(result);
      ended = true;
      await tx.unsafe(commit ? "commit" : "rollback", [], PREPARED);
    }
    return result;
  } catch (e) {
    if (!ended && !isConnectionError(e)) await tx.unsafe("rollback").catch(() => {});
    throw e;
  }
}
