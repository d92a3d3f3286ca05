/**
 * `bun run bench` group "sign_in": sign-in throughput through the API against the bcrypt limit
 * measured in the same run (a bare loop of crypt() at the account's cost, one caller per core,
 * on the same database). Target (issue 5/9): sign-in reaches at least 90 % of that limit.
 */
import { availableParallelism } from "node:os";
import postgres from "postgres";
import type { BenchGroup, BenchRow } from "../lib";
import { bcryptLimit, storedHash } from "./baselines";
import { firePolite } from "./cannon";

export const signInGroup: BenchGroup = async (ctx) => {
  const cores = availableParallelism();
  const account = await ctx.session();
  // At ~10 sign-ins per second a short window holds too few samples: at least 6 s.
  const durationMs = Math.max(ctx.durationMs, 6000);
  const admin = postgres(ctx.databaseUrl, { max: cores, onnotice: () => {} });
  let limit;
  let cost;
  try {
    const stored = await storedHash(admin, account.email);
    cost = stored.cost;
    ctx.log(`sign_in: crypt() at cost ${cost}, ${cores} callers…`);
    limit = await bcryptLimit(admin, stored.hash, { concurrency: cores, durationMs, warmupMs: 1000 });
  } finally {
    await admin.end({ timeout: 2 });
  }
  ctx.log("sign_in: POST /rpc/sign_in, 16 connections…");
  const r = await firePolite({
    name: "sign_in",
    url: ctx.apiUrl,
    connections: 16,
    durationSec: durationMs / 1000,
    warmupSec: 1,
    requests: [{ path: "/rpc/sign_in", method: "POST", body: JSON.stringify({ email: account.email, password: account.password }) }],
  });
  const refused = r.status["503"] ?? 0;
  const errors = Object.entries(r.status).reduce((n, [s, c]) => (s.startsWith("2") || s === "503" ? n : n + c), r.socketErrors);
  const rows: BenchRow[] = [
    { group: "sign_in", name: `crypt() at cost ${cost}, bare loop (bcrypt limit)`, concurrency: cores, ...limit },
    {
      group: "sign_in",
      name: "POST /rpc/sign_in via API (honours Retry-After)",
      concurrency: 16,
      requests: r.responses,
      errors,
      reqPerSec: r.okPerSec,
      p50: r.okP50,
      p99: r.okP99,
      ratio: r.okPerSec / limit.reqPerSec,
      note: `÷ bcrypt limit, target ≥ 0.90; ${refused} × 503 (admission)`,
    },
  ];
  return rows;
};
