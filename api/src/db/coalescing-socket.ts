/**
 * A socket factory for postgres.js that sends the queries issued together as one write.
 *
 * postgres.js writes a query's messages at once when they pass 1 KiB (a request's settings
 * statement carries its headers and claims, so it always does) and batches smaller ones until
 * the next turn. A request transaction (BEGIN, settings, call, COMMIT, issued in one go) thus
 * costs two or three writes, and each write to a local PostgreSQL wakes its backend: the kernel
 * runs the delivery in the writer's time slice and often switches to the woken backend right
 * there. Deferring every write to the end of the current task (a microtask) sends a request's
 * statements as one write without holding them past the task that issued them.
 */
import net from "node:net";

type WriteCallback = (error?: Error | null) => void;

interface SocketTarget {
  /** Unix socket path, or undefined for TCP. */
  path?: string;
  host?: string;
  port?: number;
}

/** Replaces `socket.write` and `socket.end` so writes made in one task leave as one buffer. */
export function coalesceWrites(socket: net.Socket): net.Socket {
  const write = socket.write.bind(socket) as (chunk: Uint8Array, cb?: WriteCallback) => boolean;
  const end = socket.end.bind(socket) as (chunk?: Uint8Array, cb?: () => void) => net.Socket;
  let pending: Uint8Array[] = [];
  let callbacks: WriteCallback[] = [];
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const chunk = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
    const done = callbacks;
    pending = [];
    callbacks = [];
    // Closed meanwhile: postgres.js has already failed the queries these bytes belong to, and a
    // write now would raise an error event nobody listens to any more.
    if (socket.destroyed) {
      for (const cb of done) cb(new Error("the connection closed before this write was sent"));
      return;
    }
    write(chunk, done.length === 0 ? undefined : (error) => { for (const cb of done) cb(error); });
  };

  socket.write = ((chunk: Uint8Array | string, encodingOrCb?: unknown, cb?: unknown): boolean => {
    const callback = (typeof encodingOrCb === "function" ? encodingOrCb : cb) as WriteCallback | undefined;
    pending.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    if (callback) callbacks.push(callback);
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
    // Backpressure as the socket reports it: postgres.js stops pipelining until 'drain'.
    return !socket.writableNeedDrain;
  }) as net.Socket["write"];

  socket.end = ((chunk?: unknown, encodingOrCb?: unknown, cb?: unknown): net.Socket => {
    flush();
    const callback = [chunk, encodingOrCb, cb].find((x) => typeof x === "function") as (() => void) | undefined;
    return chunk === undefined || typeof chunk === "function" ? end(undefined, callback) : end(chunk as Uint8Array, callback);
  }) as net.Socket["end"];

  return socket;
}

/**
 * Opens a write-coalescing connection (Unix socket path or TCP). It is returned at once, still
 * connecting: writes wait in the socket until it is up, and a failure arrives as the socket's
 * `error` and `close` events, which is how postgres.js retries (a factory that throws instead
 * leaves the pool's connection stuck in its "connecting" state for good). postgres.js's own
 * connect_timeout covers a connect that hangs.
 */
export function connectCoalescing(target: SocketTarget): net.Socket {
  const socket = target.path ? net.connect(target.path) : net.connect(target.port ?? 5432, target.host ?? "localhost");
  if (!target.path) socket.setNoDelay(true);
  holdEarlyFailure(socket);
  return coalesceWrites(socket);
}

/**
 * postgres.js attaches its listeners a few microtasks after the factory returns, and a Unix
 * socket that does not exist fails before that: the `error` would be unhandled (the process
 * dies) and the `close` lost (the pool never retries). Until the next macrotask, such events
 * wait for a listener.
 */
function holdEarlyFailure(socket: net.Socket): void {
  const emit = socket.emit.bind(socket) as (event: string | symbol, ...args: unknown[]) => boolean;
  let held: [string | symbol, unknown[]][] = [];
  let holding = true;
  // Held events go out in their order, each once somebody listens (and before any later event:
  // a `close` handled before its `error` would retry without failing the waiting query).
  const release = (all: boolean) => {
    while (held.length > 0 && (all || socket.listenerCount(held[0]![0]) > 0)) {
      const [event, args] = held.shift()!;
      // An `error` nobody listens to any more (its `close` was handled) is dropped, not thrown.
      if (event !== "error" || socket.listenerCount("error") > 0) emit(event, ...args);
    }
  };
  socket.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (holding && (event === "error" || event === "close") && (held.length > 0 || socket.listenerCount(event) === 0)) {
      held.push([event, args]);
      release(false);
      return true;
    }
    release(false);
    return emit(event, ...args);
  }) as net.Socket["emit"];
  setImmediate(() => {
    holding = false;
    release(true);
  });
}
