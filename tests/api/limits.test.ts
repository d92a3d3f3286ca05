// Rate limits on sign_in / sign_up and the admission control of the bcrypt routes.
import { afterAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { testStack } from "../support/stack";
import { call, newUser, signUp } from "./helpers";

const started: RunningApi[] = [];
const admin = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
afterAll(async () => {
  for (const api of started) await api.stop();
  await admin.end();
});

/** Another API instance on the same database and Redis, with its own settings. */
async function dedicatedApi(overrides: Record<string, string>): Promise<string> {
  const env = { ...testStack().apiEnv!, ...overrides };
  const api = await startApi(loadConfig(env), () => {});
  started.push(api);
  return api.url;
}

const canStartInstances = Boolean(testStack().apiEnv);
const SKIP_REASON = "[starts its own API instance: not with API_URL]";

function expectLimited(result: { status: number; headers: Headers; json: any }, scope: string) {
  expect(result.status).toBe(429);
  expect(Number(result.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  expect(Object.keys(result.json)).toEqual(["code", "details", "hint", "message"]);
  expect(result.json).toEqual({
    code: "AA401",
    details: `Limit per ${scope} reached`,
    hint: `Retry after ${result.headers.get("retry-after")} seconds.`,
    message: "Too many requests",
  });
}

/**
 * Waits until just after a limiter window starts (windows are aligned to the clock, which Redis
 * on this machine shares). Attempts that straddle a boundary are partly forgotten by the sliding
 * window, so a test that counts to a small limit starts at the beginning of a window.
 */
describe("rate limits", () => {
  test("failed sign-ins on one account are limited (with Retry-After), other accounts are not", async () => {
    const victim = newUser();
    await signUp(victim);
    let limited: Awaited<ReturnType<typeof call>> | undefined;
    let failures = 0;
    for (let i = 0; i < 100 && !limited; i++) {
      // The database blocks one address on one account after 5 failures (auth.sign_in_throttle):
      // its row is cleared before each attempt, so what is measured is the gateway's own limit.
      await admin`delete from auth.sign_in_throttle where email = ${victim.email}`;
      const result = await call("/rpc/sign_in", { body: { email: victim.email, password: `wrong-${i}` } });
      if (result.status === 429) limited = result;
      else {
        expect(result.status).toBe(401);
        failures++;
      }
    }
    expect(limited).toBeDefined();
    expectLimited(limited!, "account and client address");
    if (!testStack().external) expect(failures).toBe(10); // RATE_LIMIT_EMAIL_MAX default
    // The email is normalised, so case and spaces do not open a second budget.
    expectLimited(await call("/rpc/sign_in", { body: { email: `  ${victim.email.toUpperCase()} `, password: "x" } }), "account and client address");

    const bystander = newUser();
    await signUp(bystander);
    expect((await call("/rpc/sign_in", { body: bystander })).status).toBe(200);
  }, 60_000); // bcrypt at cost 12 against an external stack

  test.skipIf(!canStartInstances)(`the account limit recovers after its window ${SKIP_REASON}`, async () => {
    const base = await dedicatedApi({ RATE_LIMIT_EMAIL_MAX: "2", RATE_LIMIT_EMAIL_WINDOW_SECONDS: "5" });
    const user = newUser();
    await signUp(user, base);
    // The window opens at the first attempt and is long enough for the attempts on a busy machine.
    for (let i = 0; i < 2; i++) expect((await call("/rpc/sign_in", { base, body: { ...user, password: "wrong-password" } })).status).toBe(401);
    const limited = await call("/rpc/sign_in", { base, body: user });
    expectLimited(limited, "account and client address");
    // Successful sign-ins do not count against the account; waiting out Retry-After is enough.
    await Bun.sleep(Number(limited.headers.get("retry-after")) * 1000 + 100);
    expect((await call("/rpc/sign_in", { base, body: user })).status).toBe(200);
    expect((await call("/rpc/sign_in", { base, body: user })).status).toBe(200);
  }, 20_000); // waits out a 5 s window

  test.skipIf(!canStartInstances)(`attempts per client address are limited and recover ${SKIP_REASON}`, async () => {
    const base = await dedicatedApi({ RATE_LIMIT_IP_MAX: "3", RATE_LIMIT_IP_WINDOW_SECONDS: "5" });
    const results = [];
    // The window opens at the first attempt and is long enough for the attempts on a busy machine.
    for (let i = 0; i < 4; i++) results.push(await call("/rpc/sign_up", { base, body: { ...newUser(), first_name: "A", last_name: "B" } }));
    expect(results.slice(0, 3).map((r) => r.status)).toEqual([200, 200, 200]);
    expectLimited(results[3]!, "client address");
    // Other routes are not limited.
    expect((await call("/rpc/me", { base })).status).toBe(401);
    await Bun.sleep(Number(results[3]!.headers.get("retry-after")) * 1000 + 100);
    expect((await call("/rpc/sign_up", { base, body: { ...newUser(), first_name: "A", last_name: "B" } })).status).toBe(200);
  }, 20_000); // waits out a 5 s window
});

describe("client address behind a proxy", () => {
  test.skipIf(!canStartInstances)(`with TRUST_PROXY the proxy's entry of X-Forwarded-For decides, not the client's ${SKIP_REASON}`, async () => {
    const base = await dedicatedApi({ TRUST_PROXY: "true", RATE_LIMIT_IP_MAX: "2", RATE_LIMIT_IP_WINDOW_SECONDS: "60" });
    const attempt = (forwardedFor: string) =>
      call("/rpc/sign_in", { base, body: { email: `${crypto.randomUUID()}@example.com`, password: "whatever-pw" }, headers: { "X-Forwarded-For": forwardedFor } });
    // A client rotating a forged first entry still comes through the proxy from 203.0.113.7.
    expect((await attempt("1.1.1.1, 203.0.113.7")).status).toBe(401);
    expect((await attempt("2.2.2.2, 203.0.113.7")).status).toBe(401);
    expectLimited(await attempt("3.3.3.3, 203.0.113.7"), "client address");
    expect((await attempt("198.51.100.9")).status).toBe(401);
  });
});

describe("the client address the database sees", () => {
  test("sign_in is sent the address the gateway saw as X-Forwarded-For, never the caller's header", async () => {
    const email = `${crypto.randomUUID()}@example.com`;
    const forged = await call("/rpc/sign_in", { body: { email, password: "whatever-pw" }, headers: { "X-Forwarded-For": "6.6.6.6" } });
    expect(forged.status).toBe(401);
    const rows = await admin`select client from auth.sign_in_throttle where email = ${email}`;
    expect(rows).toHaveLength(1);
    if (!testStack().external) expect(rows[0]!.client).toMatch(/^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
    expect(rows[0]!.client).not.toContain("6.6.6.6");
  });

  test.skipIf(!canStartInstances)(`with TRUST_PROXY the database's client is the proxy's entry ${SKIP_REASON}`, async () => {
    const base = await dedicatedApi({ TRUST_PROXY: "true" });
    const email = `${crypto.randomUUID()}@example.com`;
    expect((await call("/rpc/sign_in", { base, body: { email, password: "whatever-pw" }, headers: { "X-Forwarded-For": "1.1.1.1, 203.0.113.77" } })).status).toBe(401);
    expect((await admin`select client from auth.sign_in_throttle where email = ${email}`).map((r) => r.client)).toEqual(["203.0.113.77"]);
  });
});

describe("sign-in admission control", () => {
  test.skipIf(!canStartInstances)(`sign-ins beyond the concurrency limit are refused at once with 503 ${SKIP_REASON}`, async () => {
    const base = await dedicatedApi({ SIGN_IN_CONCURRENCY: "1", SIGN_IN_QUEUE: "0" });
    const user = newUser();
    await signUp(user, base);
    const results = await Promise.all(Array.from({ length: 20 }, () => call("/rpc/sign_in", { base, body: user })));
    const statuses = results.map((r) => r.status);
    expect(statuses).toContain(200);
    expect(statuses).toContain(503);
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true);
    const refused = results.find((r) => r.status === 503)!;
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.json).toEqual({ code: "AA402", details: null, hint: "Retry after 1 second(s).", message: "Too many sign-in requests in progress" });
    // Once the burst is over, sign-in works again.
    expect((await call("/rpc/sign_in", { base, body: user })).status).toBe(200);
  });
});

describe("Admission", () => {
  test("is full exactly when every slot is taken and the queue is full; a full gate refuses at once", async () => {
    const { Admission } = await import("../../api/src/gateway/admission");
    const gate = new Admission(1, 1, 5_000);
    expect(gate.full()).toBe(false);
    const first = (await gate.acquire())!;
    expect(gate.full()).toBe(false); // the queue still has room
    const queued = gate.acquire();
    expect(gate.full()).toBe(true);
    expect(await gate.acquire()).toBeUndefined();
    first();
    const second = (await queued)!;
    expect(gate.full()).toBe(false);
    second();
    expect(gate.stats()).toEqual({ running: 0, waiting: 0, limit: 1 });
  });
});
