// The seam between the gateway and the engine (docs/decisions/0004-engine-seam.md): in one
// process the caller's token is verified once (by the gateway; the engine takes its claims
// in-process) and the gateway's catalogue reads the engine's schema cache; a real PostgREST
// over HTTP (POSTGREST_URL) and the engine served alone (`bun run rpc-engine`) verify every
// token themselves. Verifications are counted on the autoaudit.jwt.verify diagnostics channel,
// where both verifiers publish each signature they check.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type { Server } from "bun";
import { decodeJwt } from "jose";
import postgres from "postgres";
import { loadConfig } from "../../api/src/config";
import { createEngine, engineConfigFromEnv, type Engine } from "../../api/src/engine";
import { startApi, type RunningApi } from "../../api/src/server";
import { freePort } from "../../api/src/stack/free-port";
import { testStack } from "../support/stack";
import { call, mintToken, newUser, pgrstError, ROOT, signIn, signUp, signedInUser } from "./helpers";

const stack = testStack();
const env = stack.apiEnv;
const CHANNEL = "autoaudit.jwt.verify";

const seen: string[] = [];
const onVerification = (message: unknown) => seen.push((message as { verifier: string }).verifier);

/** Which verifiers checked a signature while `run` ran. */
async function verificationsDuring(run: () => Promise<unknown>): Promise<string[]> {
  seen.length = 0;
  await run();
  return [...seen];
}

const forgedFrom = async (token: string) => mintToken(decodeJwt(token), { secret: "x".repeat(48) });
const expiredFrom = async (token: string) => {
  const now = Math.floor(Date.now() / 1000);
  return mintToken({ ...decodeJwt(token), iat: now - 7200, exp: now - 3600 });
};
const FORGED = pgrstError("PGRST301", "No suitable key or wrong key type", "None of the keys was able to decode the JWT");
const EXPIRED = pgrstError("PGRST303", "JWT expired");

const me = (token: string) => new Request("http://engine.internal/rpc/me", { headers: { Authorization: `Bearer ${token}`, "Accept-Profile": "api" } });

describe.skipIf(!env)("the engine seam [starts its own APIs and engines: not with API_URL]", () => {
  let engine: Engine;
  let upstreamServer: Server<unknown>;
  let remoteApi: RunningApi;
  let probeApi: RunningApi;
  const admin = postgres(stack.databaseUrl, { max: 1, onnotice: () => {} });

  beforeAll(async () => {
    subscribe(CHANNEL, onVerification);
    await admin.unsafe(`
      drop schema if exists seam_probe cascade;
      create schema seam_probe;
      grant usage on schema seam_probe to anon, authenticated;
    `);
    engine = await createEngine(engineConfigFromEnv(env!), { log: () => {} });
    upstreamServer = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (request) => engine.fetch(request) });
    const remoteEnv = { ...env!, POSTGREST_URL: `http://127.0.0.1:${upstreamServer.port}`, PGRST_DB_SCHEMAS: "api,seam_probe" };
    remoteApi = await startApi(loadConfig(remoteEnv), () => {});
    const probeEnv = { ...env!, PGRST_DB_SCHEMAS: "api,seam_probe" };
    probeApi = await startApi(loadConfig(probeEnv), () => {});
  }, 30_000);

  afterAll(async () => {
    unsubscribe(CHANNEL, onVerification);
    await probeApi?.stop();
    await remoteApi?.stop();
    upstreamServer?.stop(true);
    await engine?.close();
    await admin.unsafe("drop schema if exists seam_probe cascade");
    await admin.end();
  });

  describe("one verification per request in one process", () => {
    test("a fresh token is verified by the gateway only, and not again once known", async () => {
      const user = await signedInUser();
      let answer: Awaited<ReturnType<typeof call>> | undefined;
      expect(await verificationsDuring(async () => (answer = await call("/rpc/me", { token: user.access_token })))).toEqual(["gateway"]);
      expect(answer!.status).toBe(200);
      expect(answer!.json.email).toBe(user.email);
      expect(await verificationsDuring(() => call("/rpc/me", { token: user.access_token }))).toEqual([]);
    });

    test("a session the gateway asks the database about costs no second verification either", async () => {
      // Signed in through another instance: this one does not know the session and asks.
      const user = newUser();
      expect((await signUp(user, remoteApi.url)).status).toBe(200);
      const session = await signIn(user, remoteApi.url);
      let answer: Awaited<ReturnType<typeof call>> | undefined;
      expect(await verificationsDuring(async () => (answer = await call("/rpc/me", { base: probeApi.url, token: session.access_token })))).toEqual(["gateway"]);
      expect(answer!.status).toBe(200);
    });

    test("forged and expired tokens are refused, with PostgREST's bodies, before the engine sees them", async () => {
      const user = await signedInUser();
      for (const [token, body] of [[await forgedFrom(user.access_token), FORGED], [await expiredFrom(user.access_token), EXPIRED]] as const) {
        let answer: Awaited<ReturnType<typeof call>> | undefined;
        const verifiers = await verificationsDuring(async () => (answer = await call("/rpc/me", { token })));
        expect({ status: answer!.status, body: answer!.json, verifiers }).toEqual({ status: 401, body, verifiers: ["gateway"] });
      }
    });
  });

  describe("what the engine trusts", () => {
    test("served over fetch it verifies every token, and refuses forged and expired ones", async () => {
      const user = await signedInUser();
      let answer: Response | undefined;
      expect(await verificationsDuring(async () => (answer = await engine.fetch(me(user.access_token))))).toEqual(["engine"]);
      expect(answer!.status).toBe(200);
      for (const [token, body] of [[await forgedFrom(user.access_token), FORGED], [await expiredFrom(user.access_token), EXPIRED]] as const) {
        const refused = await engine.fetch(me(token));
        expect({ status: refused.status, body: await refused.json() }).toEqual({ status: 401, body });
      }
    });

    test("a verification handed in-process covers that token only: another one in the request is verified", async () => {
      const user = await signedInUser();
      const forged = await forgedFrom(user.access_token);
      const vouched = { token: user.access_token, claims: decodeJwt(user.access_token) as Record<string, unknown> };
      let answer: Response | undefined;
      expect(await verificationsDuring(async () => (answer = await engine.handle(me(forged), vouched)))).toEqual(["engine"]);
      expect({ status: answer!.status, body: await answer!.json() }).toEqual({ status: 401, body: FORGED });
    });

    test("the claims handed in still pass PostgREST's checks: an expired token is refused", async () => {
      const user = await signedInUser();
      const expired = await expiredFrom(user.access_token);
      let answer: Response | undefined;
      expect(await verificationsDuring(async () => (answer = await engine.handle(me(expired), { token: expired, claims: decodeJwt(expired) as Record<string, unknown> })))).toEqual([]);
      expect({ status: answer!.status, body: await answer!.json() }).toEqual({ status: 401, body: EXPIRED });
    });

    test("in front of a PostgREST over HTTP, the upstream verifies the token again (nothing in the request vouches for it)", async () => {
      const user = newUser();
      expect((await signUp(user, remoteApi.url)).status).toBe(200);
      const session = await signIn(user, remoteApi.url);
      let answer: Awaited<ReturnType<typeof call>> | undefined;
      expect(await verificationsDuring(async () => (answer = await call("/rpc/me", { base: remoteApi.url, token: session.access_token })))).toEqual(["gateway", "engine"]);
      expect(answer!.status).toBe(200);
      for (const [token, body] of [[await forgedFrom(session.access_token), FORGED], [await expiredFrom(session.access_token), EXPIRED]] as const) {
        const refused = await call("/rpc/me", { base: remoteApi.url, token });
        expect({ status: refused.status, body: refused.json }).toEqual({ status: 401, body });
      }
    });

    test("`bun run rpc-engine` verifies tokens itself", async () => {
      const port = await freePort();
      const proc = Bun.spawn(["bun", "api/src/engine/server.ts"], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env!, PGRST_SERVER_HOST: "127.0.0.1", PGRST_SERVER_PORT: String(port) },
        stdout: "ignore",
        stderr: "ignore",
      });
      try {
        const url = `http://127.0.0.1:${port}/rpc/me`;
        const ask = async (token: string) => {
          const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
          return { status: response.status, body: await response.json() };
        };
        const deadline = Date.now() + 20_000;
        for (;;) {
          try {
            await (await fetch(url)).arrayBuffer();
            break;
          } catch (error) {
            if (Date.now() > deadline || proc.exitCode !== null) throw error;
            await Bun.sleep(50);
          }
        }
        const user = await signedInUser();
        const valid = await ask(user.access_token);
        expect({ status: valid.status, email: valid.body.email }).toEqual({ status: 200, email: user.email });
        expect(await ask(await forgedFrom(user.access_token))).toEqual({ status: 401, body: FORGED });
        expect(await ask(await expiredFrom(user.access_token))).toEqual({ status: 401, body: EXPIRED });
      } finally {
        proc.kill("SIGTERM");
        await proc.exited;
      }
    }, 30_000);
  });

  describe("one schema introspection", () => {
    const documented = async (base: string) => Object.keys((await call("/docs/json", { base })).json.paths);

    test("in one process the gateway's catalogue is the engine's schema cache: one reload serves both", async () => {
      await admin.unsafe("create function seam_probe.probe_shared() returns int language sql volatile as 'select 1'");
      expect(await documented(probeApi.url)).not.toContain("/rpc/probe_shared");
      // Only the engine reloads (no NOTIFY): the gateway sees the very snapshot it loaded.
      await probeApi.upstream.schema!.reload();
      expect(await documented(probeApi.url)).toContain("/rpc/probe_shared");
      const read = await call("/rpc/probe_shared", { base: probeApi.url, headers: { "Accept-Profile": "seam_probe" } });
      expect({ status: read.status, code: read.json.code }).toEqual({ status: 405, code: "AA101" });
      const write = await call("/rpc/probe_shared", { base: probeApi.url, method: "POST", body: {}, headers: { "Content-Profile": "seam_probe" } });
      expect({ status: write.status, body: write.json }).toEqual({ status: 200, body: 1 });
    });

    test("in front of a real PostgREST the gateway keeps a catalogue of its own, reloaded on NOTIFY pgrst", async () => {
      expect(remoteApi.upstream.schema).toBeUndefined();
      await admin.unsafe("create function seam_probe.probe_remote() returns int language sql stable as 'select 2'");
      expect(await documented(remoteApi.url)).not.toContain("/rpc/probe_remote");
      await admin.unsafe("notify pgrst, 'reload schema'");
      let paths: string[] = [];
      for (let i = 0; i < 100 && !paths.includes("/rpc/probe_remote"); i++) {
        paths = await documented(remoteApi.url);
        if (!paths.includes("/rpc/probe_remote")) await Bun.sleep(50);
      }
      expect(paths).toContain("/rpc/probe_remote");
    });
  });
});
