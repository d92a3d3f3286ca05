import { createHash } from "node:crypto";
import type { ScanFinding, ScanJob, ScanJobContext, ScanJobHandler, ScanJobResult } from "./types";

/**
 * A stand-in scanner for development and tests: deterministic results per (job, rule), about
 * 70 % pass, 20 % fail, 10 % not tested. `options.delay_ms` (at most 60 s) simulates a scan's
 * duration and is cut short when the attempt is aborted.
 */
export class SimulatedScanHandler implements ScanJobHandler {
  async handle(job: ScanJob, { signal }: ScanJobContext): Promise<ScanJobResult> {
    const startedAt = new Date();
    const delay = Math.min(Math.max(Number(job.options.delay_ms) || 0, 0), 60_000);
    if (delay > 0) await abortableSleep(delay, signal);
    signal.throwIfAborted();
    const findings: ScanFinding[] = job.rules.map((rule) => {
      const roll = createHash("sha256").update(`${job.id}:${rule.key}`).digest()[0]! / 256;
      const result = roll < 0.7 ? "pass" : roll < 0.9 ? "fail" : "not_tested";
      return { rule: rule.key, result, evidence: { simulated: true } };
    });
    return { findings, startedAt };
  }
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
