import type Redis from "ioredis";

/** Where jobs are announced. Entries carry only the job id; Postgres holds the job. */
export const SCAN_JOB_STREAM = "autoaudit:scan-jobs";
export const SCAN_JOB_GROUP = "scan-workers";
/** Roughly how many entries the stream keeps (acknowledged history is trimmed away). */
export const STREAM_MAX_LENGTH = 100_000;

/** Creates the consumer group (and the stream) if missing; safe to call from every worker. */
export async function ensureConsumerGroup(redis: Redis, stream = SCAN_JOB_STREAM, group = SCAN_JOB_GROUP): Promise<void> {
  try {
    await redis.xgroup("CREATE", stream, group, "0", "MKSTREAM");
  } catch (error) {
    if (!(error instanceof Error) || !error.message.startsWith("BUSYGROUP")) throw error;
  }
}

/** XADD of one job id; returns the entry id. */
export async function publishJob(redis: Redis, jobId: string, stream = SCAN_JOB_STREAM): Promise<string> {
  const id = await redis.xadd(stream, "MAXLEN", "~", STREAM_MAX_LENGTH, "*", "job_id", jobId);
  if (!id) throw new Error("XADD returned no id");
  return id;
}

export interface StreamEntry {
  id: string;
  jobId: string | undefined;
}

/** ioredis returns entries as [id, [field, value, ...]]; deleted entries come back with null fields. */
export function parseEntries(raw: unknown): StreamEntry[] {
  if (!Array.isArray(raw)) return [];
  return raw.map((entry) => {
    const [id, fields] = entry as [string, string[] | null];
    let jobId: string | undefined;
    for (let i = 0; fields && i + 1 < fields.length; i += 2) if (fields[i] === "job_id") jobId = fields[i + 1];
    return { id, jobId };
  });
}
