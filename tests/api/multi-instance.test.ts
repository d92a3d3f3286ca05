// Two API processes (`bun api/src/server.ts`) on one Postgres and one Redis: a revocation on
// one is honoured by the other within a second, although the access token has not expired.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { testStack } from "../support/stack";
import { call, newUser, pastRefreshGrace, signIn, signUp, spawnApi, type SpawnedApi } from "./helpers";

const env = testStack().apiEnv;
let first: SpawnedApi;
let second: SpawnedApi;

describe.skipIf(!env)("two API processes [spawns its own API processes: not with API_URL]", () => {
  beforeAll(async () => {
    [first, second] = await Promise.all([spawnApi(env!), spawnApi(env!)]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([first?.stop(), second?.stop()]);
  }, 30_000);

  test("sign in on one, refresh on the other, revoke on the first: refused on the second within 1 s", async () => {
    const user = newUser();
    await signUp(user, first.url);
    const signedIn = await signIn(user, first.url);

    const refreshed = await call("/rpc/issue_token", { base: second.url, body: { refresh_token: signedIn.refresh_token } });
    expect(refreshed.status).toBe(200);
    const token = refreshed.json.access_token as string;
    // Both processes have now seen the session active (and may trust that locally).
    expect((await call("/rpc/me", { base: first.url, token })).status).toBe(200);
    expect((await call("/rpc/me", { base: second.url, token })).status).toBe(200);

    const revoked = await call("/rpc/revoke_token", { base: first.url, body: { refresh_token: refreshed.json.refresh_token } });
    expect(revoked.status).toBe(200);
    const revokedAt = performance.now();

    let refusedAfterMs: number | undefined;
    while (performance.now() - revokedAt < 1000) {
      const me = await call("/rpc/me", { base: second.url, token });
      if (me.status === 401) {
        refusedAfterMs = performance.now() - revokedAt;
        expect(me.json.message).toBe("JWT session revoked");
        break;
      }
      expect(me.status).toBe(200);
      await Bun.sleep(25);
    }
    expect(refusedAfterMs).toBeDefined();
    // And it stays refused, on both.
    expect((await call("/rpc/me", { base: second.url, token })).status).toBe(401);
    expect((await call("/rpc/me", { base: first.url, token })).status).toBe(401);
  });

  test("refresh-token reuse detected on one process revokes the session on the other", async () => {
    const user = newUser();
    await signUp(user, first.url);
    const signedIn = await signIn(user, first.url);
    const rotated = await call("/rpc/issue_token", { base: first.url, body: { refresh_token: signedIn.refresh_token } });
    const token = rotated.json.access_token as string;
    expect((await call("/rpc/me", { base: second.url, token })).status).toBe(200);
    await pastRefreshGrace(signedIn.refresh_token);
    const reuse = await call("/rpc/issue_token", { base: second.url, body: { refresh_token: signedIn.refresh_token } });
    expect(reuse.status).toBe(401);
    const started = performance.now();
    let refused = false;
    while (!refused && performance.now() - started < 1000) {
      refused = (await call("/rpc/me", { base: first.url, token })).status === 401;
      if (!refused) await Bun.sleep(25);
    }
    expect(refused).toBe(true);
  });
});
