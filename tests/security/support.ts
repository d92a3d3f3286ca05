// Shared by the hostile suite: raw requests (the path goes on the wire byte for byte) and a
// dedicated API that trusts X-Forwarded-For, so tests can act from several client addresses.
import { afterAll } from "bun:test";
import { loadConfig } from "../../api/src/config";
import { startApi, type RunningApi } from "../../api/src/server";
import { jsonOrUndefined } from "../api/helpers";
import { sendRaw, type RawResponse } from "../conformance/support/raw-http";
import { testStack } from "../support/stack";

export const canStartInstances = Boolean(testStack().apiEnv);
export const OWN_INSTANCE = "[starts its own API instance: not with API_URL]";

const started: RunningApi[] = [];
afterAll(async () => {
  for (const api of started) await api.stop();
});

/** Another API on the same database and Redis, behind a "proxy" (TRUST_PROXY) whose addresses tests choose. */
export async function proxiedApi(overrides: Record<string, string> = {}): Promise<string> {
  const env = { ...testStack().apiEnv!, TRUST_PROXY: "true", ...overrides };
  const api = await startApi(loadConfig(env), () => {});
  started.push(api);
  return api.url;
}

export interface RawCall {
  status: number;
  headers: Map<string, string>;
  text: string;
  json: any;
}

/** A request whose target is sent exactly as written (fetch would normalise it). */
export async function raw(method: string, target: string, options: { body?: unknown; headers?: Record<string, string>; base?: string } = {}): Promise<RawCall> {
  const port = Number(new URL(options.base ?? testStack().apiUrl).port);
  const headers: [string, string][] = Object.entries(options.headers ?? {});
  let body: Buffer | undefined;
  if (options.body !== undefined) {
    body = Buffer.from(typeof options.body === "string" ? options.body : JSON.stringify(options.body));
    if (!headers.some(([name]) => name.toLowerCase() === "content-type")) headers.push(["Content-Type", "application/json"]);
  }
  const response: RawResponse = await sendRaw(port, { method, target, headers, body });
  const text = response.body.toString("utf8");
  return { status: response.status, headers: response.headers, text, json: jsonOrUndefined(text) };
}

/** PostgREST's error body: exactly these keys, a string code and message. */
export function isPostgrestError(json: unknown): boolean {
  if (json === null || typeof json !== "object") return false;
  const body = json as Record<string, unknown>;
  return Object.keys(body).sort().join(",") === "code,details,hint,message" && typeof body.code === "string" && typeof body.message === "string";
}
