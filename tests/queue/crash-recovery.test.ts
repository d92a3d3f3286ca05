import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { JobStore } from "../../api/src/queue/jobs-db";
import { OutboxRelay } from "../../api/src/queue/relay";
import { SimulatedScanHandler } from "../../api/src/queue/simulated-handler";
import { SCAN_JOB_GROUP } from "../../api/src/queue/stream";
import { ScanWorker } from "../../api/src/queue/worker";
import { startRedisServer } from "../../api/src/stack/redis-server";
import { testStack } from "../support/stack";
import { adminSql, fastFailRedis, jobRow, pendingCount, queueTenant, requestScan, testStream, waitFor, waitForJobStatus } from "./support";

const ROOT = resolve(import.meta.dir, "../..");
const sql = adminSql();
const scratch = mkdtempSync(join(tmpdir(), "autoaudit-queue-"));
afterAll(async () => {
  await sql.end();
  rmSync(scratch, { recursive: true, force: true });
});

// These tests start workers and Redis servers of their own; against an external stack its
// own worker would compete for the jobs, so they only run on the embedded one.
const embedded = !testStack().external;

function spawnWorker(name: string, stream: string, mode: "block" | "complete", logFile: string) {
  const proc = Bun.spawn(["bun", "api/src/cli/worker.ts"], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: testStack().databaseUrl,
      REDIS_URL: testStack().redisUrl,
      SCAN_JOB_STREAM: stream,
      SCAN_JOB_HANDLER: "tests/queue/fixtures/test-handler.ts",
      SCAN_WORKER_NAME: name,
      SCAN_JOB_CLAIM_IDLE_MS: "700",
      SCAN_JOB_HEARTBEAT_MS: "100",
      QUEUE_TEST_MODE: mode,
      QUEUE_TEST_LOG: logFile,
    },
    stdout: "pipe",
    stderr: "inherit",
  });
  // Drained as it comes, so a chatty worker never blocks on a full pipe.
  const output = new Response(proc.stdout as ReadableStream).text();
  return Object.assign(proc, { output: () => output });
}

const logLines = (file: string) => {
  try {
    return readFileSync(file, "utf8").trim().split("\n").filter(Boolean);
  } catch {
    return [];
  }
};

describe.if(embedded)("scan-job queue guarantees", () => {
  test("a worker killed with SIGKILL mid-job: another worker reclaims it and finishes it exactly once", async () => {
    const t = await queueTenant("queue-crash");
    const stream = testStream();
    const logFile = join(scratch, "crash.log");
    const redis = fastFailRedis(testStack().redisUrl);

    const a = spawnWorker("worker-a", stream, "block", logFile);
    let b: ReturnType<typeof spawnWorker> | undefined;
    try {
      const jobId = await requestScan(t, { block: true });
      // A has the job and its handler is blocked inside it.
      const running = await waitFor("worker A to be running the job", async () => {
        const row = await jobRow(sql, jobId);
        return row.status === "running" && row.worker === "worker-a" && logLines(logFile).includes(`started ${jobId} 1 worker-a`) ? row : null;
      });
      const lostLease = running.lease as string;

      a.kill("SIGKILL");
      await a.exited;
      expect(a.signalCode).toBe("SIGKILL");
      expect((await jobRow(sql, jobId)).status).toBe("running");
      expect(await pendingCount(redis, stream, SCAN_JOB_GROUP)).toBe(1);

      b = spawnWorker("worker-b", stream, "complete", logFile);
      const done = await waitForJobStatus(sql, jobId, "done", "worker B to finish the job");
      expect(done).toMatchObject({ attempts: 2, worker: "worker-b", lease: null, error: null });
      expect(done.scan_id).not.toBeNull();

      // Exactly once: one completion, one scan, and the dead worker's lease can no longer finish or fail it.
      const lines = logLines(logFile).filter((l) => l.includes(jobId));
      expect(lines).toEqual([`started ${jobId} 1 worker-a`, `started ${jobId} 2 worker-b`, `completed ${jobId} 2 worker-b`]);
      expect((await sql`select count(*)::int as n from compliance.scans where tenant_id = ${t.tenantId}`)[0]!.n).toBe(1);
      const store = new JobStore(sql);
      expect(await store.finish(jobId, lostLease, [{ rule: "1.1.1", result: "fail" }], undefined)).toEqual({ finished: false, scanId: null });
      expect(await store.fail(jobId, lostLease, "zombie", true)).toBeNull();
      expect(await jobRow(sql, jobId)).toEqual(done);
      expect((await sql`select count(*)::int as n from compliance.scans where tenant_id = ${t.tenantId}`)[0]!.n).toBe(1);
      await waitFor("the reclaimed entry to be acknowledged", async () => (await pendingCount(redis, stream, SCAN_JOB_GROUP)) === 0);

      // A graceful stop exits 0; the CLI ran as the least-privileged scan_worker role.
      b.kill("SIGTERM");
      expect(await b.exited).toBe(0);
      const output = await b.output();
      expect(output).toContain('"event":"scan_worker_started"');
      expect(output).toContain('"db_role":"scan_worker"');
    } finally {
      a.kill("SIGKILL");
      b?.kill("SIGKILL");
      redis.disconnect();
    }
  }, 60_000);

  test("Redis down when a scan is requested: the job waits in Postgres and runs when Redis returns", async () => {
    const t = await queueTenant("queue-redis-down");
    const stream = testStream();
    let server = await startRedisServer();
    const port = server.port;
    const redis = fastFailRedis(server.url);
    const relay = new OutboxRelay({ sql, redis, stream, pollMs: 100 });
    const worker = new ScanWorker({ sql, redisUrl: server.url, handler: new SimulatedScanHandler(), stream, claimIdleMs: 2000, heartbeatMs: 100, blockMs: 200 });
    try {
      await relay.start();
      worker.start();
      await server.stop();

      const jobId = await requestScan(t);
      expect(await relay.flush()).toBe(0);
      await Bun.sleep(300);
      expect(await jobRow(sql, jobId)).toMatchObject({ status: "queued", published_at: null, attempts: 0 });

      server = await startRedisServer({ port });
      const done = await waitForJobStatus(sql, jobId, "done", "the job to run after Redis returned");
      expect(done.attempts).toBe(1);
      expect(done.published_at).not.toBeNull();
      expect(done.scan_id).not.toBeNull();
    } finally {
      await worker.stop();
      await relay.stop();
      redis.disconnect();
      await server.stop();
    }
  }, 60_000);

  test("a running job whose stream entry was lost (Redis restarted empty) is requeued by the sweep and finished", async () => {
    const t = await queueTenant("queue-lost-entry");
    const stream = testStream();
    const jobId = await requestScan(t);
    // A worker took the job and died, and Redis lost the entry with it: only Postgres remembers.
    await sql`select compliance.mark_job_published(${jobId}::uuid, '1-1')`;
    const store = new JobStore(sql);
    const started = await store.start(jobId, "vanished-worker", 60_000);
    expect(started.outcome).toBe("started");
    await sql`update compliance.scan_jobs set heartbeat_at = now() - interval '10 minutes' where id = ${jobId}`;

    const redis = fastFailRedis(testStack().redisUrl);
    const relay = new OutboxRelay({ sql, redis, stream, pollMs: 100, sweepEveryMs: 100, sweepStaleAfterMs: 60_000 });
    const worker = new ScanWorker({ sql, redisUrl: testStack().redisUrl, handler: new SimulatedScanHandler(), stream, claimIdleMs: 2000, heartbeatMs: 100, blockMs: 200 });
    try {
      await relay.start();
      worker.start();
      const done = await waitForJobStatus(sql, jobId, "done", "the requeued job to be done");
      expect(done.attempts).toBe(2);
    } finally {
      await worker.stop();
      await relay.stop();
      redis.disconnect();
    }
  }, 60_000);
});
