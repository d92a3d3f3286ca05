// Shared by the engine's own tests: an engine on the product database (schema api, anon role
// anon, connecting as the authenticator), token minting, and request helpers.
import { SignJWT } from "jose";
import postgres from "postgres";
import { defaultEngineConfig, type EngineConfig } from "../../api/src/config";
import { createEngine, type Engine } from "../../api/src/engine/index";
import { testStack } from "../support/stack";

export const TEST_JWT_SECRET = "engine-tests-secret-that-is-long-enough-0123456789";

export function productConfig(overrides: Partial<EngineConfig> = {}): EngineConfig {
  return defaultEngineConfig({
    dbSchemas: ["api"],
    dbAnonRole: "anon",
    jwtSecret: TEST_JWT_SECRET,
    dbPoolSize: 4,
    ...overrides,
  });
}

export async function productEngine(overrides: Partial<EngineConfig> = {}): Promise<Engine> {
  return createEngine(productConfig(overrides), { databaseUrl: testStack().authenticatorUrl, log: () => {} });
}

export async function signToken(claims: Record<string, unknown>, secret = TEST_JWT_SECRET, alg = "HS256"): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT" }).sign(new TextEncoder().encode(secret));
}

export function post(path: string, body: unknown, headers: Record<string, string> = {}): Request {
  return new Request(`http://engine${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export function get(path: string, headers: Record<string, string> = {}): Request {
  return new Request(`http://engine${path}`, { headers });
}

/** Body text plus the checks every JSON response of the engine must pass (exact Content-Length). */
export async function readJson(res: Response): Promise<{ status: number; text: string; json: unknown }> {
  const text = await res.text();
  const length = res.headers.get("content-length");
  if (length !== null && Number(length) !== Buffer.byteLength(text)) {
    throw new Error(`Content-Length ${length} does not match the body (${Buffer.byteLength(text)} bytes)`);
  }
  return { status: res.status, text, json: text === "" ? null : JSON.parse(text) };
}

/** A superuser connection for arranging and inspecting the database around engine calls. */
export function adminSql() {
  return postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
}

let counter = 0;
export function uniqueEmail(tag: string): string {
  counter += 1;
  return `${tag}-${process.pid}-${Date.now()}-${counter}@example.com`;
}
