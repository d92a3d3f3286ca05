/**
 * `bun run bench:audit`: what the audit trail costs the hot paths. issue_token and submit_scan
 * through the API (gateway + engine) with the trail recording and switched off
 * (audit.switch.recording, the measurement-only switch of migration 20261202000600), in
 * alternating rounds of one run (on, off, off, on, …) so drift of a shared machine hits both
 * alike. Prints the rounds and, per function, req/s off ÷ on (issue #21 targets ≤ 15 % fewer
 * requests per second with the trail on). Reports only; asserts nothing.
 *
 *   bun run bench:audit                               4 rounds of 3 s per function and mode
 *   BENCH_AUDIT_ROUNDS=6 BENCH_DURATION_MS=5000 bun run bench:audit
 *   BENCH_AUDIT_CONCURRENCY=16 bun run bench:audit    callers per measurement (default 8)
 */
import postgres from "postgres";
import { formatTable, measure, type BenchRow, type Measurement } from "./lib";
import { signIn, signUpUsers, tenantWithRules } from "./load/prepare";
import { machineLine } from "./load/report";
import { startStackProcess } from "./load/stack";

const rounds = Math.max(1, Number(process.env.BENCH_AUDIT_ROUNDS ?? 4));
const concurrency = Math.max(1, Number(process.env.BENCH_AUDIT_CONCURRENCY ?? 8));
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 3000);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 500);
const say = (line: string) => console.error(`[bench:audit] ${line}`);

say("starting the embedded stack in a child process…");
const stack = await startStackProcess({ log: say });
const { apiUrl, databaseUrl } = stack.info;
const admin = postgres(databaseUrl!, { max: 1, onnotice: () => {} });
const setRecording = (on: boolean) => admin`update audit.switch set recording = ${on}`;

const post = (fn: string, body: string, token?: string) =>
  fetch(`${apiUrl}/rpc/${fn}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body,
  });

try {
  say(`preparing ${concurrency} sessions and a tenant…`);
  const emails = await signUpUsers(apiUrl, concurrency, 2);
  const sessions = await signIn(apiUrl, emails, concurrency, 2);
  // its own session: a refresh chain that went wrong would revoke the scans' session too
  const [owner] = await signIn(apiUrl, [emails[0]!], 1, 1);
  if (!owner) throw new Error("no session for submit_scan");
  const tenantId = await tenantWithRules(apiUrl, owner, 20);
  const scanBody = JSON.stringify({
    tenant_id: tenantId,
    framework: "cis-m365",
    findings: Array.from({ length: 20 }, (_, i) => ({ rule: `1.${Math.floor(i / 10)}.${i % 10}`, result: i % 3 ? "pass" : "fail", evidence: { note: "bench" } })),
  });

  // issue_token: a caller takes a free chain, presents the token its previous call got (a
  // client refreshing) and gives the chain back; no two calls hold one chain at once.
  const free = sessions.map((s) => s.refreshToken);
  const issueToken = async () => {
    const token = free.pop();
    if (!token) throw new Error("more callers than refresh chains");
    const res = await post("issue_token", JSON.stringify({ refresh_token: token }));
    if (res.status !== 200) {
      await res.arrayBuffer();
      free.push(token);
      return false;
    }
    free.push(((await res.json()) as { refresh_token: string }).refresh_token);
    return true;
  };
  const submitScan = async () => {
    const res = await post("submit_scan", scanBody, owner.accessToken);
    await res.arrayBuffer();
    return res.status === 200;
  };
  const scenarios: [string, () => Promise<boolean>][] = [["issue_token", issueToken], ["submit_scan", submitScan]];

  const rows: BenchRow[] = [];
  const totals = new Map<string, { on: Measurement[]; off: Measurement[] }>();
  for (let round = 0; round < rounds; round++) {
    for (const on of round % 2 === 0 ? [true, false] : [false, true]) {
      await setRecording(on);
      for (const [name, run] of scenarios) {
        const m = await measure({ concurrency, durationMs, warmupMs }, run);
        say(`round ${round + 1}/${rounds} ${name} trail ${on ? "on " : "off"}: ${m.reqPerSec.toFixed(0)} req/s, ${m.errors} errors`);
        rows.push({ group: "audit", name: `${name} trail ${on ? "on" : "off"} (round ${round + 1})`, concurrency, ...m });
        const t = totals.get(name) ?? { on: [], off: [] };
        (on ? t.on : t.off).push(m);
        totals.set(name, t);
      }
    }
  }
  const mean = (ms: Measurement[]) => ms.reduce((s, m) => s + m.reqPerSec, 0) / ms.length;
  console.log(`\n## bun run bench:audit — ${machineLine()}\n`);
  console.log(`${rounds} alternating rounds, ${durationMs / 1000} s per measurement after ${warmupMs / 1000} s warm-up, ${concurrency} callers, through the API.\n`);
  console.log(formatTable(rows));
  console.log("");
  for (const [name, t] of totals) {
    const on = mean(t.on);
    const off = mean(t.off);
    console.log(`${name}: trail on ${on.toFixed(0)} req/s, off ${off.toFixed(0)} req/s; on ÷ off = ${(on / off).toFixed(3)} (${((1 - on / off) * 100).toFixed(1)} % fewer with the trail)`);
  }
} finally {
  await setRecording(true).catch(() => {});
  await admin.end();
  await stack.stop();
}
