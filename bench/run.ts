/**
 * `bun run bench`: every benchmark group of the project, in one run, against ONE throwaway
 * embedded stack (PostgreSQL, Redis, the API with its engine, plus the same API with the cache
 * off) started in its own process; one table at the end. Not a test: nothing asserts a speed.
 *
 *   bun run bench                       all groups (about 70 s on 2 cores)
 *   bun run bench sign_in gateway       only the named groups
 *   BENCH_DURATION_MS=8000 BENCH_WARMUP_MS=2000 bun run bench
 *
 * A group is a `BenchGroup` (bench/lib.ts): `(ctx) => Promise<BenchRow[]>`. To add one, export
 * it from its file and list it below.
 */
import { formatTable, type BenchContext, type BenchGroup, type BenchRow } from "./lib";
import { LOAD_PASSWORD, signIn, signUpUsers, type Session } from "./load/prepare";
import { machineLine } from "./load/report";
import { startStackProcess } from "./load/stack";

interface GroupEntry {
  name: string;
  /** Loads the group (a dynamic import, so a broken group does not stop the others). */
  load?: () => Promise<BenchGroup>;
  /**
   * A benchmark that is still a standalone script: run as a subprocess after the groups (it may
   * change the database, e.g. the authenticator's password), its output printed after the table.
   */
  script?: string;
}

const GROUPS: GroupEntry[] = [
  { name: "sign_in", load: async () => (await import("./load/sign-in-group")).signInGroup },
  { name: "relation", load: async () => (await import("./engine-relation")).relationReadGroup },
  { name: "engine", load: async () => (await import("./engine-rpc")).engineRpcGroup },
  { name: "gateway", load: async () => (await import("./gateway")).gatewayGroup },
];

const say = (line: string) => console.error(`[bench] ${line}`);
const only = process.argv.slice(2).filter((a) => !a.startsWith("-"));
const selected = only.length ? GROUPS.filter((g) => only.includes(g.name)) : GROUPS;
if (selected.length === 0) {
  console.error(`no such group: ${only.join(", ")} (groups: ${GROUPS.map((g) => g.name).join(", ")})`);
  process.exit(2);
}

const began = performance.now();
say("starting the embedded stack in a child process…");
const stack = await startStackProcess({ log: say });
process.on("SIGINT", () => void stack.stop().then(() => process.exit(130)));

let shared: Promise<Session & { password: string }> | undefined;
const info = stack.info;
const ctx: BenchContext = {
  apiUrl: info.apiUrl,
  uncachedApiUrl: info.uncachedApiUrl,
  databaseUrl: info.databaseUrl!,
  authenticatorUrl: info.authenticatorUrl!,
  redisUrl: info.redisUrl,
  jwtSecret: info.jwtSecret!,
  durationMs: Number(process.env.BENCH_DURATION_MS ?? 4000),
  warmupMs: Number(process.env.BENCH_WARMUP_MS ?? 1000),
  log: say,
  session: () =>
    (shared ??= (async () => {
      const [email] = await signUpUsers(info.apiUrl, 1, 1);
      const [session] = await signIn(info.apiUrl, [email!], 1, 1);
      return { ...session!, password: LOAD_PASSWORD };
    })()),
};

const rows: BenchRow[] = [];
const scriptOutputs: string[] = [];
try {
  for (const entry of [...selected.filter((g) => g.load), ...selected.filter((g) => g.script)]) {
    const started = performance.now();
    say(`group ${entry.name}…`);
    try {
      if (entry.script) {
        scriptOutputs.push(`### ${entry.name} (\`bun ${entry.script}\`)\n\n${await runScript(entry.script)}`);
        continue;
      }
      const group = await entry.load!();
      rows.push(...(await group(ctx)));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      say(`group ${entry.name} failed: ${message}`);
      rows.push({ group: entry.name, name: `FAILED: ${message.split("\n")[0]!.slice(0, 120)}`, concurrency: 0, requests: 0, errors: 1, reqPerSec: NaN, p50: NaN, p99: NaN });
    }
    say(`group ${entry.name} done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
} finally {
  await stack.stop();
}

console.log(`\n## bun run bench — ${machineLine()}\n`);
console.log(`One embedded stack (PostgreSQL 17, redis-server, API + embedded engine in one Bun process, bcrypt cost 12, sign-in rate limits off); ${ctx.durationMs / 1000} s per measurement after ${ctx.warmupMs / 1000} s warm-up (sign_in: 6 s). ratio = this row's req/s ÷ its reference row's.\n`);
console.log(formatTable(rows));
for (const output of scriptOutputs) console.log(`\n${output}`);
console.log(`\ntotal ${((performance.now() - began) / 1000).toFixed(0)} s`);

/** A standalone benchmark script against this run's database; its stdout. */
async function runScript(path: string): Promise<string> {
  const child = Bun.spawn(["bun", path], {
    env: {
      ...process.env,
      DATABASE_URL: ctx.databaseUrl,
      BENCH_DURATION_MS: String(ctx.durationMs),
      BENCH_WARMUP_MS: String(ctx.warmupMs),
      BENCH_SECONDS: String(ctx.durationMs / 1000),
    },
    stdout: "pipe",
    stderr: "inherit",
  });
  const [out, code] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  if (code !== 0) throw new Error(`${path} exited with ${code}`);
  return out.trim();
}
