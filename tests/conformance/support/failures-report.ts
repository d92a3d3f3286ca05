// Rewrites the generated part of tests/conformance/FAILURES.md from a CONFORMANCE_REPORT file:
//   CONFORMANCE_REPORT=/tmp/conformance.json bun test tests/conformance
//   bun tests/conformance/support/failures-report.ts /tmp/conformance.json
// The hand-written notes above the marker line are kept.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadSuite } from "./cases";

interface Report {
  passed: number;
  failed: number;
  failures: { id: number; area: string; feature: string; method: string; path: string; problems: string[] }[];
}

const MARKER = "<!-- generated below by support/failures-report.ts; edit above this line -->";
const reportPath = process.argv[2];
if (!reportPath) throw new Error("usage: bun tests/conformance/support/failures-report.ts <report.json>");
const report = JSON.parse(readFileSync(reportPath, "utf8")) as Report;
const suite = loadSuite();
const target = join(import.meta.dir, "..", "FAILURES.md");
const notes = existsSync(target) ? readFileSync(target, "utf8").split(MARKER)[0]!.trimEnd() : "# Conformance failures";

const counted = report.passed + report.failed;
const lines = [
  notes,
  "",
  MARKER,
  "",
  `## Run of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC: ${report.passed} passed, ${report.failed} failed (${((100 * report.passed) / counted).toFixed(1)}% of ${counted})`,
];
const groups = new Map<string, Report["failures"]>();
for (const failure of report.failures) {
  const family = failure.feature.split("/").slice(0, 2).join("/");
  groups.set(family, [...(groups.get(family) ?? []), failure]);
}
for (const [family, failures] of groups) {
  lines.push("", `### ${family} (${failures.length})`, "");
  for (const failure of failures) {
    const listed = suite.expectedFailures.get(failure.id);
    lines.push(`- **${failure.id}** \`${failure.feature}\` — \`${failure.method} ${failure.path}\`${listed ? ` (listed: ${listed})` : ""}`);
    for (const problem of failure.problems) lines.push(`  - ${problem.replaceAll("\n", " ").slice(0, 600)}`);
  }
}
writeFileSync(target, `${lines.join("\n")}\n`);
console.log(`wrote ${target}: ${report.failures.length} failures in ${groups.size} groups`);
