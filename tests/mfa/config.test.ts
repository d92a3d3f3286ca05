// MFA_ENCRYPTION_KEY: required when MFA is on, refused when weak, with one clear message each.
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../../api/src/config";

const BASE = { DATABASE_URL: "postgres://authenticator:pw@localhost:5432/autoaudit", PGRST_JWT_SECRET: "x".repeat(20) + "abcdefghijklmnop" };
const problems = (env: Record<string, string>) => {
  try {
    loadConfig(env);
    return [];
  } catch (error) {
    return (error as ConfigError).problems;
  }
};

describe("MFA configuration", () => {
  test("on with a strong key; the key is what the SQL functions get", () => {
    const key = "k3Y-0123456789-abcdefghij-ZYXWVU-q";
    expect(loadConfig({ ...BASE, MFA_ENCRYPTION_KEY: key }).mfa).toEqual({ enabled: true, key });
  });

  test("off without a key unless MFA_ENABLED asks for it, and then the start fails naming the variable", () => {
    expect(loadConfig(BASE).mfa).toEqual({ enabled: false, key: "" });
    expect(problems({ ...BASE, MFA_ENABLED: "true" })).toEqual([
      "MFA_ENCRYPTION_KEY is required when MFA_ENABLED is on: at least 32 random characters (e.g. `openssl rand -base64 48`); or set MFA_ENABLED=false",
    ]);
    expect(loadConfig({ ...BASE, MFA_ENABLED: "false", MFA_ENCRYPTION_KEY: "short" }).mfa.enabled).toBe(false);
  });

  test("a short or repetitive key is refused", () => {
    const weak = "MFA_ENCRYPTION_KEY is too weak: at least 32 characters with 12 or more distinct ones are required (e.g. `openssl rand -base64 48`)";
    expect(problems({ ...BASE, MFA_ENCRYPTION_KEY: "0123456789abcdef" })).toEqual([weak]);
    expect(problems({ ...BASE, MFA_ENCRYPTION_KEY: "ab".repeat(20) })).toEqual([weak]);
  });

  test("bun run dev with MFA_ENABLED and no key makes one up and says so", () => {
    const lines: string[] = [];
    const config = loadConfig({ DATABASE_URL: BASE.DATABASE_URL, MFA_ENABLED: "true" }, { development: true, log: (l) => lines.push(l) });
    expect(config.mfa.enabled).toBe(true);
    expect(config.mfa.key.length).toBeGreaterThanOrEqual(32);
    expect(lines.some((l) => l.startsWith("MFA_ENCRYPTION_KEY is not set: generated a random one"))).toBe(true);
  });
});
