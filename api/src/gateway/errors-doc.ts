import { GATEWAY_ERRORS, type ErrorSource } from "./errors";

/** Marks the part of docs/reference/errors.md that is generated from GATEWAY_ERRORS. */
export const TABLE_BEGIN = "<!-- BEGIN generated from api/src/gateway/errors.ts: bun api/src/cli/errors-doc.ts -->";
export const TABLE_END = "<!-- END generated -->";

const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");
const prose = (text: string) => cell(text).replaceAll("<", "&lt;");
/** As a code span, so that `<…>` and `*` in a text stay literal. */
const literal = (text: string | null) => (text === null ? "" : `\`${cell(text)}\``);

const HEADINGS: Record<ErrorSource, string> = {
  gateway: "The gateway's own codes",
  postgrest: "PostgREST's codes the gateway answers in PostgREST's place",
  sql: "SQL codes the gateway answers in a function's place",
};

/** The tables of the closed list, one per source, in code order. */
export function renderErrorTables(): string {
  const entries = Object.entries(GATEWAY_ERRORS).sort(([a], [b]) => a.localeCompare(b));
  const sections = (Object.keys(HEADINGS) as ErrorSource[]).map((source) => {
    const rows = entries
      .filter(([, spec]) => spec.source === source)
      .map(([code, spec]) =>
        `| \`${code}\` | ${spec.status} | ${literal(spec.message)} | ${prose(spec.meaning)} | ${literal(spec.hint)} | ${prose(spec.when)} |`);
    return [`### ${HEADINGS[source]}`, "", "| code | status | message | meaning | hint | when |", "|---|---|---|---|---|---|", ...rows].join("\n");
  });
  return [TABLE_BEGIN, "", sections.join("\n\n"), "", TABLE_END].join("\n");
}

/** The document with its generated part replaced by the current tables. */
export function withCurrentTables(document: string): string {
  const begin = document.indexOf(TABLE_BEGIN);
  const end = document.indexOf(TABLE_END);
  if (begin === -1 || end < begin) throw new Error("docs/reference/errors.md has no generated section markers");
  return document.slice(0, begin) + renderErrorTables() + document.slice(end + TABLE_END.length);
}
