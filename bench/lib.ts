/**
 * Shared benchmark machinery: a closed-loop load of N concurrent callers for a fixed time
 * after a warm-up, and one table for every group. Benchmarks report; they never assert.
 */
export interface Measurement {
  requests: number;
  errors: number;
  reqPerSec: number;
  p50: number;
  p99: number;
}

export interface BenchRow extends Measurement {
  group: string;
  name: string;
  concurrency: number;
  /** e.g. "engine / direct SQL = 0.91" */
  note?: string;
  /** This row's req/s over its reference row's (e.g. engine ÷ direct SQL); shown in the ratio column. */
  ratio?: number;
}

/**
 * What `bun run bench` (bench/run.ts) hands every benchmark group: ONE throwaway embedded stack
 * for the whole run, started in its own process (bench/load/stack.ts). Groups must not reset
 * passwords or drop shared objects; a group that needs its own objects creates them in its own
 * schema. Everything a group starts (pools, servers) it stops before returning.
 */
export interface BenchContext {
  /** The API (gateway + embedded engine) as deployed: response cache on. */
  apiUrl: string;
  /** The same API on the same database and Redis with CACHE_TTL_SECONDS=0. */
  uncachedApiUrl?: string;
  /** Superuser URL of the migrated database (bcrypt cost 12, as in production). */
  databaseUrl: string;
  /** The login the engine uses (NOINHERIT, may switch to anon/authenticated). */
  authenticatorUrl: string;
  redisUrl?: string;
  /** The JWT secret the API and its engine share (e.g. to start a bare engine beside it). */
  jwtSecret: string;
  durationMs: number;
  warmupMs: number;
  /** Progress lines (stderr); the table is printed once, at the end. */
  log: (line: string) => void;
  /** One account with a session, made through the API on first use and shared by all groups. */
  session(): Promise<{ email: string; password: string; accessToken: string; refreshToken: string; userId: string }>;
}

/** One benchmark group: measures, returns its rows, never asserts. */
export type BenchGroup = (ctx: BenchContext) => Promise<BenchRow[]>;

export interface MeasureOptions {
  concurrency: number;
  durationMs?: number;
  warmupMs?: number;
  /** Called when the measured run starts and ends (after the warm-up), e.g. for CPU snapshots. */
  onMeasureStart?: () => void;
  onMeasureEnd?: () => void;
}

const DEFAULT_DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 4000);
const DEFAULT_WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1000);

/** Runs `call` from `concurrency` loops; a call that throws or resolves to false counts as an error. */
export async function measure(options: MeasureOptions, call: () => Promise<unknown>): Promise<Measurement> {
  const { concurrency } = options;
  const durationMs = options.durationMs ?? DEFAULT_DURATION_MS;
  const warmupMs = options.warmupMs ?? DEFAULT_WARMUP_MS;
  const run = async (ms: number, record: boolean) => {
    const latencies: number[] = [];
    let errors = 0;
    const end = performance.now() + ms;
    const loop = async () => {
      while (performance.now() < end) {
        const start = performance.now();
        try {
          if ((await call()) === false) errors++;
        } catch {
          errors++;
        }
        if (record) latencies.push(performance.now() - start);
      }
    };
    const began = performance.now();
    await Promise.all(Array.from({ length: concurrency }, loop));
    return { latencies, errors, elapsed: performance.now() - began };
  };
  if (warmupMs > 0) await run(warmupMs, false);
  options.onMeasureStart?.();
  const { latencies, errors, elapsed } = await run(durationMs, true);
  options.onMeasureEnd?.();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, reqPerSec: (latencies.length / elapsed) * 1000, p50: at(0.5), p99: at(0.99) };
}

export function ratio(a: Measurement, b: Measurement): number {
  return a.reqPerSec / b.reqPerSec;
}

export function formatTable(rows: BenchRow[]): string {
  const header = ["group", "scenario", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "ratio", "note"];
  const body = rows.map((r) => [
    r.group,
    r.name,
    String(r.concurrency),
    r.reqPerSec.toFixed(r.reqPerSec < 100 ? 1 : 0),
    r.p50.toFixed(r.p50 < 100 ? 2 : 0),
    r.p99.toFixed(r.p99 < 100 ? 2 : 0),
    String(r.errors),
    r.ratio === undefined ? "" : r.ratio.toFixed(2),
    r.note ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
}

export interface HttpLoad {
  /** Base URL (`http://127.0.0.1:port`). */
  url: string;
  connections: number;
  durationMs?: number;
  warmupMs?: number;
  /** Each connection cycles through these. */
  requests: { path: string; method?: "GET" | "POST"; headers?: Record<string, string>; body?: string }[];
}

/**
 * HTTP load with autocannon (keep-alive connections, one request in flight each); any answer
 * that is not 2xx, a timeout or a socket error counts as an error.
 */
export async function measureHttp(load: HttpLoad): Promise<Measurement> {
  const { fire, errorCount } = await import("./load/cannon");
  const r = await fire({
    name: "",
    url: load.url,
    connections: load.connections,
    durationSec: (load.durationMs ?? DEFAULT_DURATION_MS) / 1000,
    warmupSec: (load.warmupMs ?? DEFAULT_WARMUP_MS) / 1000,
    requests: load.requests,
  });
  return { requests: r.responses, errors: errorCount(r), reqPerSec: r.okPerSec, p50: r.p50, p99: r.p99 };
}
