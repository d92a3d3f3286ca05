/**
 * `bun run load`: the load report of issue 9. Not a test: it measures and reports, nothing
 * asserts a speed.
 *
 *   bun run load              full report (about 3–4 minutes)
 *   bun run load --quick      smoke run, a few seconds per scenario
 *   bun run load --soak       10 minutes of `me` at 64 connections: RSS, backends, errors
 *   bun run load --soak --minutes 2
 *   bun run load --duration 10 --warmup 3      seconds per scenario
 *   bun run load --log-requests                keep the API's JSON request log on (default off)
 *   bun run load --wait-quiet 30               on a shared machine: before each scenario wait (≤ 30 s)
 *                                              until other work uses < 0.3 cores
 *   API_URL=http://host:8000 [UNCACHED_API_URL=…] [DATABASE_URL=postgres://superuser@…] [API_PID=…] bun run load
 *
 * Without API_URL it starts the embedded stack (PostgreSQL, Redis, the API with the embedded
 * engine) in a child process (bench/load/stack.ts) on free loopback ports, so autocannon never
 * shares the server's event loop; everything still shares the machine's cores, as on the
 * machine the targets were set on. The API's sign-in rate limits are switched off for the run
 * (RATE_LIMIT_IP_MAX=0, RATE_LIMIT_EMAIL_MAX=0): one load generator on one address would
 * otherwise measure the limiter. bcrypt stays at cost 12.
 */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import postgres from "postgres";
import type { Measurement } from "./lib";
import { bcryptLimit, directPool, issueTokenDirect, meDirect, sqlSessions, storedHash, validateDirect, type DirectOptions } from "./load/baselines";
import { errorCount, fire, fireInChild, firePolite, type ShotRequest, type ShotResult, type ShotSpec } from "./load/cannon";
import { fireWrk, wrkCanRun, wrkChosen } from "./load/wrk";
import { cpuSnapshot, cpuUse, waitForQuiet, type CpuSnapshot, type CpuUse } from "./load/cpu";
import { signIn, signUpUsers, tenantWithRules, type Session } from "./load/prepare";
import {
  BASELINE_HEADER,
  baselineRows,
  machineLine,
  markdownTable,
  ms,
  rate,
  rssMiB,
  SCENARIO_HEADER,
  scenarioRows,
  targetRows,
  type BaselineRow,
  type Target,
} from "./load/report";
import { startStackProcess, type StackInfo, type StackProcess } from "./load/stack";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    soak: { type: "boolean", default: false },
    minutes: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "log-requests": { type: "boolean", default: false },
    "wait-quiet": { type: "string" },
  },
});

const QUICK = args.quick!;
const DURATION = Number(args.duration ?? (QUICK ? 3 : 8));
const WARMUP = Number(args.warmup ?? (QUICK ? 1 : 2));
const CORES = availableParallelism();
const WAIT_QUIET_MS = args["wait-quiet"] === undefined ? 0 : Number(args["wait-quiet"] || 30) * 1000;
const say = (line: string) => console.error(`[load] ${line}`);

// ── the stack ───────────────────────────────────────────────────────────────────────
let stackProcess: StackProcess | undefined;
let info: StackInfo;
if (process.env.API_URL) {
  const databaseUrl = process.env.DATABASE_URL;
  info = {
    apiUrl: process.env.API_URL.replace(/\/+$/, ""),
    uncachedApiUrl: process.env.UNCACHED_API_URL?.replace(/\/+$/, ""),
    databaseUrl,
    authenticatorUrl: process.env.AUTHENTICATOR_URL ?? databaseUrl,
    database: databaseUrl ? new URL(databaseUrl).pathname.slice(1) : undefined,
    apiPid: process.env.API_PID ? Number(process.env.API_PID) : undefined,
    settings: {},
  };
  say(`using API_URL=${info.apiUrl}${databaseUrl ? "" : " (no DATABASE_URL: direct-SQL baselines are skipped)"}`);
} else {
  say("starting the embedded stack in a child process…");
  stackProcess = await startStackProcess({ logRequests: args["log-requests"], log: say });
  info = stackProcess.info;
}
const api = info.apiUrl;
const stopAll = async () => {
  await stackProcess?.stop();
};
process.on("SIGINT", () => void stopAll().then(() => process.exit(130)));

const admin = info.databaseUrl ? postgres(info.databaseUrl, { max: 2, onnotice: () => {} }) : undefined;
const direct = info.authenticatorUrl ? directPool(info.authenticatorUrl) : undefined;

try {
  const machine = machineLine();
  say(machine);

  // ── preparation (through the API) ─────────────────────────────────────────────────
  const began = performance.now();
  const emails = await signUpUsers(api, QUICK ? 4 : 8, CORES);
  const sessions = await signIn(api, emails, QUICK ? 8 : 16, CORES);
  const tenantId = await tenantWithRules(api, sessions[0]!, 50);
  say(`prepared ${emails.length} accounts, ${sessions.length} sessions and a tenant with 50 rules in ${((performance.now() - began) / 1000).toFixed(1)} s`);

  const bearer = (s: Session) => ({ authorization: `Bearer ${s.accessToken}` });
  const meGet: ShotRequest[] = sessions.map((s) => ({ path: "/rpc/me", headers: bearer(s) }));
  const mePost: ShotRequest[] = sessions.map((s) => ({ path: "/rpc/me", method: "POST", headers: bearer(s), body: "{}" }));
  const signInRequests: ShotRequest[] = emails.map((email) => ({
    path: "/rpc/sign_in",
    method: "POST",
    body: JSON.stringify({ email, password: "load-test-password" }),
  }));
  const shot = (name: string, connections: number, requests: ShotRequest[], extra: Partial<ShotSpec> = {}): ShotSpec => ({
    name,
    url: api,
    connections,
    durationSec: DURATION,
    warmupSec: WARMUP,
    requests,
    ...extra,
  });

  const results: ShotResult[] = [];
  const baselines: BaselineRow[] = [];
  const cpu = new Map<ShotResult, CpuUse>();
  const baselineCpu = new Map<string, CpuUse>();
  // Each baseline records its CPU use under its row name (set just before it runs).
  let baselineName = "";
  const directOptions = (concurrency: number): DirectOptions => {
    let before: CpuSnapshot | undefined;
    const name = baselineName;
    return {
      concurrency,
      durationMs: DURATION * 1000,
      warmupMs: Math.min(WARMUP, 1) * 1000,
      onMeasureStart: () => (before = cpuSnapshot(info.apiPid, loadgenPids)),
      onMeasureEnd: () => {
        const after = cpuSnapshot(info.apiPid, loadgenPids);
        if (before && after) baselineCpu.set(name, { ...cpuUse(before, after, 1, CORES)!, apiPerReq: NaN });
      },
    };
  };
  const baseline = async (name: string, callers: number, work: (options: DirectOptions) => Promise<Measurement>, note?: string) => {
    await quiet();
    say(`direct SQL: ${name} @ ${callers} callers…`);
    baselineName = name;
    const m = await work(directOptions(callers));
    const use = baselineCpu.get(name);
    // cpuUse above counted per 1 request; scale to calls now that the count is known.
    if (use) baselineCpu.set(name, { ...use, postgresPerReq: use.postgresPerReq / m.requests, redisPerReq: use.redisPerReq / m.requests, loadgenPerReq: use.loadgenPerReq / m.requests });
    const row: BaselineRow = { name, callers, m, note };
    baselines.push(row);
    say(`  ${rate(m.reqPerSec)} calls/s, p50 ${ms(m.p50)} ms, p99 ${ms(m.p99)} ms, errors ${m.errors}`);
    return row;
  };
  const loadgenPids = [process.pid];
  const quiet = async () => {
    if (!WAIT_QUIET_MS) return;
    const other = await waitForQuiet(info.apiPid, CORES, WAIT_QUIET_MS);
    if (other >= 0.3) say(`  (other work still uses ${other.toFixed(2)} cores; going ahead)`);
  };
  // wrk for the scenarios that replay fixed requests (LOAD_GENERATOR=autocannon to compare).
  const useWrk = wrkChosen();
  if (!useWrk) say(process.env.LOAD_GENERATOR === "autocannon" ? "load generator: autocannon (LOAD_GENERATOR)" : "wrk is not installed (apt-get install -y wrk): every scenario runs with autocannon");
  const generatorFor = (spec: ShotSpec): typeof fire => (useWrk && wrkCanRun(spec) ? fireWrk : fire);
  const generatorNames = new Map<ShotResult, string>();
  const run = async (spec: ShotSpec, chosen?: typeof fire, waitQuiet = true) => {
    const generator = chosen ?? generatorFor(spec);
    if (waitQuiet) await quiet();
    say(`${spec.name} @ ${spec.connections} connections: ${spec.warmupSec} s warm-up + ${spec.durationSec} s…`);
    let before: CpuSnapshot | undefined;
    let after: CpuSnapshot | undefined;
    const r = await generator(spec, {
      onMeasureStart: () => (before = cpuSnapshot(info.apiPid, loadgenPids)),
      onMeasureEnd: () => (after = cpuSnapshot(info.apiPid, loadgenPids)),
    });
    const use = cpuUse(before, after, r.responses, CORES);
    if (use) cpu.set(r, use);
    results.push(r);
    generatorNames.set(r, generator === fireWrk ? "wrk" : "autocannon");
    say(`  ${rate(r.reqPerSec)} req/s, p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, errors ${errorCount(r)}`);
    return r;
  };

  if (args.soak) {
    await soak(meGet);
  } else {
    // ── scenarios ─────────────────────────────────────────────────────────────────────
    const probe = await fetch(`${api}/rpc/me`, { headers: bearer(sessions[0]!) });
    await probe.arrayBuffer();
    const meCache = probe.headers.get("x-cache");
    const meGetLabel = meCache ? `GET /rpc/me (X-Cache ${meCache})` : "GET /rpc/me (not cached: reaches the database)";

    const health = await run(shot("GET /health (checks PostgreSQL, Redis, engine)", 64, [{ path: "/health" }]));
    const me: Record<string, ShotResult> = {};
    for (const c of [16, 64, 256]) me[`get${c}`] = await run(shot(meGetLabel, c, meGet));
    for (const c of [16, 64, 256]) me[`post${c}`] = await run(shot("POST /rpc/me (never cached)", c, mePost));

    const claims = sessions.map((s) => JSON.parse(Buffer.from(s.accessToken.split(".")[1]!, "base64url").toString()) as Record<string, unknown>);
    if (direct) await baseline("select api.me() (role authenticated + claims, read-only tx)", 64, (o) => meDirect(direct, claims, o), `pool ${process.env.PGRST_DB_POOL ?? 10}`);

    const validatePaths = sessions.map((s) => ({ path: `/rpc/validate_token?refresh_token=${encodeURIComponent(s.refreshToken)}` }));
    const validate = await run(shot("GET /rpc/validate_token (never cached)", 64, validatePaths));
    if (direct) await baseline("select api.validate_token($1) (role anon, read-only tx)", 64, (o) => validateDirect(direct, sessions.map((s) => s.refreshToken), o));

    const rulesPath = `/rpc/list_rules?tenant_id=${tenantId}`;
    const rulesHeaders = bearer(sessions[0]!);
    const cached = await run(shot("GET /rpc/list_rules, 50 rules (cache on: X-Cache HIT)", 64, [{ path: rulesPath, headers: rulesHeaders }]));
    const uncached = info.uncachedApiUrl
      ? await run({ ...shot("GET /rpc/list_rules, 50 rules (CACHE_TTL_SECONDS=0)", 64, [{ path: rulesPath, headers: rulesHeaders }]), url: info.uncachedApiUrl })
      : undefined;

    let bcrypt: BaselineRow | undefined;
    if (admin) {
      const { hash, cost } = await storedHash(admin, emails[0]!);
      // The authenticator may not execute extensions.crypt itself (only through sign_in, a
      // SECURITY DEFINER function), so the bare loop runs as the superuser, one connection per caller.
      // The bcrypt limit is what PostgreSQL hashes with as many callers as the API admits
      // (SIGN_IN_CONCURRENCY); with fewer slots than cores, one caller per core is shown as well.
      const slots = info.signInConcurrency ?? CORES;
      const hashPool = postgres(info.databaseUrl!, { max: Math.max(CORES, slots), onnotice: () => {} });
      try {
        bcrypt = await baseline(`select crypt($1, $2) at bcrypt cost ${cost} (the bcrypt limit)`, slots, (o) => bcryptLimit(hashPool, hash, o), `one caller per admission slot (SIGN_IN_CONCURRENCY=${slots})`);
        if (slots < CORES) await baseline(`select crypt($1, $2) at bcrypt cost ${cost}, one caller per core`, CORES, (o) => bcryptLimit(hashPool, hash, o), "for comparison: every core hashing");
      } finally {
        await hashPool.end({ timeout: 2 });
      }
    }
    const signIn16 = await run(shot("POST /rpc/sign_in, clients honour Retry-After", 16, signInRequests, { harvestRefreshTokens: true }), firePolite);
    const signIn64 = await run(shot("POST /rpc/sign_in, overload: 503s retried at once", 64, signInRequests, { harvestRefreshTokens: true }));

    // Refresh tokens for the rotation chains: the sessions the sign-in scenarios just opened.
    const harvested = [...signIn16.harvested, ...signIn64.harvested];
    const needed = 64 + 16;
    if (harvested.length < needed) {
      say(`signing in ${needed - harvested.length} more sessions for the rotation chains…`);
      harvested.push(...(await signIn(api, emails, needed - harvested.length, CORES)).map((s) => s.refreshToken));
    }
    const issue = await run({
      ...shot("POST /rpc/issue_token (rotation chains)", 64, []),
      rotation: { path: "/rpc/issue_token", tokens: harvested },
    });
    if (admin && direct) {
      const tokens = await sqlSessions(admin, sessions[0]!.userId, 96);
      await baseline("select api.issue_token($1) (role anon, read-write tx)", 64, (o) => issueTokenDirect(direct, tokens, o), "each call presents the token the previous call returned");
    }

    // The audit trail's cost on the two hot writes (issue 21): the same scenarios with the trail
    // recording and switched off (audit.switch.recording, a switch for this measurement only), in
    // the order on, off, off, on so a shared machine's drift hits both alike. Fresh refresh chains
    // are made in SQL for each run; the scans go to the load tenant, whose chain they share.
    const auditRuns: { on: boolean; issue: ShotResult; scan: ShotResult }[] = [];
    if (admin) {
      const scanBody = JSON.stringify({
        tenant_id: tenantId,
        framework: "cis-m365",
        findings: Array.from({ length: 20 }, (_, i) => ({ rule: `1.${Math.floor(i / 10)}.${i % 10}`, result: i % 3 ? "pass" : "fail", evidence: { note: "load" } })),
      });
      const submit: ShotRequest[] = [{ path: "/rpc/submit_scan", method: "POST", headers: bearer(sessions[0]!), body: scanBody }];
      try {
        for (const on of [true, false, false, true]) {
          await admin`update audit.switch set recording = ${on}`;
          const trail = on ? "audit trail on" : "audit trail off";
          const tokens = await sqlSessions(admin, sessions[0]!.userId, 32);
          const issueRun = await run({ ...shot(`POST /rpc/issue_token (rotation chains), ${trail}`, 16, []), rotation: { path: "/rpc/issue_token", tokens } });
          const scanRun = await run(shot(`POST /rpc/submit_scan (20 findings, one tenant), ${trail}`, 16, submit));
          auditRuns.push({ on, issue: issueRun, scan: scanRun });
        }
      } finally {
        await admin`update audit.switch set recording = true`;
      }
    }
    const auditRatio = (pick: (r: (typeof auditRuns)[number]) => ShotResult) => {
      const mean = (on: boolean) => {
        const runs = auditRuns.filter((r) => r.on === on).map(pick);
        return runs.reduce((sum, r) => sum + r.okPerSec, 0) / runs.length;
      };
      return { on: mean(true), off: mean(false), ratio: mean(true) / mean(false) };
    };

    // request_password_reset must not tell known addresses from unknown ones, by its answer or its
    // cost: the same load on each, medians side by side (issue 20).
    const resetRequests = (addresses: string[]): ShotRequest[] =>
      addresses.map((email) => ({ path: "/rpc/request_password_reset", method: "POST", body: JSON.stringify({ email }) }));
    const resetKnown = await run(shot("POST /rpc/request_password_reset, existing addresses", 16, resetRequests(emails)));
    const resetUnknown = await run(shot("POST /rpc/request_password_reset, unknown addresses", 16, resetRequests(emails.map((e) => `nobody-${e}`))));

    // me while sign-in is saturated: the flood runs in its own process (second load generator).
    say(`GET /rpc/me @ 64 during a sign-in flood @ 64 (flood in a second load-generator process)…`);
    const floodSpec: ShotSpec = { ...shot("POST /rpc/sign_in flood, 503s retried at once (concurrent with the row above)", 64, signInRequests), warmupSec: WARMUP + 1, durationSec: DURATION + 1 };
    await quiet();
    // wrk replays the fixed sign-in requests at a few µs of CPU each, as for the other fixed
    // scenarios; one wrk process spans the whole `me` run (its warm-up included), so its CPU is
    // counted as the generator's throughout. Without wrk, autocannon floods from a second process.
    const floodWithWrk = useWrk && wrkCanRun(floodSpec);
    const flooding = floodWithWrk
      ? fireWrk({ ...floodSpec, warmupSec: 0, durationSec: floodSpec.warmupSec + floodSpec.durationSec }, { onSpawn: (pid) => loadgenPids.push(pid) })
      : fireInChild(floodSpec, (pid) => loadgenPids.push(pid));
    await Bun.sleep(1000);
    const meFlood = await run(shot(`${meGetLabel.replace(/ \(.*/, "")} during the sign-in flood`, 64, meGet), undefined, false);
    const flood = await flooding;
    loadgenPids.length = 1;
    results.push(flood);
    generatorNames.set(flood, floodWithWrk ? "wrk" : "autocannon");

    // ── report ─────────────────────────────────────────────────────────────────────────
    const directBy = (prefix: string) => baselines.find((b) => b.name.startsWith(prefix));
    const meDirectRow = directBy("select api.me");
    const validateDirectRow = directBy("select api.validate_token");
    const issueDirectRow = directBy("select api.issue_token");
    const within3 = (gateway: ShotResult, baseline?: BaselineRow): Target => {
      if (!baseline) return { target: "", measured: "no DATABASE_URL", met: undefined };
      const factor = baseline.m.reqPerSec / gateway.okPerSec;
      return { target: "", measured: `${rate(gateway.okPerSec)} vs ${rate(baseline.m.reqPerSec)} calls/s direct: direct is ${factor.toFixed(2)}× the gateway`, met: factor <= 3 };
    };
    const nonOverloadErrors = (r: ShotResult) => errorCount(r) - (r.status["503"] ?? 0);
    const targets: Target[] = [
      { target: "me @ 64 conns ≥ 2,800 req/s (GET)", measured: `${rate(me.get64!.okPerSec)} req/s (POST: ${rate(me.post64!.okPerSec)})`, met: me.get64!.okPerSec >= 2800 },
      { target: "me @ 64 conns p99 ≤ 70 ms (GET)", measured: `${ms(me.get64!.p99)} ms (POST: ${ms(me.post64!.p99)} ms)`, met: me.get64!.p99 <= 70 },
      {
        target: "me: 0 errors at 64 and 256 conns (GET and POST)",
        measured: ["get64", "get256", "post64", "post256"].map((k) => errorCount(me[k]!)).join(" / ") + " (GET 64 / GET 256 / POST 64 / POST 256)",
        met: ["get64", "get256", "post64", "post256"].every((k) => errorCount(me[k]!) === 0),
      },
      bcrypt
        ? { target: "sign_in @ 16 ≥ 90 % of the bcrypt limit", measured: `${rate(signIn16.okPerSec)} / ${rate(bcrypt.m.reqPerSec)} = ${((signIn16.okPerSec / bcrypt.m.reqPerSec) * 100).toFixed(0)} %`, met: signIn16.okPerSec >= 0.9 * bcrypt.m.reqPerSec }
        : { target: "sign_in ≥ 90 % of the bcrypt limit", measured: "no DATABASE_URL", met: undefined },
      {
        target: "sign_in overload @ 64: p99 ≤ 2 s, excess answered 503 + Retry-After",
        measured: `p99 ${ms(signIn64.p99)} ms (2xx p99 ${ms(signIn64.okP99)} ms), ${signIn64.overload.count} × 503 of which ${signIn64.overload.wellFormed} with Retry-After + error body, other errors ${nonOverloadErrors(signIn64)}`,
        met: signIn64.p99 <= 2000 && signIn64.overload.wellFormed === signIn64.overload.count && nonOverloadErrors(signIn64) === 0,
      },
      { target: "me p99 ≤ 100 ms during the sign-in flood", measured: `${ms(meFlood.p99)} ms, ${rate(meFlood.okPerSec)} req/s, errors ${errorCount(meFlood)}`, met: meFlood.p99 <= 100 && errorCount(meFlood) === 0 },
      {
        target: "request_password_reset: same answers for existing and unknown addresses, medians side by side",
        measured: `p50 ${ms(resetKnown.p50)} vs ${ms(resetUnknown.p50)} ms, ${rate(resetKnown.okPerSec)} vs ${rate(resetUnknown.okPerSec)} 2xx/s, errors ${errorCount(resetKnown)} / ${errorCount(resetUnknown)}`,
        met: errorCount(resetKnown) === 0 && errorCount(resetUnknown) === 0,
      },
      auditRuns.length
        ? (() => {
            const issueCost = auditRatio((r) => r.issue);
            const scanCost = auditRatio((r) => r.scan);
            const fewer = (c: { ratio: number }) => `${((1 - c.ratio) * 100).toFixed(0)} % fewer`;
            return {
              target: "audit trail on vs off @ 16: issue_token and submit_scan ≤ 15 % fewer req/s (issue 21)",
              measured: `issue_token ${rate(issueCost.on)} vs ${rate(issueCost.off)} 2xx/s (${fewer(issueCost)}); submit_scan ${rate(scanCost.on)} vs ${rate(scanCost.off)} 2xx/s (${fewer(scanCost)}); means of 2 runs each`,
              met: issueCost.ratio >= 0.85 && scanCost.ratio >= 0.85,
            };
          })()
        : { target: "audit trail on vs off (issue 21)", measured: "no DATABASE_URL", met: undefined },
      { ...within3(issue, issueDirectRow), met: undefined, target: "issue_token through the API vs direct SQL (retired ratio target, reported only)" },
      { ...within3(validate, validateDirectRow), met: undefined, target: "validate_token through the API vs direct SQL (retired ratio target, reported only)" },
      uncached
        ? { target: "cached GET ≥ 5× uncached (issue 4)", measured: `${rate(cached.okPerSec)} / ${rate(uncached.okPerSec)} = ${(cached.okPerSec / uncached.okPerSec).toFixed(1)}×`, met: cached.okPerSec >= 5 * uncached.okPerSec }
        : { target: "cached GET ≥ 5× uncached", measured: "no UNCACHED_API_URL", met: undefined },
    ];

    const settings = Object.entries(info.settings).map(([k, v]) => `${k}=${v}`).join(" ");
    console.log(`\n## Load report (${QUICK ? "quick smoke run" : "bun run load"}): ${DURATION} s per scenario after ${WARMUP} s warm-up\n`);
    console.log(`Machine: ${machine}`);
    const stackDetail = info.transport ? `; PostgreSQL reached over ${info.transport === "tcp" ? "TCP (127.0.0.1)" : "its Unix socket"}; SIGN_IN_CONCURRENCY=${info.signInConcurrency}` : "";
    console.log(`Stack: ${stackProcess ? "embedded (PostgreSQL 17, redis-server, API + embedded engine in one Bun process)" : api}${stackDetail}; load generators: ${useWrk ? "wrk (fixed requests, the sign-in flood included) and autocannon 8 under Bun (token chains, Retry-After)" : "autocannon 8 under Bun"}, keep-alive, 1 request in flight per connection${settings ? `; API settings: ${settings}` : ""}`);
    console.log(`Rate limits off for the run (RATE_LIMIT_IP_MAX=0, RATE_LIMIT_EMAIL_MAX=0) so the numbers are throughput, not the limiter; bcrypt cost 12; ${sessions.length} sessions of ${emails.length} accounts spread over the connections.\n`);
    console.log(markdownTable(SCENARIO_HEADER, scenarioRows(results, (r) => generatorNames.get(r) ?? "autocannon"), [2, 3, 4, 5, 6]));
    if (baselines.length) {
      console.log("");
      console.log(markdownTable(BASELINE_HEADER, baselineRows(baselines), [1, 2, 3, 4, 5]));
    }
    if (cpu.size && info.apiPid) {
      console.log("\nWhere the CPU goes (measured window; ms of CPU per answered request, and cores busy on average; \"other\" is everything else on the machine):\n");
      const f = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : "–");
      const c = (v: number) => v.toFixed(2);
      console.log(
        markdownTable(
          ["scenario", "conns", "API ms/req", "PostgreSQL ms/req", "Redis ms/req", "load gen. ms/req", "cores: API", "PostgreSQL", "load gen.", "other", "machine"],
          [
            ...results.filter((r) => cpu.has(r)).map((r) => [r.name, String(r.connections), cpu.get(r)!] as const),
            ...baselines.filter((b) => baselineCpu.has(b.name)).map((b) => [`direct: ${b.name.replace(/ \(.*/, "")}`, String(b.callers), baselineCpu.get(b.name)!] as const),
          ].map(([name, conns, u]) => [name, conns, f(u.apiPerReq), f(u.postgresPerReq), f(u.redisPerReq), f(u.loadgenPerReq), c(u.apiCores), c(u.postgresCores), c(u.loadgenCores), c(u.otherCores), `${c(u.machineCores)} of ${CORES}`]),
          [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ),
      );
    }
    if (meDirectRow) console.log(`\nme: API (GET) ${rate(me.get64!.okPerSec)} req/s vs direct SQL ${rate(meDirectRow.m.reqPerSec)} calls/s at 64 (${((me.get64!.okPerSec / meDirectRow.m.reqPerSec) * 100).toFixed(0)} % of direct).`);
    const signInCpu = cpu.get(signIn16);
    const cryptCpu = bcrypt ? baselineCpu.get(bcrypt.name) : undefined;
    if (signInCpu && cryptCpu && signIn16.okPerSec > 0) {
      // Independent of what else runs on the machine: PostgreSQL CPU per successful sign-in
      // (including the refused attempts' share) against CPU per bare crypt() call.
      const perSignIn = (signInCpu.postgresPerReq * signIn16.responses) / (signIn16.okPerSec * signIn16.seconds);
      console.log(
        `sign_in efficiency: ${perSignIn.toFixed(0)} ms of PostgreSQL CPU per successful sign-in vs ${cryptCpu.postgresPerReq.toFixed(0)} ms per bare crypt() (${((cryptCpu.postgresPerReq / perSignIn) * 100).toFixed(0)} %); ` +
          `cores used by other work on the machine: ${cryptCpu.otherCores.toFixed(2)} during the crypt() loop, ${signInCpu.otherCores.toFixed(2)} during sign_in.`,
      );
    }
    if (issue.rotation) console.log(`issue_token rotation: ${issue.rotation.restarts - issue.connections} chain restarts after a non-200 answer, ${issue.rotation.poolLeft} spare tokens left${issue.rotation.poolEmpty ? `, POOL RAN DRY ${issue.rotation.poolEmpty}×` : ""}.`);
    console.log(`health: ${rate(health.okPerSec)} req/s.`);
    console.log("");
    console.log(markdownTable(["target (issue 9)", "measured", "result"], targetRows(targets)));
    const missed = targets.filter((t) => t.met === false).length;
    console.log(`\n${targets.filter((t) => t.met).length} of ${targets.length} targets met${missed ? `, ${missed} not met` : ""}.`);
  }
} finally {
  await direct?.end({ timeout: 2 });
  await admin?.end({ timeout: 2 });
  await stopAll();
}

/** `--soak`: `me` at 64 connections for 10 minutes; RSS and PostgreSQL backends before and after. */
async function soak(meGet: ShotRequest[]) {
  const minutes = Number(args.minutes ?? 10);
  const backends = async () => {
    if (!admin || !info.database) return undefined;
    const rows = await admin`select coalesce(application_name, '') as app, usename, count(*)::int as n from pg_stat_activity
                             where datname = ${info.database} and pid <> pg_backend_pid() group by 1, 2 order by 1, 2`;
    return { total: rows.reduce((a, r) => a + Number(r.n), 0), detail: rows.map((r) => `${r.app || "(none)"}/${r.usename}: ${r.n}`).join(", ") };
  };
  const warmup = 30;
  say(`soak: GET /rpc/me @ 64 for ${minutes} min after ${warmup} s warm-up`);
  // "Before" is taken once the warm-up has opened the pools, so it is the steady state.
  let before: Awaited<ReturnType<typeof backends>>;
  const startTimer = setTimeout(() => void backends().then((b) => (before = b)), warmup * 1000);
  // RSS is sampled at the end of every minute, under load: one sample swings by ±10 % with the
  // garbage collector, so the trend compares the first two minutes with the last two.
  const rss: number[] = [];
  let minute = 0;
  const r = await fire(
    { name: "soak: GET /rpc/me", url: api, connections: 64, durationSec: minutes * 60, warmupSec: warmup, requests: meGet },
    {
      onMinute: (w) => {
        const now = rssMiB(info.apiPid);
        if (now !== undefined) rss.push(now);
        say(`  minute ${++minute}: ${rate(w.responses / 60)} req/s, p99 ${ms(w.p99)} ms, errors ${w.errors}, API RSS ${now?.toFixed(0) ?? "?"} MiB`);
      },
    },
  );
  clearTimeout(startTimer);
  await Bun.sleep(2000);
  const after = await backends();
  console.log(`\n## Soak: GET /rpc/me at 64 connections for ${minutes} min (${machineLine()})\n`);
  console.log(markdownTable(SCENARIO_HEADER, scenarioRows([r]), [2, 3, 4, 5, 6]));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const ends = rss.length >= 4 ? { first: mean(rss.slice(0, 2)), last: mean(rss.slice(-2)) } : undefined;
  const growth = ends ? (ends.last / ends.first - 1) * 100 : undefined;
  const targets: Target[] = [
    {
      target: "API process RSS flat within 10 % (gateway + engine)",
      measured: ends
        ? `first two minutes ${ends.first.toFixed(0)} MiB → last two ${ends.last.toFixed(0)} MiB (${growth! >= 0 ? "+" : ""}${growth!.toFixed(1)} %); per minute ${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)} MiB`
        : rss.length ? "fewer than 4 minutes: no trend" : "no API pid",
      met: growth === undefined ? undefined : Math.abs(growth) <= 10,
    },
    { target: "no connection leak (PostgreSQL backends before = after)", measured: before && after ? `${before.total} → ${after.total} (after: ${after.detail})` : "no DATABASE_URL", met: before && after ? after.total <= before.total : undefined },
    { target: "no error", measured: String(errorCount(r)), met: errorCount(r) === 0 },
  ];
  console.log("");
  console.log(markdownTable(["soak target (issue 9)", "measured", "result"], targetRows(targets)));
}
