/**
 * One load scenario with autocannon (npm, v8, run under Bun): `connections` keep-alive
 * connections, each sending its next request as soon as the previous answer is in (closed
 * loop, no pipelining). A single autocannon run covers warm-up and measurement; only answers
 * that complete inside the measured window count, so a connection's state (a refresh-token
 * chain) carries over from the warm-up.
 *
 * Recorded per answer (from autocannon's `response` event, sub-millisecond latency): status and
 * latency. Errors by kind: non-2xx by status, timeouts, socket errors (with a sample message).
 *
 * As a script (`bun bench/load/cannon.ts '<ShotSpec JSON>'`) it runs one scenario and prints
 * the result as JSON: used to run a second load generator in its own process (sign-in flood).
 */
import autocannon from "autocannon";
import type { EventEmitter } from "node:events";

export interface ShotRequest {
  path: string;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
}

export interface ShotSpec {
  name: string;
  /** Base URL of the server (`http://127.0.0.1:port`). */
  url: string;
  connections: number;
  durationSec: number;
  warmupSec: number;
  /** Every connection cycles through these. */
  requests: ShotRequest[];
  /**
   * Refresh-token rotation: each connection owns a chain. It starts with a token from `tokens`,
   * sends it to `path`, and sends the refresh_token of each 200 answer next. After any other
   * answer (or a timeout) it takes a fresh token from the pool, never reusing one that may have
   * been rotated already (reuse would revoke the session).
   */
  rotation?: { path: string; tokens: string[] };
  /** Collect refresh_token of 200 answers (sign_in: feeds the rotation scenario). */
  harvestRefreshTokens?: boolean;
  /** Seconds without an answer before autocannon counts a timeout and reconnects. */
  timeoutSec?: number;
  /** For fireInChild: "polite" runs firePolite (clients honour Retry-After) instead of autocannon. */
  generator?: "autocannon" | "polite";
}

export interface ShotResult {
  name: string;
  connections: number;
  /** Measured window (s). */
  seconds: number;
  responses: number;
  reqPerSec: number;
  /** 2xx answers per second. */
  okPerSec: number;
  p50: number;
  p99: number;
  max: number;
  /** Latency of 2xx answers only. */
  okP50: number;
  okP99: number;
  status: Record<string, number>;
  timeouts: number;
  socketErrors: number;
  errorSample?: string;
  /** 503 answers, and how many of them carried Retry-After and PostgREST's error body. */
  overload: { count: number; wellFormed: number };
  /** Response headers seen on the first 2xx answer (e.g. X-Cache). */
  sampleHeaders?: Record<string, string>;
  harvested: string[];
  /** Rotation: chains that had to start over from the pool, and whether the pool ran dry. */
  rotation?: { restarts: number; poolLeft: number; poolEmpty: number };
}

/** Count of answers that are not 2xx plus timeouts and socket errors. */
export function errorCount(r: ShotResult): number {
  let n = r.timeouts + r.socketErrors;
  for (const [status, count] of Object.entries(r.status)) if (!status.startsWith("2")) n += count;
  return n;
}

/** "0" or e.g. "503×1200 (Retry-After ✓), timeouts 3, socket 1 (ECONNRESET)". */
export function describeErrors(r: ShotResult): string {
  const parts: string[] = [];
  for (const [status, count] of Object.entries(r.status).sort()) {
    if (status.startsWith("2")) continue;
    let part = `${status}×${count}`;
    if (status === "503") part += r.overload.wellFormed === r.overload.count ? " (Retry-After ✓)" : ` (Retry-After on ${r.overload.wellFormed})`;
    parts.push(part);
  }
  if (r.timeouts) parts.push(`timeouts ${r.timeouts}`);
  if (r.socketErrors) parts.push(`socket ${r.socketErrors}${r.errorSample ? ` (${r.errorSample.slice(0, 40)})` : ""}`);
  return parts.length ? parts.join(", ") : "0";
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

class Latencies {
  private values = new Float64Array(1 << 14);
  length = 0;
  push(v: number) {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = v;
  }
  sorted(): Float64Array {
    return this.values.slice(0, this.length).sort();
  }
}

/** Runs one scenario; `onSecond` (optional) gets per-second progress for long runs (soak). */
export interface FireHooks {
  /** Every minute of the measured window (soak). */
  onMinute?: (w: { responses: number; errors: number; p99: number }) => void;
  /** When the warm-up ends and when the measured window ends (e.g. CPU snapshots). */
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
  /** A load-generator process was started (its CPU counts as the generator's). */
  onSpawn?: (pid: number) => void;
}

export async function fire(spec: ShotSpec, hooks: FireHooks = {}): Promise<ShotResult> {
  const onWindow = hooks.onMinute;
  const all = new Latencies();
  const ok = new Latencies();
  const status: Record<string, number> = {};
  let timeouts = 0;
  let socketErrors = 0;
  let errorSample: string | undefined;
  const overload = { count: 0, wellFormed: 0 };
  const harvested: string[] = [];
  let sampleHeaders: Record<string, string> | undefined;
  let measuring = false;
  let windowStart = 0;
  let windowEnd = 0;

  // Per-window progress (soak): answers and p99 of the last interval.
  let interval = new Latencies();
  let intervalErrors = 0;

  const onAnswer = (statusCode: number, body: string, rawHeaders: Record<string, unknown>) => {
    if (!measuring) return;
    const headers = Object.fromEntries(Object.entries(rawHeaders).map(([k, v]) => [k.toLowerCase(), v]));
    if (statusCode === 503) {
      overload.count++;
      if (headers["retry-after"] !== undefined && body.includes('"code"') && body.includes('"message"')) overload.wellFormed++;
    }
    if (!sampleHeaders && statusCode >= 200 && statusCode < 300) {
      sampleHeaders = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, String(v)]));
    }
  };

  const rotation = spec.rotation;
  const pool = rotation ? [...rotation.tokens] : [];
  const rotationStats = { restarts: 0, poolEmpty: 0 };
  // autocannon builds a connection's next request synchronously right after handing the
  // previous answer to onResponse (same call stack), so the new token passes through here.
  let handoff: string | undefined;

  const requests = rotation
    ? [
        {
          method: "POST" as const,
          path: rotation.path,
          headers: { "content-type": "application/json" },
          setupRequest(request: Record<string, unknown>) {
            let token = handoff;
            handoff = undefined;
            if (!token) {
              token = pool.pop();
              rotationStats.restarts++;
              if (!token) {
                rotationStats.poolEmpty++;
                token = "pool-exhausted";
              }
            }
            request.body = JSON.stringify({ refresh_token: token });
            return request;
          },
          onResponse(statusCode: number, body: string, _context: unknown, headers: Record<string, unknown>) {
            onAnswer(statusCode, body, headers);
            if (statusCode === 200) {
              try {
                handoff = (JSON.parse(body) as { refresh_token?: string }).refresh_token;
              } catch {
                handoff = undefined;
              }
            } else {
              handoff = undefined;
            }
          },
        },
      ]
    : spec.requests.map((r) => ({
        method: r.method ?? "GET",
        path: r.path,
        headers: { ...(r.body !== undefined ? { "content-type": "application/json" } : {}), ...r.headers },
        body: r.body,
        onResponse(statusCode: number, body: string, _context: unknown, headers: Record<string, unknown>) {
          onAnswer(statusCode, body, headers);
          if (spec.harvestRefreshTokens && statusCode === 200) {
            try {
              const token = (JSON.parse(body) as { refresh_token?: string }).refresh_token;
              if (token) harvested.push(token);
            } catch {}
          }
        },
      }));

  // Without a callback autocannon returns its instance, an event emitter that is also a promise.
  const instance = autocannon({
    url: spec.url,
    connections: spec.connections,
    duration: spec.warmupSec + spec.durationSec,
    timeout: spec.timeoutSec ?? 10,
    pipelining: 1,
    requests: requests as never,
  }) as unknown as Promise<autocannon.Result> & EventEmitter;
  instance.on("response", (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    if (!measuring) return;
    const key = String(statusCode);
    status[key] = (status[key] ?? 0) + 1;
    all.push(responseTime);
    interval.push(responseTime);
    if (statusCode >= 200 && statusCode < 300) ok.push(responseTime);
    else intervalErrors++;
  });
  instance.on("reqError", (error: Error) => {
    if (!measuring) return;
    intervalErrors++;
    if (error.message === "request timed out") timeouts++;
    else {
      socketErrors++;
      errorSample ??= (error as { code?: string }).code ?? error.message;
    }
  });

  // The per-minute ticker starts with the measured window: started with the warm-up, its first
  // "minute" held only the part of a minute after the warm-up (the soak's minute 1 read half).
  let ticker: ReturnType<typeof setInterval> | undefined;
  const warm = setTimeout(() => {
    measuring = true;
    windowStart = performance.now();
    interval = new Latencies();
    intervalErrors = 0;
    hooks.onMeasureStart?.();
    if (onWindow) {
      ticker = setInterval(() => {
        const s = interval.sorted();
        onWindow({ responses: s.length, errors: intervalErrors, p99: percentile(s, 0.99) });
        interval = new Latencies();
        intervalErrors = 0;
      }, 60_000);
    }
  }, spec.warmupSec * 1000);
  await instance;
  windowEnd = performance.now();
  hooks.onMeasureEnd?.();
  clearTimeout(warm);
  if (ticker) clearInterval(ticker);
  if (!measuring) windowStart = windowEnd;

  const seconds = Math.max(0.001, (windowEnd - windowStart) / 1000);
  return {
    name: spec.name,
    connections: spec.connections,
    ...latencySummary(all, ok, seconds),
    status,
    timeouts,
    socketErrors,
    errorSample,
    overload,
    sampleHeaders,
    harvested,
    rotation: rotation ? { ...rotationStats, poolLeft: pool.length } : undefined,
  };
}

/** Throughput and latency percentiles of one measured window (all answers, and the 2xx ones). */
function latencySummary(all: Latencies, ok: Latencies, seconds: number) {
  const sortedAll = all.sorted();
  const sortedOk = ok.sorted();
  return {
    seconds,
    responses: all.length,
    reqPerSec: all.length / seconds,
    okPerSec: ok.length / seconds,
    p50: percentile(sortedAll, 0.5),
    p99: percentile(sortedAll, 0.99),
    max: sortedAll.length ? sortedAll[sortedAll.length - 1]! : NaN,
    okP50: percentile(sortedOk, 0.5),
    okP99: percentile(sortedOk, 0.99),
  };
}

/**
 * The same scenario with clients that behave like our front end: a connection that gets 503
 * waits for its Retry-After (±25 % jitter) before trying again. Used for sign-in throughput,
 * where autocannon's clients, which retry at once, turn every refused sign-in into a storm of
 * 503s that takes the cores bcrypt needs. fetch() with keep-alive: at a few requests per
 * second the load generator's own efficiency does not matter.
 */
export async function firePolite(spec: ShotSpec, hooks: FireHooks = {}): Promise<ShotResult> {
  const all = new Latencies();
  const ok = new Latencies();
  const status: Record<string, number> = {};
  const overload = { count: 0, wellFormed: 0 };
  const harvested: string[] = [];
  let socketErrors = 0;
  let errorSample: string | undefined;
  const began = performance.now();
  const measureFrom = began + spec.warmupSec * 1000;
  const end = measureFrom + spec.durationSec * 1000;
  let next = 0;
  const worker = async () => {
    while (performance.now() < end) {
      const r = spec.requests[next++ % spec.requests.length]!;
      const start = performance.now();
      let wait = 0;
      try {
        const res = await fetch(spec.url + r.path, {
          method: r.method ?? "GET",
          headers: { ...(r.body !== undefined ? { "content-type": "application/json" } : {}), ...r.headers },
          body: r.body,
          signal: AbortSignal.timeout((spec.timeoutSec ?? 10) * 1000),
        });
        const body = await res.text();
        const done = performance.now();
        if (res.status === 503) wait = Number(res.headers.get("retry-after") ?? 1) * 1000 * (0.75 + Math.random() / 2);
        if (res.status === 200 && spec.harvestRefreshTokens) {
          const token = (JSON.parse(body) as { refresh_token?: string }).refresh_token;
          if (token) harvested.push(token);
        }
        // Counted by completion time, like autocannon's answers: a closed loop's throughput is
        // what completes inside the window.
        if (done >= measureFrom && done <= end) {
          status[res.status] = (status[res.status] ?? 0) + 1;
          all.push(done - start);
          if (res.ok) ok.push(done - start);
          if (res.status === 503) {
            overload.count++;
            if (res.headers.get("retry-after") !== null && body.includes('"code"')) overload.wellFormed++;
          }
        }
      } catch (error) {
        if (performance.now() >= measureFrom) {
          socketErrors++;
          errorSample ??= error instanceof Error ? error.name : String(error);
        }
        wait = 100;
      }
      if (wait) await Bun.sleep(Math.min(wait, Math.max(0, end - performance.now())));
    }
  };
  const startHook = setTimeout(() => hooks.onMeasureStart?.(), spec.warmupSec * 1000);
  await Promise.all(Array.from({ length: spec.connections }, worker));
  clearTimeout(startHook);
  hooks.onMeasureEnd?.();
  return {
    name: spec.name,
    connections: spec.connections,
    ...latencySummary(all, ok, spec.durationSec),
    status,
    timeouts: 0,
    socketErrors,
    errorSample,
    overload,
    harvested,
  };
}

/** Runs `spec` in a separate Bun process (its own event loop and core time). */
export async function fireInChild(spec: ShotSpec, onPid?: (pid: number) => void): Promise<ShotResult> {
  const child = Bun.spawn(["bun", import.meta.path, JSON.stringify(spec)], { stdout: "pipe", stderr: "pipe" });
  onPid?.(child.pid);
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) throw new Error(`load generator process failed (${code}): ${err.slice(-2000)}`);
  return JSON.parse(out) as ShotResult;
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "{}") as ShotSpec;
  const result = spec.generator === "polite" ? await firePolite(spec) : await fire(spec);
  process.stdout.write(JSON.stringify(result));
}
