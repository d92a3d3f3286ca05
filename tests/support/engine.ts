// The SQL functions as clients meet them: through the embedded engine (api/src/engine), called
// in-process with `fetch(Request)`, configured as the test stack's API configures its own, with
// access tokens minted by the gateway's own code. Every status, header and body a test asserts
// comes from the engine, so no test keeps a copy of PostgREST's SQLSTATE → HTTP table.
import { engineConfigFromEnv } from "../../api/src/config";
import { createEngine, type Engine } from "../../api/src/engine/index";
import { JwtService, type SessionAssurance } from "../../api/src/gateway/jwt";
import { testStack } from "./stack";

/** Connections per engine: enough for the concurrent calls of a test, few enough for many engines. */
const POOL_SIZE = "4";
/** The gateway's default ACCESS_TOKEN_TTL. */
const ACCESS_TOKEN_TTL_SECONDS = 900;

const engines = new Map<string, Promise<Engine>>();

/**
 * `settings` become session defaults of the engine's connections (startup parameters, as
 * `ALTER ROLE authenticator SET` would make them), for tests of a database setting such as
 * autoaudit.invitations_per_hour; each distinct set gets an engine of its own.
 */
function databaseUrl(settings: Record<string, string>): string {
  const url = new URL(testStack().authenticatorUrl);
  for (const [name, value] of Object.entries(settings)) url.searchParams.set(name, value);
  return url.toString();
}

/** The engine for `settings` (none: the stack's configuration), created on first use and shared by the run. */
export function stackEngine(settings: Record<string, string> = {}): Promise<Engine> {
  const key = JSON.stringify(Object.entries(settings).sort());
  let engine = engines.get(key);
  if (!engine) {
    const stack = testStack();
    if (!stack.jwtSecret) throw new Error("the API's JWT secret is unknown (set PGRST_JWT_SECRET with API_URL)");
    // The same PGRST_* environment the stack's API hands its embedded engine (upstream-select.ts).
    const env: Record<string, string | undefined> = {
      ...(stack.apiEnv ?? process.env),
      PGRST_DB_URI: databaseUrl(settings),
      PGRST_DB_SCHEMAS: "api",
      PGRST_DB_ANON_ROLE: "anon",
      PGRST_JWT_SECRET: stack.jwtSecret,
      PGRST_JWT_AUD: stack.jwtAudience,
      PGRST_DB_POOL: POOL_SIZE,
    };
    engine = createEngine(engineConfigFromEnv(env), { log: (line) => console.error(line), applicationName: "autoaudit-tests" });
    engines.set(key, engine);
  }
  return engine;
}

/** Closes every engine this run opened (the preload calls it before the stack stops). */
export async function closeStackEngines(): Promise<void> {
  const open = [...engines.values()];
  engines.clear();
  await Promise.all(open.map(async (engine) => (await engine.catch(() => undefined))?.close()));
}

let jwt: JwtService | undefined;

/** The access token the gateway hands out for `sessionId` (its own minting code, secret and audience). */
export async function accessTokenFor(
  user: { id: string; email: string; email_verified_at?: string | null },
  sessionId: string,
  assurance: SessionAssurance = { aal: "aal1", amr: [] },
): Promise<string> {
  const stack = testStack();
  if (!stack.jwtSecret) throw new Error("the API's JWT secret is unknown (set PGRST_JWT_SECRET with API_URL)");
  jwt ??= new JwtService(stack.jwtSecret, stack.jwtAudience, ACCESS_TOKEN_TTL_SECONDS);
  const { token } = await jwt.mintAccessToken({ id: user.id, email: user.email, emailVerified: Boolean(user.email_verified_at) }, sessionId, assurance);
  return token;
}

export interface EngineAnswer {
  status: number;
  /** Response headers, names lower-cased. */
  headers: Record<string, string>;
  text: string;
  /** The parsed body; undefined when empty. */
  body: any;
}

export interface RpcCallOptions {
  /** Bearer token; none: the anonymous role. */
  token?: string;
  headers?: Record<string, string>;
  /** Database settings of the engine's sessions (see stackEngine). */
  settings?: Record<string, string>;
}

/** POST /rpc/<fn> with `args` as the JSON body, through the engine; the whole answer. */
export async function engineRpc(fn: string, args: unknown = {}, options: RpcCallOptions = {}): Promise<EngineAnswer> {
  const engine = await stackEngine(options.settings);
  const headers: Record<string, string> = { "Content-Type": "application/json", ...options.headers };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  const response = await engine.fetch(
    new Request(`http://engine/rpc/${encodeURIComponent(fn)}`, { method: "POST", headers, body: JSON.stringify(args) }),
  );
  const text = await response.text();
  const length = response.headers.get("content-length");
  if (length !== null && Number(length) !== Buffer.byteLength(text)) {
    throw new Error(`Content-Length ${length} does not match the body (${Buffer.byteLength(text)} bytes)`);
  }
  return { status: response.status, headers: Object.fromEntries(response.headers), text, body: text === "" ? undefined : JSON.parse(text) };
}
