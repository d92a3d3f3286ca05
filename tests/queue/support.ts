import Redis from "ioredis";
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { rpcOk, tenantWithRules, type TenantFixture } from "../compliance/support";

export { adminSql } from "../compliance/support";

/** A stream key of its own per test, so tests never see each other's entries. */
export function testStream(): string {
  return `test:scan-jobs:${randomUUID()}`;
}

/** A connection that fails fast while Redis is away, as the relay expects. */
export function fastFailRedis(url: string): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 500,
    commandTimeout: 1000,
    retryStrategy: () => 100,
  });
  redis.on("error", () => {});
  return redis;
}

export async function queueTenant(tag = "queue"): Promise<TenantFixture> {
  return tenantWithRules(tag);
}

export async function requestScan(t: TenantFixture, options: Record<string, unknown> = {}): Promise<string> {
  const job = await rpcOk<{ id: string; status: string }>(t.admin, "request_scan", { tenant_id: t.tenantId, framework: "cis-m365", options });
  return job.id;
}

export async function jobRow(sql: postgres.Sql, id: string) {
  const [row] = await sql`select * from compliance.scan_jobs where id = ${id}`;
  return row!;
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(25);
  }
}

/** Polls the job's row until its status is `status`; the row then. */
export function waitForJobStatus(sql: postgres.Sql, id: string, status: string, what: string) {
  return waitFor(what, async () => {
    const row = await jobRow(sql, id);
    return row.status === status ? row : null;
  });
}

export async function pendingCount(redis: Redis, stream: string, group: string): Promise<number> {
  const summary = (await redis.xpending(stream, group)) as [number, ...unknown[]];
  return Number(summary[0]);
}
