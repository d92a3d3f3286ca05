// JWT handling, roles and connection failures of the embedded engine, with PostgREST's exact
// bodies and WWW-Authenticate headers.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { connect, createServer, type Socket } from "node:net";
import { defaultEngineConfig, engineConfigFromEnv } from "../../api/src/config";
import { createEngine, type Engine } from "../../api/src/engine/index";
import { testStack } from "../support/stack";
import { adminSql, get, productEngine, readJson, signToken, TEST_JWT_SECRET } from "./rpc-support";
import { closedPort } from "../support/ports";

const admin = adminSql();
let engine: Engine;

beforeAll(async () => {
  await admin.unsafe(`
    drop schema if exists engine_auth cascade;
    create schema engine_auth;
    grant usage on schema engine_auth to anon, authenticated;
    create function engine_auth.who() returns text language sql stable as 'select current_user::text';
    create function engine_auth.claims() returns json language sql stable as $$ select current_setting('request.jwt.claims')::json $$;
    create function engine_auth.pre() returns void language plpgsql as $$
    begin
      if current_setting('request.headers', true)::json ->> 'x-block' = 'yes' then
        raise exception using errcode = 'PT403', message = 'blocked by pre-request';
      end if;
    end $$;
    grant execute on all functions in schema engine_auth to anon, authenticated;
  `);
  engine = await productEngine({ dbSchemas: ["engine_auth"] });
});

afterAll(async () => {
  await engine.close();
  await admin.unsafe("drop schema if exists engine_auth cascade");
  await admin.end();
});

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
const invalidToken = (message: string) => `Bearer error="invalid_token", error_description=${JSON.stringify(message)}`;

async function expectJwtError(res: Response, status: number, body: Record<string, unknown>, wwwAuthenticate?: string) {
  const { json } = await readJson(res);
  expect(res.status).toBe(status);
  expect(json).toEqual(body);
  if (wwwAuthenticate !== undefined) expect(res.headers.get("www-authenticate")).toBe(wwwAuthenticate);
}

describe("roles from the JWT", () => {
  test("no token runs as the anonymous role; a token's role claim is switched to", async () => {
    expect((await readJson(await engine.fetch(get("/rpc/who")))).json).toBe("anon");
    const token = await signToken({ role: "authenticated", sub: "u1" });
    expect((await readJson(await engine.fetch(get("/rpc/who", bearer(token))))).json).toBe("authenticated");
  });

  test("a nested role claim key (.postgrest.roles[1]) picks the role", async () => {
    const nested = await productEngine({ dbSchemas: ["engine_auth"], jwtRoleClaimKey: ".postgrest.roles[1]" });
    try {
      const token = await signToken({ postgrest: { roles: ["anon", "authenticated"] } });
      expect((await readJson(await nested.fetch(get("/rpc/who", bearer(token))))).json).toBe("authenticated");
      const claims = (await readJson(await nested.fetch(get("/rpc/claims", bearer(token))))).json;
      expect(claims).toEqual({ postgrest: { roles: ["anon", "authenticated"] }, role: "authenticated" });
    } finally {
      await nested.close();
    }
  });

  test("a role that does not exist is 401 with the database's message", async () => {
    const token = await signToken({ role: "no_such_role" });
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer(token))), 401,
      { code: "22023", details: null, hint: null, message: 'role "no_such_role" does not exist' }, "Bearer");
  });

  test("the pre-request function runs in the request's transaction and its errors are the response", async () => {
    const hooked = await productEngine({ dbSchemas: ["engine_auth"], dbPreRequest: "engine_auth.pre" });
    try {
      expect((await readJson(await hooked.fetch(get("/rpc/who")))).json).toBe("anon");
      await expectJwtError(await hooked.fetch(get("/rpc/who", { "X-Block": "yes" })), 403,
        { code: "PT403", details: null, hint: null, message: "blocked by pre-request" });
    } finally {
      await hooked.close();
    }
  });
});

describe("JWT failures", () => {
  test("a bad signature", async () => {
    const token = await signToken({ role: "authenticated" }, "another-secret-that-is-also-long-enough-000");
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer(token))), 401,
      { code: "PGRST301", details: "None of the keys was able to decode the JWT", hint: null, message: "No suitable key or wrong key type" },
      invalidToken("No suitable key or wrong key type"));
  });

  test("alg none is refused", async () => {
    const header = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
    const payload = Buffer.from(JSON.stringify({ role: "authenticated" })).toString("base64url");
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer(`${header}.${payload}.`))), 401,
      { code: "PGRST301", details: "JWT is unsecured but expected 'alg' was not 'none'", hint: null, message: "Wrong or unsupported encoding algorithm" },
      invalidToken("Wrong or unsupported encoding algorithm"));
  });

  test("expired, beyond PostgREST's 30 s of clock skew; within it is accepted", async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await signToken({ role: "authenticated", exp: now - 120 });
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer(expired))), 401,
      { code: "PGRST303", details: null, hint: null, message: "JWT expired" }, invalidToken("JWT expired"));
    const withinSkew = await signToken({ role: "authenticated", exp: now - 5 });
    expect((await engine.fetch(get("/rpc/who", bearer(withinSkew)))).status).toBe(200);
    const future = await signToken({ role: "authenticated", nbf: now + 3600 });
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer(future))), 401,
      { code: "PGRST303", details: null, hint: null, message: "JWT not yet valid" }, invalidToken("JWT not yet valid"));
  });

  test("a wrong audience when PGRST_JWT_AUD is set", async () => {
    const aud = await productEngine({ dbSchemas: ["engine_auth"], jwtAud: "autoaudit" });
    try {
      const wrong = await signToken({ role: "authenticated", aud: "someone-else" });
      await expectJwtError(await aud.fetch(get("/rpc/who", bearer(wrong))), 401,
        { code: "PGRST303", details: null, hint: null, message: "JWT not in audience" }, invalidToken("JWT not in audience"));
      const right = await signToken({ role: "authenticated", aud: ["x", "autoaudit"] });
      expect((await readJson(await aud.fetch(get("/rpc/who", bearer(right))))).json).toBe("authenticated");
    } finally {
      await aud.close();
    }
  });

  test("malformed tokens: empty, wrong number of parts, garbage", async () => {
    await expectJwtError(await engine.fetch(get("/rpc/who", { Authorization: "Bearer " })), 401,
      { code: "PGRST301", details: null, hint: null, message: "Empty JWT is sent in Authorization header" },
      invalidToken("Empty JWT is sent in Authorization header"));
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer("a.b"))), 401,
      { code: "PGRST301", details: null, hint: null, message: "Expected 3 parts in JWT; got 2" });
    await expectJwtError(await engine.fetch(get("/rpc/who", bearer("zzz.yyy.xxx"))), 401,
      { code: "PGRST301", details: null, hint: null, message: "JWT cryptographic operation failed" });
  });

  test("a token without a configured secret is PGRST300; no anonymous role without a token is PGRST302", async () => {
    const noSecret = await productEngine({ dbSchemas: ["engine_auth"], jwtSecret: undefined });
    const noAnon = await productEngine({ dbSchemas: ["engine_auth"], dbAnonRole: undefined });
    try {
      await expectJwtError(await noSecret.fetch(get("/rpc/who", bearer(await signToken({ role: "authenticated" })))), 500,
        { code: "PGRST300", details: null, hint: null, message: "Server lacks JWT secret" });
      await expectJwtError(await noAnon.fetch(get("/rpc/who")), 401,
        { code: "PGRST302", details: null, hint: null, message: "Anonymous access is disabled" }, "Bearer");
    } finally {
      await noSecret.close();
      await noAnon.close();
    }
  });

  test("RS256 tokens verify against a JWK set", async () => {
    const { publicKey, privateKey } = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(publicKey)), alg: "RS256", kid: "k1" };
    const rs = await productEngine({ dbSchemas: ["engine_auth"], jwtSecret: JSON.stringify({ keys: [jwk] }) });
    try {
      const token = await new SignJWT({ role: "authenticated" }).setProtectedHeader({ alg: "RS256", kid: "k1" }).sign(privateKey);
      expect((await readJson(await rs.fetch(get("/rpc/who", bearer(token))))).json).toBe("authenticated");
      const hs = await signToken({ role: "authenticated" });
      expect((await rs.fetch(get("/rpc/who", bearer(hs)))).status).toBe(401);
    } finally {
      await rs.close();
    }
  });
});

describe("configuration and the database being away", () => {
  test("PGRST_* variables are read, and invalid values are refused clearly", () => {
    const config = engineConfigFromEnv({
      PGRST_DB_URI: "postgres://x@localhost/db", PGRST_DB_SCHEMAS: "api, other", PGRST_DB_ANON_ROLE: "anon",
      PGRST_JWT_SECRET: TEST_JWT_SECRET, PGRST_DB_TX_END: "rollback-allow-override", PGRST_DB_POOL: "7",
    });
    expect(config.dbSchemas).toEqual(["api", "other"]);
    expect(config.dbTxEnd).toBe("rollback-allow-override");
    expect(config.dbPoolSize).toBe(7);
    expect(config.serverPort).toBe(3000);
    expect(() => engineConfigFromEnv({ PGRST_JWT_SECRET: "too-short" })).toThrow("PGRST_JWT_SECRET is too weak: 9 characters, at least 32 are required");
    expect(() => engineConfigFromEnv({ PGRST_DB_TX_END: "sometimes" })).toThrow("PGRST_DB_TX_END");
    expect(() => engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: ".role[x" })).toThrow("role-claim-key");
  });

  test("db-schemas naming pg_catalog or information_schema is refused at start, as PostgREST 16 does", async () => {
    expect(() => engineConfigFromEnv({ PGRST_DB_SCHEMAS: "api,pg_catalog" })).toThrow("PGRST_DB_SCHEMAS must not expose pg_catalog");
    expect(() => engineConfigFromEnv({ PGRST_DB_SCHEMAS: "information_schema" })).toThrow("must not expose information_schema");
    expect(engineConfigFromEnv({ PGRST_DB_SCHEMAS: "api,PG_CATALOG" }).dbSchemas).toEqual(["api", "PG_CATALOG"]);
    await expect(createEngine(defaultEngineConfig({ dbSchemas: ["pg_catalog"] }), { databaseUrl: "postgres://x@127.0.0.1:1/none" }))
      .rejects.toThrow("must not expose pg_catalog");
  });

  test("jwt-role-claim-key: JSONPath is the default; the older JSPath is read and warned about once at start", async () => {
    expect(engineConfigFromEnv({}).jwtRoleClaimKey).toBe("$.role");
    expect(engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: "$.realm_access.roles[0]" }).jwtRoleClaimKey).toBe("$.realm_access.roles[0]");
    expect(() => engineConfigFromEnv({ PGRST_JWT_ROLE_CLAIM_KEY: "$.role[x" })).toThrow("role-claim-key");
    const port = await closedPort();
    const started = async (key: string) => {
      const lines: string[] = [];
      const e = await createEngine(
        defaultEngineConfig({ dbSchemas: ["api"], jwtRoleClaimKey: key, dbPoolAcquisitionTimeoutSeconds: 1 }),
        { databaseUrl: `postgres://authenticator:x@127.0.0.1:${port}/nowhere`, log: (l) => lines.push(l) },
      );
      await e.close();
      return lines.filter((l) => l.includes("jwt-role-claim-key"));
    };
    expect(await started("$.role")).toEqual([]);
    const warned = await started(".postgrest.roles[1]");
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain("deprecated");
    expect(warned[0]).toContain('"$.postgrest.roles[1]"');
  });

  test("the role comes from a JSONPath and from the older JSPath alike", async () => {
    for (const key of ["$.app.roles[-1]", ".app.roles[1]", '$["app"]["roles"][?@ == "authenticated"]']) {
      const e = await productEngine({ dbSchemas: ["engine_auth"], jwtRoleClaimKey: key });
      try {
        const token = await signToken({ app: { roles: ["anon", "authenticated"] } });
        expect((await readJson(await e.fetch(get("/rpc/who", bearer(token))))).json).toBe("authenticated");
      } finally {
        await e.close();
      }
    }
  });

  test("an unreachable database is 503 in PostgREST's shape, and the engine keeps running", async () => {
    const port = await closedPort();
    const lines: string[] = [];
    const down = await createEngine(
      defaultEngineConfig({ dbSchemas: ["api"], dbAnonRole: "anon", dbPoolAcquisitionTimeoutSeconds: 2 }),
      { databaseUrl: `postgres://authenticator:x@127.0.0.1:${port}/nowhere`, log: (l) => lines.push(l) },
    );
    try {
      for (let i = 0; i < 2; i++) {
        const res = await down.fetch(new Request("http://engine/rpc/sign_in", { method: "POST", body: "{}" }));
        const { json } = await readJson(res);
        expect(res.status).toBe(503);
        expect(json).toEqual({ code: "PGRST002", details: null, hint: null, message: "Could not query the database for the schema cache. Retrying." });
      }
      expect(lines.some((l) => l.includes("database not ready"))).toBe(true);
    } finally {
      await down.close();
    }
  });
});

test("a database that goes away mid-run is 503 (PGRST000) until it is back, then requests succeed again", async () => {
  const proxy = await tcpProxy(new URL(testStack().authenticatorUrl));
  const url = new URL(testStack().authenticatorUrl);
  url.hostname = "127.0.0.1";
  url.port = String(proxy.port);
  url.searchParams.delete("host"); // through the proxy's TCP port, not the server's Unix socket
  const lines: string[] = [];
  const flaky = await createEngine(
    defaultEngineConfig({ dbSchemas: ["engine_auth"], dbAnonRole: "anon", dbPoolSize: 2, dbPoolAcquisitionTimeoutSeconds: 1 }),
    { databaseUrl: url.toString(), log: (l) => lines.push(l) },
  );
  try {
    expect((await readJson(await flaky.fetch(get("/rpc/who")))).json).toBe("anon");
    for (const mode of ["refuse", "accept-and-drop"] as const) {
      await proxy.down(mode);
      for (let i = 0; i < 2; i++) {
        const res = await flaky.fetch(get("/rpc/who"));
        const { json } = await readJson(res);
        expect(res.status).toBe(503);
        expect(json).toMatchObject({ code: "PGRST000", message: "Database connection error." });
        // The engine's own words at most, never the driver's (addresses, ports, socket paths).
        expect([null, "timed out connecting to the database"]).toContain((json as { details: string | null }).details);
      }
      await proxy.up();
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        status = (await flaky.fetch(get("/rpc/who"))).status;
        if (status !== 200) await Bun.sleep(50);
      }
      expect(status).toBe(200);
    }
    expect(lines.some((l) => l.includes("lost the database connection"))).toBe(true);
  } finally {
    await flaky.close();
    await proxy.close();
  }
}, 30_000);

/**
 * A loopback TCP proxy to the database that can go down by refusing connections (a stopped
 * server) or by accepting and dropping them (a port forwarder in front of a stopped server).
 */
async function tcpProxy(target: URL) {
  const sockets = new Set<Socket>();
  let accepting = true;
  const handler = (client: Socket) => {
    if (!accepting) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  };
  let server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  let listening = true;
  return {
    port,
    async down(mode: "refuse" | "accept-and-drop") {
      accepting = false;
      for (const s of sockets) s.destroy();
      if (mode === "refuse") {
        listening = false;
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
    async up() {
      accepting = true;
      if (!listening) {
        server = createServer(handler);
        await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
        listening = true;
      }
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      if (listening) server.close(() => resolve());
      else resolve();
    }),
  };
}

