import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** The shared conformance material beside the checkout (README, scope.json, cases/*.json). */
export const SHARED_CONFORMANCE_DIR = resolve(join(import.meta.dir, "..", "..", "..", "..", "shared", "conformance"));
/** The committed copy, for checkouts without shared/ beside them (see snapshot/README.md). */
export const SNAPSHOT_DIR = resolve(join(import.meta.dir, "..", "snapshot"));
/** Where the cases are read from: CONFORMANCE_DIR, else the shared material, else the snapshot. */
export const CONFORMANCE_DIR = resolve(
  process.env.CONFORMANCE_DIR ?? (existsSync(join(SHARED_CONFORMANCE_DIR, "scope.json")) ? SHARED_CONFORMANCE_DIR : SNAPSHOT_DIR),
);
/** The shared areas (cases/<area>.json in CONFORMANCE_DIR). */
export const SHARED_AREAS = ["rpc", "auth", "errors"] as const;
/**
 * Our own transcriptions (tests/conformance/local/<area>.json) from PostgREST's test specs, for
 * what the engine claims beyond the shared areas. Same case format; ids from 90000.
 */
export const LOCAL_AREAS = ["v16-rpc", "v16-options", "v16-profiles", "v16-ranges", "v16-timezone"] as const;
export const LOCAL_DIR = resolve(join(import.meta.dir, "..", "local"));
export const AREAS = [...SHARED_AREAS, ...LOCAL_AREAS] as const;
export type Area = (typeof AREAS)[number];

export type ConfigValue = string | number | boolean | null;

export interface CaseRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: unknown;
  body_raw?: string;
  jwt?: { sign_with: string; payload: Record<string, unknown> };
}

export interface JsonPathCheck {
  path: string;
  equals?: unknown;
  present?: boolean;
  exists?: boolean;
  absent?: boolean;
}

export interface CaseExpect {
  status: number;
  status_text?: string;
  headers?: Record<string, string>;
  headers_absent?: string[];
  body_exact?: unknown;
  body_raw?: string;
  body_jsonpath?: JsonPathCheck[];
}

export interface ConformanceCase {
  id: number;
  area: Area;
  feature: string;
  schema: string;
  config?: Record<string, ConfigValue>;
  request: CaseRequest;
  expect: CaseExpect;
  source?: string;
}

interface Scope {
  missing: Record<string, string>;
  out_of_scope: Record<string, string>;
  needs_relation_reads: number[];
}

export interface Suite {
  /** Every transcribed case, in file order per area. */
  all: ConformanceCase[];
  /** The cases that count toward the target: all minus out_of_scope and missing. */
  counted: ConformanceCase[];
  scope: Scope;
  /** id → one-line reason, from tests/conformance/expected-failures.json. */
  expectedFailures: Map<number, string>;
}

const EXPECTED_FAILURES_FILE = join(import.meta.dir, "..", "expected-failures.json");

export function loadSuite(): Suite {
  if (!existsSync(join(CONFORMANCE_DIR, "scope.json"))) {
    throw new Error(`conformance material not found in ${CONFORMANCE_DIR} (set CONFORMANCE_DIR)`);
  }
  const scope = JSON.parse(readFileSync(join(CONFORMANCE_DIR, "scope.json"), "utf8")) as Scope;
  const read = (file: string, area: Area) =>
    (JSON.parse(readFileSync(file, "utf8")) as Omit<ConformanceCase, "area">[]).map((c) => ({ ...c, area }));
  const all = [
    ...SHARED_AREAS.flatMap((area) => read(join(CONFORMANCE_DIR, "cases", `${area}.json`), area)),
    ...LOCAL_AREAS.flatMap((area) => read(join(LOCAL_DIR, `${area}.json`), area)),
  ];
  const ids = new Set<number>();
  for (const c of all) {
    if (ids.has(c.id)) throw new Error(`conformance case id ${c.id} is used twice`);
    ids.add(c.id);
  }
  const excluded = new Set([...Object.keys(scope.out_of_scope), ...Object.keys(scope.missing)].map(Number));
  const counted = all.filter((c) => !excluded.has(c.id));
  const listed = JSON.parse(readFileSync(EXPECTED_FAILURES_FILE, "utf8")) as Record<string, string>;
  const expectedFailures = new Map(Object.entries(listed).map(([id, reason]) => [Number(id), reason] as const));
  return { all, counted, scope, expectedFailures };
}
