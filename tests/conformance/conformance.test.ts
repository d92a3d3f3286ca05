// PostgREST's public conformance cases (rpc, auth, errors) against the embedded engine,
// over real HTTP, on a fresh database loaded with tests/conformance/fixtures.
// See /work/shared/conformance/README.md for the case format and the rules followed here.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { testStack } from "../support/stack";
import { AREAS, SHARED_AREAS, loadSuite, type ConformanceCase } from "./support/cases";
import { checkResponse, validateExpect } from "./support/check";
import { createConformanceDatabase, type ConformanceDatabase } from "./support/database";
import { sendRaw } from "./support/raw-http";
import { buildRequest, RunnerError } from "./support/request";
import { EngineServers } from "./support/servers";

const suite = loadSuite();

interface Outcome {
  area: string;
  feature: string;
  /** The engine's real result, whatever expected-failures.json says. */
  passed: boolean;
  problems: string[];
}
const outcomes = new Map<number, Outcome>();

let database: ConformanceDatabase | undefined;
let servers: EngineServers | undefined;

beforeAll(async () => {
  database = await createConformanceDatabase(testStack().databaseUrl);
  servers = new EngineServers(database.url, suite.counted);
}, 60_000);

afterAll(async () => {
  await servers?.closeAll();
  await database?.drop();
  printSummary();
}, 60_000);

async function runCase(c: ConformanceCase): Promise<Outcome> {
  validateExpect(c.id, c.expect);
  const request = await buildRequest(c);
  let port: number;
  try {
    port = await servers!.portFor(c);
  } catch (error) {
    if (error instanceof RunnerError) throw error;
    return fail(c, `createEngine refused this configuration: ${error instanceof Error ? error.message : String(error)}`);
  }
  const response = await sendRaw(port, request);
  const problems = checkResponse(c.id, c.expect, response);
  return { area: c.area, feature: c.feature, passed: problems.length === 0, problems };
}

function fail(c: ConformanceCase, problem: string): Outcome {
  return { area: c.area, feature: c.feature, passed: false, problems: [problem] };
}

describe("conformance suite", () => {
  test("expected-failures.json lists only counted cases, each with a reason", () => {
    const counted = new Set(suite.counted.map((c) => c.id));
    const stray = [...suite.expectedFailures].filter(([id, reason]) => !counted.has(id) || reason.trim() === "");
    expect(stray).toEqual([]);
  });

  test("every case's expectations use only keys the runner checks", () => {
    for (const c of suite.all) validateExpect(c.id, c.expect);
  });
});

for (const area of AREAS) {
  describe(area, () => {
    for (const c of suite.counted.filter((candidate) => candidate.area === area)) {
      test(`${c.id} ${c.feature}`, async () => {
        let outcome: Outcome;
        try {
          outcome = await runCase(c);
        } catch (error) {
          outcomes.set(c.id, fail(c, `runner error: ${error instanceof Error ? error.message : String(error)}`));
          throw error;
        } finally {
          await servers?.release(c);
        }
        outcomes.set(c.id, outcome);
        const reason = suite.expectedFailures.get(c.id);
        if (reason !== undefined) {
          if (outcome.passed) throw new Error(`listed case now passes: remove it from expected-failures.json (${reason})`);
          return;
        }
        if (!outcome.passed) throw new Error(`${c.request.method} ${c.request.path}\n  ${outcome.problems.join("\n  ")}`);
      });
    }
  });
}

function printSummary() {
  const counted = suite.counted;
  const passed = counted.filter((c) => outcomes.get(c.id)?.passed).length;
  const lines = [`conformance: ${passed} passed, ${counted.length - passed} failed`];
  const shared = counted.filter((c) => (SHARED_AREAS as readonly string[]).includes(c.area));
  const sharedPassed = shared.filter((c) => outcomes.get(c.id)?.passed).length;
  lines.push(`  shared cases: ${sharedPassed}/${shared.length}; our transcriptions: ${passed - sharedPassed}/${counted.length - shared.length}`);
  for (const area of AREAS) {
    const inArea = counted.filter((c) => c.area === area);
    const ok = inArea.filter((c) => outcomes.get(c.id)?.passed).length;
    lines.push(`  ${area}: ${ok} passed, ${inArea.length - ok} failed`);
  }
  const percent = counted.length === 0 ? 0 : (100 * passed) / counted.length;
  lines.push(`  ${percent.toFixed(1)}% of ${counted.length} counted cases pass (${servers?.distinctConfigurations ?? 0} server configurations)`);
  console.log(lines.join("\n"));

  // Optional machine-readable detail for tests/conformance/FAILURES.md upkeep.
  const reportPath = process.env.CONFORMANCE_REPORT;
  if (reportPath) {
    const failures = counted
      .filter((c) => !outcomes.get(c.id)?.passed)
      .map((c) => ({ id: c.id, area: c.area, feature: c.feature, method: c.request.method, path: c.request.path, problems: outcomes.get(c.id)?.problems ?? ["not run"] }));
    writeFileSync(reportPath, `${JSON.stringify({ passed, failed: counted.length - passed, failures }, null, 2)}\n`);
  }
}
