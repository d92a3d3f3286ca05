/** A scan job as a worker sees it when it starts an attempt. */
export interface ScanJob {
  id: string;
  tenantId: string;
  framework: string;
  options: Record<string, unknown>;
  requestedBy: string | null;
  /** 1 for the first attempt; higher when a previous attempt failed or its worker died. */
  attempt: number;
  maxAttempts: number;
  /** The tenant's rules of the framework, in display order: what the scanner checks. */
  rules: { key: string; title: string; severity: string }[];
}

export interface ScanFinding {
  rule: string;
  result: "pass" | "fail" | "not_tested";
  priority?: "low" | "medium" | "high" | "critical";
  evidence?: Record<string, unknown> | unknown[];
}

export interface ScanJobResult {
  /** Recorded as a completed scan of the job's tenant, in the transaction that finishes the job. */
  findings?: ScanFinding[];
  startedAt?: Date;
}

export interface ScanJobContext {
  /** Aborted when this attempt lost its lease (another worker took the job over) or the worker stops. */
  signal: AbortSignal;
}

/**
 * The scanner seam. The scanner itself is another AutoAudit component; the worker only needs
 * something that turns a job into findings. Throwing fails the attempt: a PermanentJobError
 * fails the job, anything else retries it while attempts remain.
 */
export interface ScanJobHandler {
  handle(job: ScanJob, context: ScanJobContext): Promise<ScanJobResult>;
}

/** Thrown by a handler when retrying cannot help (bad options, tenant gone, …). */
export class PermanentJobError extends Error {
  override readonly name = "PermanentJobError";
}
