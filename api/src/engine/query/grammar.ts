/**
 * PostgREST's query-parameter grammar (select, filters, and/or trees, order, columns), written on
 * the Parsec-compatible core so that a malformed parameter yields PostgREST's exact PGRST100 text.
 * The productions follow PostgREST's ApiRequest/QueryParams module (read for reference).
 */
import {
  alt, anyChar, as, manySatisfy, many1Fused, isLetter, isDigit, attempt, between, bind, char, digit, eof, label, lazy, lookAhead, many, many1, map,
  noneOf, notFollowedBy, oneOf, option, optionMaybe, pure, sepBy, sepBy1, seq, skip, string, then, zero,
  type Parser,
} from "./parsec";
import type {
  AggregateName, Condition, Field, Filter, FtsOperator, IsValue, JsonStep, Operation, OrderTerm, QuantOperator,
  SelectItem, SimpleOperator,
} from "./types";

const strip = (s: string) => s.replace(/^\s+|\s+$/g, "");
const join = (cs: string[]) => cs.join("");

const ws = many(oneOf(" \t"));
const lexeme = <T>(p: Parser<T>): Parser<T> => then(ws, skip(p, ws));

export const pDelimiter = label(char("."), "delimiter (.)");

export const pQuotedValue: Parser<string> = map(
  then(char('"'), skip(many(alt(noneOf('\\"'), then(char("\\"), anyChar))), char('"'))),
  join,
);

// many1 (letter <|> digit <|> oneOf "_ $"), fused for speed.
const isIdentifierChar = (c: string) => isLetter(c) || isDigit(c) || c === "_" || c === " " || c === "$";
export const pIdentifier: Parser<string> = map(many1Fused(isIdentifierChar, ["letter", "digit"]), strip);

/** Identifiers may contain single dashes, but `->` starts a JSON path. */
function sepByDash(p: Parser<string>): Parser<string> {
  const dash = as(attempt(then(char("-"), notFollowedBy(char(">")))), "-");
  return map(sepBy1(p, dash), (parts) => parts.join("-"));
}

export const pFieldName: Parser<string> = label(alt(pQuotedValue, sepByDash(pIdentifier)), "field name (* or [a..z0..9_$])");

const pJsonKeyIdentifier = map(many1(noneOf("(-:.,>)")), (cs) => strip(join(cs)));
const pJsonKeyName = label(alt(pQuotedValue, sepByDash(pJsonKeyIdentifier)), "any non reserved character different from: .,>()");

const pJsonPath: Parser<JsonStep[]> = (() => {
  const arrow = alt(attempt(as(string("->>"), "->>" as const)), attempt(as(string("->"), "->" as const)));
  const pEnd = alt(
    attempt(lookAhead(string("->"))),
    attempt(lookAhead(string("::"))),
    attempt(lookAhead(string("."))),
    attempt(lookAhead(string(","))),
    attempt(map(eof, () => "")),
  );
  const pIdx = map(skip(seq(option("+", char("-")), many1(digit)), pEnd), ([sign, ds]) => sign + join(ds));
  const operand = alt(
    attempt(map(pIdx, (v) => ({ operand: v, isIndex: true }))),
    attempt(map(pJsonKeyName, (v) => ({ operand: v, isIndex: false }))),
  );
  return many(map(seq(arrow, operand), ([a, o]): JsonStep => ({ arrow: a, ...o })));
})();

export const pField: Parser<Field> = lexeme(map(seq(pFieldName, option<JsonStep[]>([], pJsonPath)), ([name, jsonPath]) => ({ name, jsonPath })));

/** A parameter key: an embed path (`a.b.col`) ending in a field with an optional JSON path. */
export const pTreePath: Parser<{ path: string[]; field: Field }> = map(
  seq(sepBy1(pFieldName, pDelimiter), option<JsonStep[]>([], pJsonPath)),
  ([names, jsonPath]) => ({ path: names.slice(0, -1), field: { name: names[names.length - 1]!, jsonPath } }),
);

const aliasSeparator = then(char(":"), notFollowedBy(char(":")));

// ---------- select ----------

const pEmbedParams: Parser<{ hint: string | null; joinType: "left" | "inner" | null }> = (() => {
  type P = { hint: string } | { joinType: "left" | "inner" };
  const param: Parser<P> = then(
    char("!"),
    alt<P>(
      attempt(as(string("left"), { joinType: "left" as const })),
      attempt(as(string("inner"), { joinType: "inner" as const })),
      attempt(map(pFieldName, (hint) => ({ hint }))),
    ),
  );
  return map(seq(optionMaybe(param), optionMaybe(param)), ([a, b]) => {
    const pick = <K extends "hint" | "joinType">(k: K) =>
      a && k in a ? (a as Record<K, string>)[k] : b && k in b ? (b as Record<K, string>)[k] : null;
    return { hint: pick("hint"), joinType: pick("joinType") as "left" | "inner" | null };
  });
})();

const openParen = attempt(map(lookAhead(string("(")), () => null));

const pRelationSelect = lexeme(
  bind(optionMaybe(attempt(skip(pFieldName, aliasSeparator))), (alias) =>
    bind(pFieldName, (name) =>
      name === "count"
        ? zero
        : bind(pEmbedParams, ({ hint, joinType }) => then(openParen, pure({ name, alias, hint, joinType }))),
    ),
  ),
);

const pSpreadRelationSelect = lexeme(
  bind(then(string("..."), pFieldName), (name) =>
    bind(pEmbedParams, ({ hint, joinType }) => then(openParen, pure({ name, hint, joinType }))),
  ),
);

const pFieldSelect: Parser<SelectItem> = (() => {
  const pEnd = alt(
    attempt(map(lookAhead(string(")")), () => null)),
    attempt(map(lookAhead(string(",")), () => null)),
    attempt(eof),
  );
  const cast = optionMaybe(then(string("::"), pIdentifier));
  const aggregation = alt<AggregateName>(
    as(string("sum"), "sum"),
    as(string("avg"), "avg"),
    as(string("count"), "count"),
    attempt(as(string("max"), "max")),
    attempt(as(string("min"), "min")),
  );
  const alias = optionMaybe(attempt(skip(pFieldName, aliasSeparator)));
  const star = attempt(
    then(string("*"), then(pEnd, pure<SelectItem>({ kind: "field", field: { name: "*", jsonPath: [] }, alias: null, cast: null, aggregate: null, aggregateCast: null }))),
  );
  const countStar = attempt(
    map(seq(alias, string("count()"), cast, pEnd), ([al, , aggCast]): SelectItem => ({
      kind: "field", field: { name: "*", jsonPath: [] }, alias: al, cast: null, aggregate: "count", aggregateCast: aggCast,
    })),
  );
  const plain = map(
    seq(alias, pField, cast, optionMaybe(attempt(skip(then(char("."), aggregation), string("()")))), cast, pEnd),
    ([al, field, c, aggregate, aggregateCast]): SelectItem => ({ kind: "field", field, alias: al, cast: c, aggregate, aggregateCast }),
  );
  return lexeme(alt(star, countStar, plain));
})();

export const pFieldForest: Parser<SelectItem[]> = lazy(() => {
  const children = between(char("("), char(")"), pFieldForest);
  const tree = alt<SelectItem>(
    map(seq(attempt(pSpreadRelationSelect), children), ([r, c]): SelectItem => ({ kind: "spread", ...r, children: c })),
    map(seq(attempt(pRelationSelect), children), ([r, c]): SelectItem => ({ kind: "relation", ...r, children: c })),
    pFieldSelect,
  );
  return sepBy(tree, lexeme(char(",")));
});

// ---------- filters ----------

const ciString = (s: string): Parser<string> =>
  map(seq(...Array.from(s).map((c) => alt(char(c), char(c.toUpperCase())))), (cs) => (cs as string[]).join(""));

const simpleOperator = label(
  alt<SimpleOperator>(
    ...(["neq", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"] as const).map((op) => attempt(as(string(op), op))),
  ),
  "unknown single value operator",
);

const quantOperator = label(
  alt<QuantOperator>(
    ...(["eq", "gte", "gt", "lte", "lt", "like", "ilike", "match", "imatch"] as const).map((op) => attempt(as(string(op), op))),
  ),
  "unknown single value operator",
);

const notListDelimiter = (c: string) => c !== "," && c !== ")";
const pListElement = alt(attempt(skip(pQuotedValue, notFollowedBy(noneOf(",)")))), manySatisfy(notListDelimiter));
const pListVal = then(lexeme(char("(")), skip(sepBy1(pListElement, char(",")), lexeme(char(")"))));

export function pOpExpr(pSingleVal: Parser<string>): Parser<{ negated: boolean; operation: Operation }> {
  const negation = alt(attempt(as(then(string("not"), pDelimiter), true)), pure(false));
  const pIn = map(then(attempt(then(string("in"), pDelimiter)), pListVal), (values): Operation => ({ kind: "in", values }));
  const isVal = label(
    alt<IsValue>(...(["null", "not_null", "true", "false", "unknown"] as const).map((v) => attempt(as(ciString(v), v)))),
    "isVal: (null, not_null, true, false, unknown)",
  );
  const pIs = map(then(attempt(then(string("is"), pDelimiter)), isVal), (value): Operation => ({ kind: "is", value }));
  const pIsDist = map(then(attempt(then(string("isdistinct"), pDelimiter)), pSingleVal), (value): Operation => ({ kind: "isdistinct", value }));
  const pSimple = bind(simpleOperator, (op) => then(pDelimiter, map(pSingleVal, (value): Operation => ({ kind: "simple", op, value }))));
  const quantifier = optionMaybe(attempt(between(char("("), char(")"), alt(attempt(as(string("any"), "any" as const)), as(string("all"), "all" as const)))));
  const pQuant = bind(quantOperator, (op) =>
    bind(quantifier, (q) => then(pDelimiter, map(pSingleVal, (value): Operation => ({ kind: "quant", op, quantifier: q, value })))),
  );
  const pFts = bind(
    alt<FtsOperator>(...(["fts", "plfts", "phfts", "wfts"] as const).map((op) => attempt(as(string(op), op)))),
    (op) =>
      bind(optionMaybe(attempt(between(char("("), char(")"), pIdentifier))), (language) =>
        then(pDelimiter, map(pSingleVal, (value): Operation => ({ kind: "fts", op, language, value }))),
      ),
  );
  const operation = label(alt(pIn, pIs, pIsDist, attempt(pFts), attempt(pSimple), attempt(pQuant)), "operator (eq, gt, ...)");
  return bind(negation, (negated) => map(operation, (op) => ({ negated, operation: op })));
}

export const pSingleVal: Parser<string> = manySatisfy(() => true);

const pLogicSingleVal: Parser<string> = (() => {
  const pgArray = map(seq(string("{"), many(noneOf("{}")), string("}")), ([a, b, c]) => a + join(b) + c);
  return alt(attempt(skip(pQuotedValue, notFollowedBy(noneOf(",)")))), attempt(pgArray), manySatisfy(notListDelimiter));
})();

export const pLogicTree: Parser<Condition> = lazy(() => {
  const logicFilter = map(
    seq(skip(pField, pDelimiter), pOpExpr(pLogicSingleVal)),
    ([field, { negated, operation }]): Condition => ({ kind: "filter", filter: { field, negated, operation } }),
  );
  const pNot = label(alt(attempt(as(then(string("not"), pDelimiter), true)), pure(false)), "negation operator (not)");
  const pLogicOp = label(alt(attempt(as(string("and"), "and" as const)), as(string("or"), "or" as const)), "logic operator (and, or)");
  const children = then(lexeme(char("(")), skip(sepBy1(pLogicTree, lexeme(char(","))), lexeme(char(")"))));
  const expr = map(seq(pNot, pLogicOp, children), ([negated, kind, cs]): Condition => ({ kind, negated, children: cs }));
  return alt(attempt(logicFilter), expr);
});

/** A logic-tree key (`or`, `not.and`, `rel.or`): its embed path and the operator text with any `not.`. */
export const pLogicPath: Parser<{ path: string[]; op: string }> = map(sepBy1(pFieldName, pDelimiter), (names) => {
  const op = names[names.length - 1]!;
  return { path: names.slice(0, -1).filter((n) => n !== "not"), op: names.includes("not") ? "not." + op : op };
});

// ---------- order ----------

export const pOrder: Parser<Array<OrderTerm | { relation: string }>> = (() => {
  const pEnd = alt(attempt(map(lookAhead(char(",")), () => null)), attempt(eof));
  const dir = alt(attempt(then(pDelimiter, as(string("asc"), "asc" as const))), attempt(then(pDelimiter, as(string("desc"), "desc" as const))));
  const nulls = alt(
    attempt(then(pDelimiter, as(string("nullsfirst"), "first" as const))),
    attempt(then(pDelimiter, as(string("nullslast"), "last" as const))),
  );
  const nullsThenEnd = alt(skip(optionMaybe(nulls), pEnd), as(pEnd, null));
  const term = map(seq(pField, optionMaybe(dir), nullsThenEnd), ([field, direction, n]): OrderTerm => ({ field, direction, nulls: n }));
  const relationTerm = map(
    seq(pFieldName, between(char("("), char(")"), pField), optionMaybe(dir), nullsThenEnd),
    ([relation]) => ({ relation }),
  );
  return sepBy1(lexeme(alt<OrderTerm | { relation: string }>(attempt(relationTerm), term)), char(","));
})();

export const pColumns: Parser<string[]> = sepBy1(pFieldName, lexeme(char(",")));

export type { Filter };
