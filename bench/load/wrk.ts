/**
 * One load scenario with wrk (Debian's `wrk`, a C load generator): same closed loop as
 * autocannon (keep-alive connections, one request in flight each), at a small fraction of its
 * CPU. On two shared cores the generator's own CPU is taken from the server: autocannon under Bun
 * costs about 0.09 ms per request, wrk a few microseconds. Used for the scenarios that replay
 * fixed requests; autocannon keeps the ones that react to answers (token chains, Retry-After).
 *
 * wrk runs twice: the warm-up, then the measured window. A Lua script cycles through the
 * requests and counts answers by status (and whether each 503 carried Retry-After and an error
 * body); the result is reported as a ShotResult like autocannon's.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FireHooks, ShotResult, ShotSpec } from "./cannon";

/** Whether wrk is installed (`apt-get install -y wrk`). */
export function wrkAvailable(): boolean {
  return Bun.which("wrk") !== null;
}

/** Whether the fixed-request scenarios run under wrk: installed, and not LOAD_GENERATOR=autocannon. */
export function wrkChosen(): boolean {
  return process.env.LOAD_GENERATOR !== "autocannon" && wrkAvailable();
}

/** Scenarios wrk can run: fixed requests, no reaction to answers. */
export function wrkCanRun(spec: ShotSpec): boolean {
  return !spec.rotation && !spec.harvestRefreshTokens && spec.generator !== "polite";
}

const lua = (s: string) => JSON.stringify(s); // a JSON string is a valid Lua string literal here (no \u escapes in our input)

function script(spec: ShotSpec): string {
  const requests = spec.requests.map((r) => {
    const headers = Object.entries({ ...(r.body !== undefined ? { "Content-Type": "application/json" } : {}), ...(r.headers ?? {}) })
      .map(([k, v]) => `[${lua(k)}] = ${lua(v)}`)
      .join(", ");
    return `wrk.format(${lua(r.method ?? "GET")}, ${lua(r.path)}, { ${headers} }${r.body !== undefined ? `, ${lua(r.body)}` : ""})`;
  });
  return `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  requests = { ${requests.join(",\n    ")} }
  n = 0
  statuses = {}
  overload = 0
  wellformed = 0
  sample = ""
end
function request()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status == 503 then
    overload = overload + 1
    if (headers["Retry-After"] or headers["retry-after"]) and body and string.find(body, '"code"', 1, true) then wellformed = wellformed + 1 end
  end
  if sample == "" and status >= 200 and status < 300 then
    local xc = headers["X-Cache"] or headers["x-cache"]
    sample = xc and ("x-cache=" .. xc) or "-"
  end
end
function done(summary, latency, requests)
  local counts, o, w, s = {}, 0, 0, ""
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do counts[k] = (counts[k] or 0) + v end
    o = o + t:get("overload")
    w = w + t:get("wellformed")
    if s == "" then s = t:get("sample") end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', k, v)) end
  io.write(string.format('WRK_RESULT {"duration_us":%d,"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50":%d,"p99":%d,"max":%d,"overload":%d,"wellformed":%d,"sample":"%s","status":{%s}}\\n',
    summary.duration, summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, o, w, s, table.concat(parts, ",")))
end
`;
}

interface WrkOutput {
  duration_us: number;
  requests: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  p50: number;
  p99: number;
  max: number;
  overload: number;
  wellformed: number;
  sample: string;
  status: Record<string, number>;
}

async function runWrk(spec: ShotSpec, seconds: number, scriptPath: string, onSpawn?: (pid: number) => void): Promise<WrkOutput> {
  const child = Bun.spawn(
    ["wrk", "-t1", `-c${spec.connections}`, `-d${seconds}s`, `--timeout`, `${spec.timeoutSec ?? 10}s`, "-s", scriptPath, spec.url],
    { stdout: "pipe", stderr: "pipe" },
  );
  onSpawn?.(child.pid);
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  const line = out.split("\n").find((l) => l.startsWith("WRK_RESULT "));
  if (code !== 0 || !line) throw new Error(`wrk failed (${code}): ${(err || out).slice(-2000)}`);
  return JSON.parse(line.slice("WRK_RESULT ".length)) as WrkOutput;
}

export async function fireWrk(spec: ShotSpec, hooks: FireHooks = {}): Promise<ShotResult> {
  const dir = mkdtempSync(join(tmpdir(), "autoaudit-wrk-"));
  try {
    const scriptPath = join(dir, "scenario.lua");
    writeFileSync(scriptPath, script(spec));
    if (spec.warmupSec > 0) await runWrk(spec, spec.warmupSec, scriptPath, hooks.onSpawn);
    hooks.onMeasureStart?.();
    const w = await runWrk(spec, spec.durationSec, scriptPath, hooks.onSpawn);
    hooks.onMeasureEnd?.();
    const seconds = w.duration_us / 1e6;
    const responses = Object.values(w.status).reduce((a, b) => a + b, 0);
    const ok = Object.entries(w.status).reduce((a, [s, n]) => a + (s.startsWith("2") ? n : 0), 0);
    const allOk = ok === responses;
    return {
      name: spec.name,
      connections: spec.connections,
      seconds,
      responses,
      reqPerSec: responses / seconds,
      okPerSec: ok / seconds,
      p50: w.p50 / 1000,
      p99: w.p99 / 1000,
      max: w.max / 1000,
      // wrk's histogram covers every answer; with only 2xx answers that is the 2xx latency.
      okP50: allOk ? w.p50 / 1000 : NaN,
      okP99: allOk ? w.p99 / 1000 : NaN,
      status: w.status,
      timeouts: w.timeout,
      socketErrors: w.connect + w.read + w.write,
      errorSample: w.connect + w.read + w.write > 0 ? `connect ${w.connect}, read ${w.read}, write ${w.write}` : undefined,
      overload: { count: w.overload, wellFormed: w.wellformed },
      sampleHeaders: w.sample.startsWith("x-cache=") ? { "x-cache": w.sample.slice("x-cache=".length) } : undefined,
      harvested: [],
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
