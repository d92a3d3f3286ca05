import type postgres from "postgres";
import type { ScanFinding, ScanJob } from "./types";

/**
 * The worker's view of compliance.scan_jobs: thin wrappers over the SQL functions that hold the
 * queue's rules (conditional updates with a lease), so the guarantees live in one place.
 */
export type StartOutcome =
  | { outcome: "started"; lease: string; job: ScanJob }
  | { outcome: "busy" | "finished" | "missing" };

interface JobRow {
  id: string;
  tenant_id: string;
  framework: string;
  options: Record<string, unknown>;
  requested_by: string | null;
  attempts: number;
  max_attempts: number;
}

const seconds = (ms: number) => `${Math.max(ms, 1) / 1000} seconds`;

export class JobStore {
  constructor(private readonly sql: postgres.Sql) {}

  async start(jobId: string, worker: string, staleAfterMs: number): Promise<StartOutcome> {
    const [row] = await this.sql`select compliance.start_scan_job(${jobId}::uuid, ${worker}, ${seconds(staleAfterMs)}::interval) as r`;
    const r = row!.r as { outcome: string; lease?: string; job?: JobRow; rules?: ScanJob["rules"] };
    if (r.outcome !== "started") return { outcome: r.outcome as "busy" | "finished" | "missing" };
    const j = r.job!;
    return {
      outcome: "started",
      lease: r.lease!,
      job: {
        id: j.id,
        tenantId: j.tenant_id,
        framework: j.framework,
        options: j.options,
        requestedBy: j.requested_by,
        attempt: j.attempts,
        maxAttempts: j.max_attempts,
        rules: r.rules ?? [],
      },
    };
  }

  async heartbeat(jobId: string, lease: string): Promise<boolean> {
    const [row] = await this.sql`select compliance.heartbeat_scan_job(${jobId}::uuid, ${lease}::uuid) as ok`;
    return row!.ok === true;
  }

  /** True when this call finished the job; false when the lease was no longer current. */
  async finish(jobId: string, lease: string, findings: ScanFinding[] | undefined, startedAt: Date | undefined): Promise<{ finished: boolean; scanId: string | null }> {
    const [row] = await this.sql`
      select compliance.finish_scan_job(${jobId}::uuid, ${lease}::uuid,
                                        ${findings ? this.sql.json(findings as unknown as postgres.JSONValue) : null}::jsonb,
                                        ${startedAt ? startedAt.toISOString() : null}::timestamptz) as j`;
    const job = row!.j as { scan_id: string | null } | null;
    return { finished: job !== null, scanId: job?.scan_id ?? null };
  }

  /** The job's new status (queued for a retry, or failed), or null when the lease was lost. */
  async fail(jobId: string, lease: string, reason: string, retry: boolean): Promise<string | null> {
    const [row] = await this.sql`select compliance.fail_scan_job(${jobId}::uuid, ${lease}::uuid, ${reason.slice(0, 2000)}, ${retry}) as s`;
    return (row!.s as string | null) ?? null;
  }

  async requeueStale(staleAfterMs: number, republishAfterMs: number): Promise<number> {
    const [row] = await this.sql`select compliance.requeue_stale_jobs(${seconds(staleAfterMs)}::interval, ${seconds(republishAfterMs)}::interval) as n`;
    return Number(row!.n);
  }
}
