import type { Sql } from "postgres";
import type { RedisLink } from "./redis";

export interface PartStatus {
  status: "up" | "down" | "not_configured";
  latency_ms?: number;
  error?: string;
  required: boolean;
}

const TIMEOUT_MS = 1500;

/** What an anonymous caller learns of a failed part: which kind of failure, never its error text. */
const UNREACHABLE = "unreachable";
const SLOW = `no answer within ${TIMEOUT_MS} ms`;

async function probe(name: string, check: () => Promise<unknown>, required: boolean, log: Log): Promise<PartStatus> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new SlowProbe()), TIMEOUT_MS))),
    ]);
    return { status: "up", latency_ms: round(performance.now() - started), required };
  } catch (error) {
    // The driver's or the upstream's own text (addresses, role names) goes to the log only.
    if (!(error instanceof SlowProbe)) log({ event: "health_check_failed", part: name, error: error instanceof Error ? error.message : String(error) });
    return { status: "down", latency_ms: round(performance.now() - started), error: error instanceof SlowProbe ? SLOW : UNREACHABLE, required };
  } finally {
    clearTimeout(timer);
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;
class SlowProbe extends Error {}
type Log = (event: Record<string, unknown>) => void;

/**
 * GET /health. Postgres and the RPC upstream are required (no request can be served without
 * them): either down → 503. Redis is not: the API keeps serving without it (see degradation),
 * so Redis down gives 200 with `status: "degraded"` and names it.
 */
export async function healthReport(parts: {
  sql: Sql;
  redis?: RedisLink;
  upstream: () => Promise<Response>;
  upstreamKind: string;
  log?: Log;
}): Promise<Response> {
  const log = parts.log ?? (() => {});
  const [postgres, redis, upstream] = await Promise.all([
    probe("postgres", () => parts.sql`select 1`, true, log),
    parts.redis ? probe("redis", () => parts.redis!.ping(), false, log) : Promise.resolve<PartStatus>({ status: "not_configured", required: false }),
    probe(parts.upstreamKind, async () => {
      const response = await parts.upstream();
      await response.arrayBuffer();
      if (response.status >= 500) throw new Error(`answered ${response.status}`);
    }, true, log),
  ]);
  const checks = { postgres, redis, [parts.upstreamKind]: upstream };
  const down = Object.entries(checks).filter(([, part]) => part.status === "down");
  const requiredDown = down.filter(([, part]) => part.required).map(([name]) => name);
  const status = requiredDown.length ? "down" : down.length ? "degraded" : "ok";
  const body = JSON.stringify({ status, down: down.map(([name]) => name), checks });
  return new Response(body, {
    status: requiredDown.length ? 503 : 200,
    headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
  });
}
