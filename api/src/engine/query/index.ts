/**
 * The engine's read machinery, shared by `/rpc/<fn>` (set-returning functions) and
 * `/<table or view>`: one grammar (PostgREST's query parameters) and one SQL builder.
 *
 *   const q = parseReadQuery(rawQuery, { rangeHeader: req.headers.get("range") });   // PGRST100/103/108/123/127
 *   const media = negotiateRead(req.headers.get("accept"));                             // PGRST107
 *   const sql = buildReadSql({ text: '"api"."things"', values: [], qualifier: '"api"."things"' }, q,
 *                            { count, shape: media.shape, stripNulls: media.stripNulls });
 *   const [row] = await tx.unsafe(sql.text, sql.values);  // one row: total_result_set, page_total, body, GUCs
 *   const outcome = rangeOutcome(q.range, Number(row.page_total), count ? Number(row.total_result_set) : null);
 *   // outcome.status (200/206/416), outcome.contentRange; rangeErrorBody() for the inline 416
 */
export type {
  Condition, Field, Filter, JsonStep, Operation, OrderTerm, ReadQuery, RowRange, SelectItem,
} from "./types";
export { parseReadQuery, decodeQueryString, resolveRange, notImplemented, type ParseOptions, type RawParams } from "./params";
export {
  buildReadSql, buildCountExplainSql, plannedRows, quoteIdent, qualified, arrayLiteral, UnsafeCastError,
  type BodyShape, type BuildOptions, type ReadRow, type ReadSource, type SqlText,
} from "./sql";
export { contentRange, rangeErrorBody, rangeOutcome, type RangeOutcome } from "./range";
export { negotiateRead, type ReadMedia } from "./media";
