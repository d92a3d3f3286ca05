import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { OutboxRelay } from "../../api/src/queue/relay";
import { SimulatedScanHandler } from "../../api/src/queue/simulated-handler";
import { publishJob, SCAN_JOB_GROUP } from "../../api/src/queue/stream";
import { PermanentJobError, type ScanJob, type ScanJobHandler } from "../../api/src/queue/types";
import { ScanWorker } from "../../api/src/queue/worker";
import { rpcOk } from "../compliance/support";
import { testStack } from "../support/stack";
import { adminSql, fastFailRedis, jobRow, pendingCount, queueTenant, requestScan, testStream, waitFor, waitForJobStatus } from "./support";

const sql = adminSql();
const redis = fastFailRedis(testStack().redisUrl);
const running: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop()));
});
afterAll(async () => {
  redis.disconnect();
  await sql.end();
});

function startPair(stream: string, handler: ScanJobHandler, extra: Partial<ConstructorParameters<typeof ScanWorker>[0]> = {}) {
  const relay = new OutboxRelay({ sql, redis, stream, pollMs: 100 });
  const worker = new ScanWorker({ sql, redisUrl: testStack().redisUrl, handler, stream, claimIdleMs: 2000, heartbeatMs: 100, blockMs: 200, onRequeued: () => void relay.flush(), ...extra });
  running.push(worker, relay);
  return { relay, worker };
}

describe("scan-job queue, in process", () => {
  test("request_scan → relay publishes → worker runs the handler → done with a recorded scan, entry acknowledged", async () => {
    const t = await queueTenant("queue-happy");
    const stream = testStream();
    const recorded: string[] = [];
    const { relay, worker } = startPair(stream, new SimulatedScanHandler(), { onScanRecorded: (tenant) => void recorded.push(tenant) });
    await relay.start();
    worker.start();

    const jobId = await requestScan(t);
    const done = await waitFor("the job to be done", async () => {
      const job = await rpcOk(t.admin, "scan_job", { job_id: jobId });
      return job.status === "done" ? job : null;
    });
    const scanId = done.scan_id as string;
    expect(typeof scanId).toBe("string");
    expect(done).toMatchObject({ attempts: 1, error: null });
    expect(done.published_at).not.toBeNull();
    const latest = await rpcOk(t.admin, "latest_scan", { tenant_id: t.tenantId });
    expect(latest.id).toBe(scanId);
    expect(latest.findings).toHaveLength(6);
    expect(latest.submitted_by).toBe(t.admin.id);
    // a shared database may hold other queued jobs that this relay publishes too
    expect(recorded.filter((tenant) => tenant === t.tenantId)).toEqual([t.tenantId]);
    expect(await waitFor("the entry to be acknowledged", async () => (await pendingCount(redis, stream, SCAN_JOB_GROUP)) === 0)).toBe(true);
  }, 30_000);

  test("the same job delivered twice is handled once; the duplicate entry is acknowledged", async () => {
    const t = await queueTenant("queue-dup");
    const stream = testStream();
    const jobId = await requestScan(t);
    // published by hand, twice, as a relay that crashed between XADD and its commit would
    const first = await publishJob(redis, jobId, stream);
    await publishJob(redis, jobId, stream);
    await sql`select compliance.mark_job_published(${jobId}::uuid, ${first})`;

    const calls: string[] = [];
    const { worker } = startPair(stream, {
      async handle(job: ScanJob) {
        calls.push(job.id);
        return { findings: [{ rule: "1.1.1", result: "pass" }] };
      },
    });
    worker.start();
    await waitFor("the job to be done", async () => (await jobRow(sql, jobId)).status === "done");
    await waitFor("both entries to be acknowledged", async () => (await pendingCount(redis, stream, SCAN_JOB_GROUP)) === 0 && (await redis.xlen(stream)) === 2);
    expect(calls).toEqual([jobId]);
    expect((await sql`select count(*)::int as n from compliance.scans where tenant_id = ${t.tenantId}`)[0]!.n).toBe(1);
  }, 30_000);

  test("a failing attempt goes back through the outbox and is retried; a permanent error fails the job", async () => {
    const t = await queueTenant("queue-retry");
    const stream = testStream();
    const attempts: number[] = [];
    const { relay, worker } = startPair(stream, {
      async handle(job: ScanJob) {
        attempts.push(job.attempt);
        if (job.options.permanent) throw new PermanentJobError("tenant credentials revoked");
        if (job.attempt === 1) throw new Error("Graph API timed out");
        return { findings: [{ rule: "1.1.1", result: "fail" }] };
      },
    });
    await relay.start();
    worker.start();

    const retried = await requestScan(t);
    const job = await waitForJobStatus(sql, retried, "done", "the retried job to be done");
    expect(job).toMatchObject({ attempts: 2, error: null });
    expect(attempts).toEqual([1, 2]);

    const permanent = await requestScan(t, { permanent: true });
    const failed = await waitForJobStatus(sql, permanent, "failed", "the job to fail");
    expect(failed).toMatchObject({ attempts: 1, error: "tenant credentials revoked", scan_id: null });
    await waitFor("entries to be acknowledged", async () => (await pendingCount(redis, stream, SCAN_JOB_GROUP)) === 0);
  }, 30_000);

  test("findings the database rejects fail the job without recording anything", async () => {
    const t = await queueTenant("queue-bad-findings");
    const stream = testStream();
    const { relay, worker } = startPair(stream, {
      async handle() {
        return { findings: [{ rule: "1.1.1", result: "pass" }, { rule: "no-such-rule", result: "pass" }] };
      },
    });
    await relay.start();
    worker.start();
    const jobId = await requestScan(t);
    const failed = await waitForJobStatus(sql, jobId, "failed", "the job to fail");
    expect(failed.error).toContain("findings[1] rule no-such-rule is not a rule");
    expect((await sql`select count(*)::int as n from compliance.scans where tenant_id = ${t.tenantId}`)[0]!.n).toBe(0);
  }, 30_000);

  test("an attempt over its time limit is aborted and retried, even if the handler ignores the signal", async () => {
    const t = await queueTenant("queue-timeout");
    const stream = testStream();
    const attempts: number[] = [];
    const { relay, worker } = startPair(
      stream,
      {
        async handle(job: ScanJob) {
          attempts.push(job.attempt);
          if (job.attempt === 1) await new Promise(() => {}); // hangs, deaf to its signal
          return { findings: [{ rule: "1.1.1", result: "pass" }] };
        },
      },
      { jobTimeoutMs: 300 },
    );
    await relay.start();
    worker.start();
    const jobId = await requestScan(t);
    const done = await waitForJobStatus(sql, jobId, "done", "the retried job to be done");
    expect(done.attempts).toBe(2);
    expect(attempts).toEqual([1, 2]);
  }, 30_000);

  test("the scan_worker role may run the queue functions and nothing else", async () => {
    const t = await queueTenant("queue-role");
    const jobId = await requestScan(t);
    const asWorker = (fn: (tx: any) => Promise<any>): Promise<any> =>
      sql.begin(async (tx) => {
        await tx`set local role scan_worker`;
        return fn(tx);
      });
    const started = await asWorker((tx) => tx`select compliance.start_scan_job(${jobId}::uuid, 'role-test', '1 minute') as r`);
    expect(started[0].r.outcome).toBe("started");
    const finished = await asWorker((tx) => tx`select compliance.finish_scan_job(${jobId}::uuid, ${started[0].r.lease}::uuid, '[{"rule":"1.1.1","result":"pass"}]', null) as j`);
    expect(finished[0].j.status).toBe("done");
    for (const statement of [
      "select * from compliance.scan_jobs",
      "select * from compliance.scans",
      "select * from auth.users",
      `select api.submit_scan('${t.tenantId}', 'cis-m365', '[]')`,
      `select compliance.record_scan('${t.tenantId}', 'cis-m365', '[]', null, null, null)`,
    ]) {
      const error = await asWorker((tx) => tx.unsafe(statement)).then(() => undefined, (e) => e);
      expect({ statement, code: error?.code }).toEqual({ statement, code: "42501" });
    }
  });

  test("request_scan checks its input and the caller's role", async () => {
    const t = await queueTenant("queue-input");
    const { rpc } = await import("../compliance/support");
    for (const args of [
      { tenant_id: t.tenantId, framework: "no-rules-here" },
      { tenant_id: t.tenantId, framework: "cis-m365", options: [] },
      { tenant_id: t.tenantId, framework: "cis-m365", options: { blob: "x".repeat(20_000) } },
      { tenant_id: t.tenantId, framework: null },
    ]) {
      expect((await rpc(t.admin, "request_scan", args)).status).toBe(400);
    }
  }, 30_000);
});
