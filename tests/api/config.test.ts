// The API's configuration: parsed once, every problem named, weak secrets refused.
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../../api/src/config";
import { ROOT } from "./helpers";

const BASE = { DATABASE_URL: "postgres://authenticator:pw@127.0.0.1:5432/autoaudit", PGRST_JWT_SECRET: "k".repeat(32) };

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  return [];
}

describe("loadConfig", () => {
  test("defaults", () => {
    const config = loadConfig(BASE);
    expect(config.port).toBe(8000);
    expect(config.schemas).toEqual(["api"]);
    expect(config.jwt.accessTokenTtlSeconds).toBe(900);
    expect(config.postgrestUrl).toBeUndefined();
    expect(config.redisUrl).toBeUndefined();
    expect(config.admission.signInConcurrency).toBeGreaterThanOrEqual(1);
  });

  test("a missing or short JWT secret is refused with a clear message", () => {
    expect(problems({ DATABASE_URL: BASE.DATABASE_URL })[0]).toStartWith("PGRST_JWT_SECRET is required");
    expect(problems({ ...BASE, PGRST_JWT_SECRET: "short-secret" })).toEqual([
      "PGRST_JWT_SECRET is too weak: 12 characters, at least 32 are required",
    ]);
  });

  test("the development default generates a secret and says so", () => {
    const lines: string[] = [];
    const config = loadConfig({ DATABASE_URL: BASE.DATABASE_URL }, { development: true, log: (l) => lines.push(l) });
    expect(config.jwt.generated).toBe(true);
    expect(config.jwt.secret.length).toBeGreaterThanOrEqual(32);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("generated a random one");
  });

  test("every invalid value is reported at once", () => {
    const found = problems({ ...BASE, PORT: "eighty", REDIS_URL: "http://nope", RATE_LIMIT_IP_MAX: "-1", TRUST_PROXY: "maybe" });
    expect(found).toHaveLength(4);
    expect(found.join("\n")).toContain("PORT");
    expect(found.join("\n")).toContain("REDIS_URL");
    expect(found.join("\n")).toContain("RATE_LIMIT_IP_MAX");
    expect(found.join("\n")).toContain("TRUST_PROXY");
  });

  test("empty values mean the default (compose passes unset knobs as empty strings)", () => {
    expect(loadConfig({ ...BASE, CACHE_TTL_SECONDS: "", PORT: "" }).cache.ttlSeconds).toBe(30);
  });
});

describe("bun api/src/server.ts", () => {
  test("stops at start with the reason when the secret is weak", async () => {
    const proc = Bun.spawn(["bun", "api/src/server.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", ...BASE, PGRST_JWT_SECRET: "too-short" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    expect(code).toBe(1);
    expect(stderr).toContain("PGRST_JWT_SECRET is too weak");
    expect(stderr).not.toContain("    at "); // a message, not a stack trace
  });
});
