/** Markdown tables and the machine line for the load report (pasted into the README as is). */
import { availableParallelism, cpus, freemem, loadavg, totalmem } from "node:os";
import { readFileSync } from "node:fs";
import { describeErrors, type ShotResult } from "./cannon";
import type { Measurement } from "../lib";

export function markdownTable(header: string[], rows: string[][], alignRight: number[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (alignRight.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (alignRight.includes(i) ? "-".repeat(w + 1) + ":" : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

export const ms = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : "–");
export const rate = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : "–");

/** `generatorOf` names the load generator of each row (omitted: autocannon). */
export function scenarioRows(results: ShotResult[], generatorOf: (r: ShotResult) => string = () => "autocannon"): string[][] {
  return results.map((r) => [r.name, generatorOf(r), String(r.connections), rate(r.reqPerSec), rate(r.okPerSec), ms(r.p50), ms(r.p99), describeErrors(r)]);
}

export const SCENARIO_HEADER = ["scenario", "generator", "conns", "req/s", "2xx/s", "p50 ms", "p99 ms", "errors (non-2xx by status, timeouts, socket)"];

export interface BaselineRow {
  name: string;
  callers: number;
  m: Measurement;
  note?: string;
}

export function baselineRows(rows: BaselineRow[]): string[][] {
  return rows.map((b) => [b.name, String(b.callers), rate(b.m.reqPerSec), ms(b.m.p50), ms(b.m.p99), String(b.m.errors), b.note ?? ""]);
}

export const BASELINE_HEADER = ["direct SQL baseline", "callers", "calls/s", "p50 ms", "p99 ms", "errors", "note"];

export interface Target {
  target: string;
  measured: string;
  met: boolean | undefined;
}

export function targetRows(targets: Target[]): string[][] {
  return targets.map((t) => [t.target, t.measured, t.met === undefined ? "n/a" : t.met ? "met" : "NOT MET"]);
}

export function machineLine(): string {
  let cpu = cpus()[0]?.model ?? "unknown CPU";
  try {
    const quota = readFileSync("/sys/fs/cgroup/cpu.max", "utf8").trim();
    if (!quota.startsWith("max")) cpu += ` (cgroup cpu.max ${quota})`;
  } catch {}
  const gib = (b: number) => (b / 1024 ** 3).toFixed(1);
  return `${availableParallelism()} cores (${cpu}), ${gib(totalmem())} GiB RAM (${gib(freemem())} free), load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}, Bun ${Bun.version}, ${new Date().toISOString()}`;
}

/** Resident memory of a process in MiB (Linux /proc). */
export function rssMiB(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
    return line ? Number(line.replace(/\D+/g, "")) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
