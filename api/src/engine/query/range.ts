/**
 * Content-Range and the read status, as PostgREST's RangeQuery computes them: 206 when a counted
 * page is smaller than the total, 416 when the offset lies beyond the counted total.
 */
import { ApiError } from "../errors";
import type { RowRange } from "./types";

export interface RangeOutcome {
  status: 200 | 206 | 416;
  contentRange: string;
  /** The 416 body (PGRST103 with the offset and total); only when status is 416. */
  error?: ApiError;
}

export function contentRange(lower: number, upper: number, total: number | null): string {
  const range = total !== 0 && lower <= upper ? `${lower}-${upper}` : "*";
  return `${range}/${total === null ? "*" : total}`;
}

/** `tableTotal` is the exact count when the client asked for one, else null. */
export function rangeOutcome(range: RowRange, pageTotal: number, tableTotal: number | null): RangeOutcome {
  const lower = range.lower;
  const upper = lower + pageTotal - 1;
  const header = contentRange(lower, upper, tableTotal);
  if (tableTotal === null) return { status: 200, contentRange: header };
  if (lower > tableTotal) {
    return {
      status: 416,
      contentRange: header,
      error: new ApiError(
        416,
        "PGRST103",
        "Requested range not satisfiable",
        `An offset of ${lower} was requested, but there are only ${tableTotal} rows.`,
      ),
    };
  }
  return { status: 1 + upper - lower < tableTotal ? 206 : 200, contentRange: header };
}

/**
 * The body of the 416 PostgREST renders inline from a read result (not through its error
 * handler, so the response has the read's headers and no Proxy-Status); the client-error
 * verbosity still applies.
 */
export function rangeErrorBody(err: ApiError, verbosity: "verbose" | "minimal"): string {
  return verbosity === "minimal" ? JSON.stringify({ code: err.code, message: err.message }) : err.body();
}
