/**
 * Where the CPU goes during a scenario: CPU time (user + system, from /proc) of the API process
 * (gateway + engine), its PostgreSQL processes, redis-server, and the load generator, plus the
 * whole machine (so other work on the box shows up as "other"). Linux only; elsewhere every
 * figure is undefined and the report leaves the columns out.
 */
import { readdirSync, readFileSync } from "node:fs";

const TICK_MS = 10; // USER_HZ is 100 on Linux

export interface CpuSnapshot {
  at: number;
  api: number;
  postgres: number;
  redis: number;
  loadgen: number;
  machineBusy: number;
  machineTotal: number;
}

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  ms: number;
  /** CPU ms of its children that have exited and been waited for (a finished wrk run). */
  childrenMs: number;
}

function readProcs(): Proc[] {
  const procs: Proc[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const fields = stat.slice(close + 2).split(" ");
      // fields[0] = state (field 3); utime = field 14, stime = field 15, cutime/cstime = 16/17
      procs.push({
        pid: Number(name),
        ppid: Number(fields[1]),
        comm,
        ms: (Number(fields[11]) + Number(fields[12])) * TICK_MS,
        childrenMs: (Number(fields[13]) + Number(fields[14])) * TICK_MS,
      });
    } catch {}
  }
  return procs;
}

function machine(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = line.reduce((a, b) => a + b, 0);
  const idle = (line[3] ?? 0) + (line[4] ?? 0);
  return { busy: (total - idle) * TICK_MS, total: total * TICK_MS };
}

/** CPU ms so far of the stack rooted at `apiPid` and of the load-generator processes `loadgenPids`. */
export function cpuSnapshot(apiPid: number | undefined, loadgenPids: number[] = [process.pid]): CpuSnapshot | undefined {
  try {
    const procs = readProcs();
    const children = new Map<number, Proc[]>();
    for (const p of procs) {
      const list = children.get(p.ppid);
      if (list) list.push(p);
      else children.set(p.ppid, [p]);
    }
    const snapshot: CpuSnapshot = { at: performance.now(), api: 0, postgres: 0, redis: 0, loadgen: 0, machineBusy: 0, machineTotal: 0 };
    if (apiPid) {
      const walk = (pid: number) => {
        for (const c of children.get(pid) ?? []) {
          if (c.comm.startsWith("postgres")) snapshot.postgres += c.ms;
          else if (c.comm.startsWith("redis")) snapshot.redis += c.ms;
          walk(c.pid);
        }
      };
      snapshot.api = procs.find((p) => p.pid === apiPid)?.ms ?? 0;
      walk(apiPid);
    }
    const wanted = new Set(loadgenPids);
    // A generator run as a child process (wrk) counts once it has exited, through its parent.
    for (const p of procs) if (wanted.has(p.pid)) snapshot.loadgen += p.ms + p.childrenMs;
    const m = machine();
    snapshot.machineBusy = m.busy;
    snapshot.machineTotal = m.total;
    return snapshot;
  } catch {
    return undefined;
  }
}

export interface CpuUse {
  /** CPU ms per answered request. */
  apiPerReq: number;
  postgresPerReq: number;
  redisPerReq: number;
  loadgenPerReq: number;
  /** Cores busy on average, by part and in total (the machine has `cores`). */
  apiCores: number;
  postgresCores: number;
  loadgenCores: number;
  otherCores: number;
  machineCores: number;
}

export function cpuUse(a: CpuSnapshot | undefined, b: CpuSnapshot | undefined, requests: number, cores: number): CpuUse | undefined {
  if (!a || !b || b.at <= a.at) return undefined;
  const wall = b.at - a.at;
  const d = (k: keyof CpuSnapshot) => b[k] - a[k];
  const per = (k: keyof CpuSnapshot) => (requests > 0 ? d(k) / requests : NaN);
  const machineCores = (d("machineBusy") / Math.max(1, d("machineTotal"))) * cores;
  const ours = (d("api") + d("postgres") + d("redis") + d("loadgen")) / wall;
  return {
    apiPerReq: per("api"),
    postgresPerReq: per("postgres"),
    redisPerReq: per("redis"),
    loadgenPerReq: per("loadgen"),
    apiCores: d("api") / wall,
    postgresCores: d("postgres") / wall,
    loadgenCores: d("loadgen") / wall,
    otherCores: Math.max(0, machineCores - ours),
    machineCores,
  };
}

/**
 * On a shared machine: waits (at most `maxMs`) until work outside this stack and the load
 * generator uses less than `threshold` cores for two seconds in a row. Returns the cores the
 * other work used in the last second checked.
 */
export async function waitForQuiet(apiPid: number | undefined, cores: number, maxMs: number, threshold = 0.3): Promise<number> {
  const deadline = performance.now() + maxMs;
  let calm = 0;
  let other = 0;
  let previous = cpuSnapshot(apiPid);
  while (previous && performance.now() < deadline) {
    await Bun.sleep(1000);
    const now = cpuSnapshot(apiPid);
    other = cpuUse(previous, now, 1, cores)?.otherCores ?? 0;
    previous = now;
    calm = other < threshold ? calm + 1 : 0;
    if (calm >= 2) break;
  }
  return other;
}
