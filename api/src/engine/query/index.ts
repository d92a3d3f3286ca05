/**
 * The engine's read machinery, shared by `/rpc/<fn>` (set-returning functions) and
 * `/<table or view>`: one grammar (PostgREST's query parameters) and one SQL builder.
 *
 *   const q = parseReadQuery(url.search, { rangeHeader: req.headers.get("range") });
 *   const sql = buildReadSql({ text: '"api"."things"', values: [], qualifier: '"api"."things"' }, q, { count, shape: "json" });
 *   const [row] = await tx.unsafe(sql.text, sql.values);   // one row: total_result_set, page_total, body, …
 *   const { status, headers } = readResponseMeta(q, row, count)  // Content-Range, 206/416
 */
export type {
  Condition, Field, Filter, JsonStep, Operation, OrderTerm, ReadQuery, RowRange, SelectItem,
} from "./types";
export { parseReadQuery, decodeQueryString, resolveRange, notImplemented, type ParseOptions, type RawParams } from "./params";
export {
  buildReadSql, quoteIdent, qualified, arrayLiteral, UnsafeCastError,
  type BodyShape, type BuildOptions, type ReadRow, type ReadSource, type SqlText,
} from "./sql";
export { contentRange, rangeOutcome, type RangeOutcome } from "./range";
export { negotiateRead, type ReadMedia } from "./media";
