import { CompactSign } from "jose";
import type { ConformanceCase } from "./cases";
import type { RawRequest } from "./raw-http";
import { wireTarget } from "./raw-http";

/** The HS256 secret the cases' `jwt.sign_with: hs256_test_secret` names. */
export const HS256_TEST_SECRET = "reallyreallyreallyreallyverysafe";

const PROFILE_FREE_SCHEMAS = new Set(["test", "public"]);

/** The request exactly as README "Sending a request" describes it. */
export async function buildRequest(c: ConformanceCase): Promise<RawRequest> {
  const headers: [string, string][] = Object.entries(c.request.headers ?? {});
  const has = (name: string) => headers.some(([key]) => key.toLowerCase() === name);

  // A case with its own db-schemas names its default schema first: no profile header for it either.
  const ownDefault = typeof c.config?.["db-schemas"] === "string" ? c.config["db-schemas"].split(",")[0]!.trim() : undefined;
  if (!PROFILE_FREE_SCHEMAS.has(c.schema) && c.schema !== ownDefault && !has("accept-profile")) headers.push(["Accept-Profile", c.schema]);

  if (c.request.jwt) {
    if (c.request.jwt.sign_with !== "hs256_test_secret") throw new RunnerError(`case ${c.id}: unknown jwt.sign_with ${c.request.jwt.sign_with}`);
    if (!has("authorization")) headers.push(["Authorization", `Bearer ${await signExactly(c.request.jwt.payload)}`]);
  }

  let body: Buffer | undefined;
  if ("body_raw" in c.request) body = Buffer.from(c.request.body_raw ?? "", "utf8");
  else if ("body" in c.request) {
    body = Buffer.from(typeof c.request.body === "string" ? c.request.body : JSON.stringify(c.request.body), "utf8");
  }
  return { method: c.request.method, target: wireTarget(c.request.path), headers, body };
}

/** Signs the payload bytes as given: no claim checks (some payloads must be refused by the server). */
async function signExactly(payload: Record<string, unknown>): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .sign(new TextEncoder().encode(HS256_TEST_SECRET));
}

/** A defect of the runner or of a case file, never of the engine: fails whatever the list says. */
export class RunnerError extends Error {
  override name = "RunnerError";
}
