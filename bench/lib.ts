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
}

export interface MeasureOptions {
  concurrency: number;
  durationMs?: number;
  warmupMs?: number;
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
  const { latencies, errors, elapsed } = await run(durationMs, true);
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, reqPerSec: (latencies.length / elapsed) * 1000, p50: at(0.5), p99: at(0.99) };
}

export function ratio(a: Measurement, b: Measurement): number {
  return a.reqPerSec / b.reqPerSec;
}

export function formatTable(rows: BenchRow[]): string {
  const header = ["group", "scenario", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "note"];
  const body = rows.map((r) => [
    r.group,
    r.name,
    String(r.concurrency),
    r.reqPerSec.toFixed(0),
    r.p50.toFixed(2),
    r.p99.toFixed(2),
    String(r.errors),
    r.note ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
}
