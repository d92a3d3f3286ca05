import type { CaseExpect, JsonPathCheck } from "./cases";
import type { RawResponse } from "./raw-http";
import { RunnerError } from "./request";

const KNOWN_KEYS = new Set(["status", "status_text", "headers", "headers_absent", "body_exact", "body_raw", "body_jsonpath"]);
const JSONPATH_ASSERTIONS = new Set(["equals", "present", "exists", "absent"]);

/** Throws RunnerError for a key this runner does not understand: never a silent pass. */
export function validateExpect(id: number, expect: CaseExpect) {
  for (const key of Object.keys(expect)) {
    if (!KNOWN_KEYS.has(key)) throw new RunnerError(`case ${id}: unknown expect key "${key}"`);
  }
  if (typeof expect.status !== "number") throw new RunnerError(`case ${id}: expect.status is missing`);
  for (const check of expect.body_jsonpath ?? []) {
    const assertions = Object.keys(check).filter((key) => key !== "path");
    if (typeof check.path !== "string" || assertions.length !== 1 || !JSONPATH_ASSERTIONS.has(assertions[0]!)) {
      throw new RunnerError(`case ${id}: unsupported body_jsonpath entry ${JSON.stringify(check)}`);
    }
    parseJsonPath(id, check.path);
  }
}

/** Every mismatch between the response and README "Checking the response"; empty means pass. */
export function checkResponse(id: number, expect: CaseExpect, response: RawResponse): string[] {
  validateExpect(id, expect);
  const problems: string[] = [];
  const bodyText = response.body.toString("utf8");

  if (response.status !== expect.status) problems.push(`status: expected ${expect.status}, got ${response.status}`);
  if (expect.status_text !== undefined && response.statusText !== expect.status_text) {
    problems.push(`status_text: expected ${JSON.stringify(expect.status_text)}, got ${JSON.stringify(response.statusText)}`);
  }
  for (const [name, value] of Object.entries(expect.headers ?? {})) {
    const got = response.headers.get(name.toLowerCase());
    if (got !== String(value)) problems.push(`header ${name}: expected ${JSON.stringify(String(value))}, got ${got === undefined ? "(absent)" : JSON.stringify(got)}`);
  }
  for (const name of expect.headers_absent ?? []) {
    const got = response.headers.get(name.toLowerCase());
    if (got !== undefined) problems.push(`header ${name}: expected absent, got ${JSON.stringify(got)}`);
  }
  if ("body_exact" in expect) {
    const wanted = expect.body_exact;
    if (wanted === null || wanted === "") {
      if (response.body.length !== 0) problems.push(`body: expected empty, got ${preview(bodyText)}`);
    } else {
      const decoded = decodeJson(bodyText);
      if (!decoded.ok) problems.push(`body: expected JSON ${JSON.stringify(wanted)}, got non-JSON ${preview(bodyText)}`);
      else if (!Bun.deepEquals(decoded.value, wanted, true)) problems.push(`body: expected ${JSON.stringify(wanted)}, got ${preview(bodyText)}`);
    }
  }
  if (expect.body_raw !== undefined && bodyText !== expect.body_raw) {
    problems.push(`body_raw: expected ${JSON.stringify(expect.body_raw)}, got ${preview(bodyText)}`);
  }
  if (expect.body_jsonpath) {
    const decoded = decodeJson(bodyText);
    if (!decoded.ok) problems.push(`body: expected JSON for body_jsonpath, got ${preview(bodyText)}`);
    else for (const check of expect.body_jsonpath) problems.push(...checkJsonPath(id, check, decoded.value));
  }
  return problems;
}

function checkJsonPath(id: number, check: JsonPathCheck, document: unknown): string[] {
  const found = resolveJsonPath(parseJsonPath(id, check.path), document);
  const label = `jsonpath ${check.path}`;
  if ("equals" in check) {
    if (!found.found) return [`${label}: expected ${JSON.stringify(check.equals)}, got (absent)`];
    return Bun.deepEquals(found.value, check.equals, true) ? [] : [`${label}: expected ${JSON.stringify(check.equals)}, got ${JSON.stringify(found.value)}`];
  }
  const mustExist = "absent" in check ? !check.absent : Boolean(check.present ?? check.exists);
  if (found.found === mustExist) return [];
  return [`${label}: expected ${mustExist ? "present" : "absent"}, got ${found.found ? JSON.stringify(found.value) : "(absent)"}`];
}

type Step = string | number;

/** `$`, `.name`, `["name"]`, `[index]`: enough for the cases, and anything else is a runner error. */
function parseJsonPath(id: number, path: string): Step[] {
  if (!path.startsWith("$")) throw new RunnerError(`case ${id}: unsupported JSONPath ${path}`);
  const steps: Step[] = [];
  const pattern = /\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/y;
  pattern.lastIndex = 1;
  while (pattern.lastIndex < path.length) {
    const match = pattern.exec(path);
    if (!match) throw new RunnerError(`case ${id}: unsupported JSONPath ${path}`);
    if (match[1] !== undefined) steps.push(match[1]);
    else if (match[2] !== undefined) steps.push(Number(match[2]));
    else steps.push(JSON.parse(`"${match[3]}"`) as string);
  }
  return steps;
}

function resolveJsonPath(steps: Step[], document: unknown): { found: boolean; value?: unknown } {
  let current: unknown = document;
  for (const step of steps) {
    if (typeof step === "number") {
      if (!Array.isArray(current) || step >= current.length) return { found: false };
      current = current[step];
    } else {
      if (current === null || typeof current !== "object" || Array.isArray(current) || !Object.hasOwn(current, step)) return { found: false };
      current = (current as Record<string, unknown>)[step];
    }
  }
  return { found: true, value: current };
}

function decodeJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

function preview(text: string): string {
  return text.length === 0 ? "(empty body)" : JSON.stringify(text.length > 400 ? `${text.slice(0, 400)}…` : text);
}
