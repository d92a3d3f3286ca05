import type { Sql } from "postgres";
import type { RedisLink } from "./redis";

export interface PartStatus {
  status: "up" | "down" | "not_configured";
  latency_ms?: number;
  error?: string;
  required: boolean;
}

const TIMEOUT_MS = 1500;

async function probe(check: () => Promise<unknown>, required: boolean): Promise<PartStatus> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS))),
    ]);
    return { status: "up", latency_ms: round(performance.now() - started), required };
  } catch (error) {
    return { status: "down", latency_ms: round(performance.now() - started), error: error instanceof Error ? error.message : String(error), required };
  } finally {
    clearTimeout(timer);
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100;

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
}): Promise<Response> {
  const [postgres, redis, upstream] = await Promise.all([
    probe(() => parts.sql`select 1`, true),
    parts.redis ? probe(() => parts.redis!.ping(), false) : Promise.resolve<PartStatus>({ status: "not_configured", required: false }),
    probe(async () => {
      const response = await parts.upstream();
      await response.arrayBuffer();
      if (response.status >= 500) throw new Error(`answered ${response.status}`);
    }, true),
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
