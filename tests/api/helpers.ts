import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { SignJWT } from "jose";
import { freePort } from "../../api/src/stack/free-port";
import { testStack } from "../support/stack";

export const ROOT = resolve(import.meta.dir, "../..");

export interface CallOptions {
  method?: string;
  body?: unknown;
  token?: string;
  headers?: Record<string, string>;
  base?: string;
}

export interface CallResult {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/** One HTTP request to the API under test (or `base`), body read and parsed when JSON. */
export async function call(path: string, options: CallOptions = {}): Promise<CallResult> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    headers["Content-Type"] ??= "application/json";
  }
  const response = await fetch(`${options.base ?? testStack().apiUrl}${path}`, {
    method: options.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: jsonOrUndefined(text) };
}

/** A body's JSON, or undefined when it is empty or not JSON. */
export function jsonOrUndefined(text: string): any {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

export interface TestUser {
  email: string;
  password: string;
}

export function newUser(): TestUser {
  return { email: `user-${randomUUID()}@example.com`, password: `pw-${randomUUID()}` };
}

export async function signUp(user: TestUser, base?: string): Promise<CallResult> {
  const result = await call("/rpc/sign_up", { base, body: { ...user, first_name: "Test", last_name: "User" } });
  if (result.status !== 200) throw new Error(`sign_up failed: ${result.status} ${result.text}`);
  return result;
}

export interface Tokens {
  access_token: string;
  refresh_token: string;
  user: { id: string; email: string };
}

export async function signIn(user: TestUser, base?: string): Promise<Tokens> {
  const result = await call("/rpc/sign_in", { base, body: { email: user.email, password: user.password } });
  if (result.status !== 200) throw new Error(`sign_in failed: ${result.status} ${result.text}`);
  return result.json as Tokens;
}

/** A user who exists and is signed in. */
export async function signedInUser(base?: string): Promise<TestUser & Tokens> {
  const user = newUser();
  await signUp(user, base);
  return { ...user, ...(await signIn(user, base)) };
}

/** Signs claims with `secret` (default: the API's own), for tokens the API must judge. */
export async function mintToken(claims: Record<string, unknown>, options: { secret?: string; alg?: string } = {}): Promise<string> {
  const secret = options.secret ?? testStack().jwtSecret;
  if (!secret) throw new Error("the API's JWT secret is unknown (set PGRST_JWT_SECRET with API_URL)");
  return new SignJWT(claims).setProtectedHeader({ alg: options.alg ?? "HS256", typ: "JWT" }).sign(new TextEncoder().encode(secret));
}

export interface SpawnedApi {
  url: string;
  proc: Bun.Subprocess;
  output(): string;
  stop(): Promise<void>;
}

/** `bun api/src/server.ts` as a separate process with `env`, ready when /health answers. */
export async function spawnApi(env: Record<string, string>): Promise<SpawnedApi> {
  const port = await freePort();
  const proc = Bun.spawn(["bun", "api/src/server.ts"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env, HOST: "127.0.0.1", PORT: String(port), LOG_REQUESTS: "false" },
    stdout: "pipe",
    stderr: "pipe",
  });
  let output = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      output += decoder.decode(value, { stream: true });
    }
  };
  void drain(proc.stdout as ReadableStream<Uint8Array>);
  void drain(proc.stderr as ReadableStream<Uint8Array>);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`api exited with ${proc.exitCode}: ${output}`);
    try {
      const response = await fetch(`${url}/health`);
      await response.arrayBuffer();
      if (response.status < 500) break;
    } catch {}
    await Bun.sleep(50);
  }
  return {
    url,
    proc,
    output: () => output,
    async stop() {
      proc.kill("SIGTERM");
      const killer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await proc.exited;
      clearTimeout(killer);
    },
  };
}

/** PostgREST's error body, keys as PostgREST orders them. */
export function pgrstError(code: string, message: string, details: string | null = null, hint: string | null = null) {
  return { code, details, hint, message };
}

/**
 * Moves the retirement of a rotated refresh token past the retry grace (REFRESH_REUSE_GRACE_SECONDS),
 * so presenting it again is reuse: the clock moved in SQL, not by sleeping.
 */
export async function pastRefreshGrace(refreshToken: string): Promise<void> {
  const { default: postgres } = await import("postgres");
  const sql = postgres(testStack().databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql`update auth.refresh_tokens set retired_at = retired_at - interval '1 hour' where token_hash = auth.token_digest(${refreshToken})`;
  } finally {
    await sql.end();
  }
}
