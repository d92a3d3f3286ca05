/**
 * A small parser-combinator core with Parsec's semantics (consumed/empty replies, error merging by
 * position, labels, `try`). PostgREST's query grammar is written with Parsec and its PGRST100
 * bodies print Parsec's error text ("unexpected ... expecting ..."); reproducing those bodies
 * byte for byte needs the same error algebra, not just the same grammar.
 */

const enum MsgKind {
  SysUnExpect = 0,
  UnExpect = 1,
  Expect = 2,
  Message = 3,
}

interface Msg {
  kind: MsgKind;
  text: string;
}

export interface Pos {
  line: number;
  column: number;
}

export interface ParseError {
  pos: Pos;
  msgs: Msg[];
}

export interface State {
  input: string[]; // code points
  index: number;
  pos: Pos;
}

export type Reply<T> =
  | { ok: true; consumed: boolean; value: T; state: State; err: ParseError }
  | { ok: false; consumed: boolean; err: ParseError };

export type Parser<T> = (s: State) => Reply<T>;

const unknownError = (s: State): ParseError => ({ pos: s.pos, msgs: [] });
const isUnknown = (e: ParseError) => e.msgs.length === 0;

function comparePos(a: Pos, b: Pos): number {
  return a.line !== b.line ? a.line - b.line : a.column - b.column;
}

function mergeError(e1: ParseError, e2: ParseError): ParseError {
  if (e2.msgs.length === 0 && e1.msgs.length !== 0) return e1;
  if (e1.msgs.length === 0 && e2.msgs.length !== 0) return e2;
  const c = comparePos(e1.pos, e2.pos);
  if (c === 0) return { pos: e1.pos, msgs: [...e1.msgs, ...e2.msgs] };
  return c > 0 ? e1 : e2;
}

/** Parsec's setErrorMessage: drop every message of the same kind, put the new one first. */
function setErrorMessage(msg: Msg, e: ParseError): ParseError {
  return { pos: e.pos, msgs: [msg, ...e.msgs.filter((m) => m.kind !== msg.kind)] };
}

function advance(pos: Pos, c: string): Pos {
  if (c === "\n") return { line: pos.line + 1, column: 1 };
  if (c === "\t") return { line: pos.line, column: pos.column + 8 - ((pos.column - 1) % 8) };
  return { line: pos.line, column: pos.column + 1 };
}

// ---------- Haskell `show` for the tokens that appear in messages ----------

const asciiNames = [
  "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "a", "b", "t", "n", "v", "f", "r", "SO", "SI",
  "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US",
];

/** Haskell's showLitChar, with the `\&` rule for a numeric escape followed by a digit (or SO + H). */
function showLit(chars: string[], quote: '"' | "'"): string {
  let out = "";
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const code = c.codePointAt(0)!;
    const next = chars[i + 1];
    if (c === "\\") out += "\\\\";
    else if (c === quote) out += "\\" + quote;
    else if (code >= 32 && code < 127) out += c;
    else if (code === 127) out += "\\DEL";
    else if (code < 32) {
      out += "\\" + asciiNames[code];
      if (code === 14 && next === "H") out += "\\&";
    } else {
      out += "\\" + String(code);
      if (next !== undefined && /^[0-9]$/.test(next)) out += "\\&";
    }
  }
  return out;
}

export const showString = (s: string[] | string) => '"' + showLit(typeof s === "string" ? Array.from(s) : s, '"') + '"';
export const showChar = (c: string) => "'" + showLit([c], "'") + "'";

// ---------- primitives ----------

export function pure<T>(value: T): Parser<T> {
  return (s) => ({ ok: true, consumed: false, value, state: s, err: unknownError(s) });
}

/** `mzero` / `guard False`: fail without a message. */
export const zero: Parser<never> = (s) => ({ ok: false, consumed: false, err: unknownError(s) });

export function unexpected(text: string): Parser<never> {
  return (s) => ({ ok: false, consumed: false, err: { pos: s.pos, msgs: [{ kind: MsgKind.UnExpect, text }] } });
}

function tokenPrim(show: (c: string) => string, test: (c: string) => boolean): Parser<string> {
  return (s) => {
    const c = s.input[s.index];
    if (c === undefined) return { ok: false, consumed: false, err: { pos: s.pos, msgs: [{ kind: MsgKind.SysUnExpect, text: "" }] } };
    if (!test(c)) return { ok: false, consumed: false, err: { pos: s.pos, msgs: [{ kind: MsgKind.SysUnExpect, text: show(c) }] } };
    const pos = advance(s.pos, c);
    const state = { input: s.input, index: s.index + 1, pos };
    return { ok: true, consumed: true, value: c, state, err: { pos, msgs: [] } };
  };
}

export const satisfy = (test: (c: string) => boolean) => tokenPrim((c) => showString([c]), test);
export const anyChar = satisfy(() => true);
const anyToken = tokenPrim(showChar, () => true);

export function char(c: string): Parser<string> {
  return label(satisfy((x) => x === c), showString([c]));
}

export function oneOf(chars: string): Parser<string> {
  return satisfy((c) => chars.includes(c));
}

export function noneOf(chars: string): Parser<string> {
  return satisfy((c) => !chars.includes(c));
}

/** Haskell's isAlpha (Unicode letters), with an ASCII fast path. */
export const isLetter = (c: string) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c > "\x7f" && /^\p{L}$/u.test(c));
export const isDigit = (c: string) => c >= "0" && c <= "9";
export const letter = label(satisfy(isLetter), "letter");
export const digit = label(satisfy(isDigit), "digit");

/** Parsec's `string`: errors are reported at the start position, even after a partial match. */
export function string(str: string): Parser<string> {
  const want = Array.from(str);
  return (s) => {
    const expect: Msg = { kind: MsgKind.Expect, text: showString(want) };
    let pos = s.pos;
    for (let i = 0; i < want.length; i++) {
      const c = s.input[s.index + i];
      if (c !== want[i]) {
        const sys: Msg = { kind: MsgKind.SysUnExpect, text: c === undefined ? "" : showString([c]) };
        return { ok: false, consumed: i > 0, err: { pos: s.pos, msgs: [expect, sys] } };
      }
      pos = advance(pos, c!);
    }
    if (want.length === 0) return { ok: true, consumed: false, value: str, state: s, err: unknownError(s) };
    const state = { input: s.input, index: s.index + want.length, pos };
    return { ok: true, consumed: true, value: str, state, err: { pos, msgs: [] } };
  };
}

// ---------- combinators ----------

export function bind<A, B>(p: Parser<A>, k: (a: A) => Parser<B>): Parser<B> {
  return (s) => {
    const r = p(s);
    if (!r.ok) return r;
    const r2 = k(r.value)(r.state);
    if (r2.consumed || isUnknown(r.err)) {
      return r.consumed && !r2.consumed ? { ...r2, consumed: true } : r2;
    }
    // k did not consume: its error is merged with the error p left behind.
    const err = mergeError(r.err, r2.err);
    return r2.ok ? { ...r2, consumed: r.consumed, err } : { ok: false, consumed: r.consumed, err };
  };
}

export function map<A, B>(p: Parser<A>, f: (a: A) => B): Parser<B> {
  return (s) => {
    const r = p(s);
    return r.ok ? { ...r, value: f(r.value) } : r;
  };
}

/** `p *> q` */
export const then = <A, B>(p: Parser<A>, q: Parser<B>): Parser<B> => bind(p, () => q);
/** `p <* q` */
export const skip = <A, B>(p: Parser<A>, q: Parser<B>): Parser<A> => bind(p, (a) => bind(q, () => pure(a)));
/** `p $> v` */
export const as = <A, B>(p: Parser<A>, v: B): Parser<B> => map(p, () => v);

export function seq<T extends unknown[]>(...ps: { [K in keyof T]: Parser<T[K]> }): Parser<T> {
  return (ps as Parser<unknown>[]).reduceRight<Parser<unknown[]>>(
    (rest, p) => bind(p, (a) => map(rest, (xs) => [a, ...xs])),
    pure([]),
  ) as Parser<T>;
}

export function alt<T>(...ps: Parser<T>[]): Parser<T> {
  return ps.reduce((m, n) => (s) => {
    const r = m(s);
    if (r.ok || r.consumed) return r;
    const r2 = n(s);
    if (r2.consumed) return r2;
    return r2.ok ? { ...r2, err: mergeError(r.err, r2.err) } : { ok: false, consumed: false, err: mergeError(r.err, r2.err) };
  });
}

export function label<T>(p: Parser<T>, msg: string): Parser<T> {
  const expect: Msg = { kind: MsgKind.Expect, text: msg };
  return (s) => {
    const r = p(s);
    if (r.consumed) return r;
    if (r.ok) return isUnknown(r.err) ? r : { ...r, err: setErrorMessage(expect, r.err) };
    return { ok: false, consumed: false, err: setErrorMessage(expect, r.err) };
  };
}

export function attempt<T>(p: Parser<T>): Parser<T> {
  return (s) => {
    const r = p(s);
    return !r.ok && r.consumed ? { ok: false, consumed: false, err: r.err } : r;
  };
}

export function lookAhead<T>(p: Parser<T>): Parser<T> {
  return (s) => {
    const r = p(s);
    if (!r.ok) return r;
    return { ok: true, consumed: false, value: r.value, state: s, err: unknownError(s) };
  };
}

export function many<T>(p: Parser<T>): Parser<T[]> {
  return (s) => {
    const values: T[] = [];
    let state = s;
    let consumed = false;
    for (;;) {
      const r = p(state);
      if (r.ok) {
        if (!r.consumed) throw new Error("many: parser accepts the empty string");
        values.push(r.value);
        state = r.state;
        consumed = true;
        continue;
      }
      if (r.consumed) return r;
      return { ok: true, consumed, value: values, state, err: r.err };
    }
  };
}

/**
 * `many (satisfy test)` without the per-character combinator overhead (values and in-lists can
 * be long): the same result, consumption and trailing error as the general `many`.
 */
export function manySatisfy(test: (c: string) => boolean): Parser<string> {
  return (s) => {
    let i = s.index;
    let pos = s.pos;
    while (i < s.input.length && test(s.input[i]!)) pos = advance(pos, s.input[i++]!);
    const stop = s.input[i];
    const err: ParseError = { pos, msgs: [{ kind: MsgKind.SysUnExpect, text: stop === undefined ? "" : showString([stop]) }] };
    const value = s.input.slice(s.index, i).join("");
    return { ok: true, consumed: i > s.index, value, state: { input: s.input, index: i, pos }, err };
  };
}

/**
 * `many1 (label (satisfy t1) l1 <|> … <|> satisfy tn)` fused into one loop: the same value,
 * consumption and errors (one Expect per labelled alternative, the token as SysUnExpect).
 */
export function many1Fused(test: (c: string) => boolean, labels: string[]): Parser<string> {
  const failure = (pos: Pos, c: string | undefined): ParseError => {
    const text = c === undefined ? "" : showString([c]);
    return { pos, msgs: [...labels.map((l) => ({ kind: MsgKind.Expect, text: l })), { kind: MsgKind.SysUnExpect, text }] };
  };
  return (s) => {
    let i = s.index;
    let pos = s.pos;
    while (i < s.input.length && test(s.input[i]!)) pos = advance(pos, s.input[i++]!);
    if (i === s.index) return { ok: false, consumed: false, err: failure(s.pos, s.input[i]) };
    const value = s.input.slice(s.index, i).join("");
    return { ok: true, consumed: true, value, state: { input: s.input, index: i, pos }, err: failure(pos, s.input[i]) };
  };
}

export const many1 = <T>(p: Parser<T>): Parser<T[]> => bind(p, (x) => map(many(p), (xs) => [x, ...xs]));

export const sepBy1 = <T, S>(p: Parser<T>, sep: Parser<S>): Parser<T[]> =>
  bind(p, (x) => map(many(then(sep, p)), (xs) => [x, ...xs]));

export const sepBy = <T, S>(p: Parser<T>, sep: Parser<S>): Parser<T[]> => alt(sepBy1(p, sep), pure([] as T[]));

export const option = <T>(x: T, p: Parser<T>): Parser<T> => alt(p, pure(x));
export const optionMaybe = <T>(p: Parser<T>): Parser<T | null> => option<T | null>(null, p);

export const between = <O, C, T>(open: Parser<O>, close: Parser<C>, p: Parser<T>): Parser<T> => then(open, skip(p, close));

/**
 * Succeeds without consuming when `p` fails; otherwise fails at the position of the token `p`
 * matched (PostgREST's doctests pin this position: the offending character's own column).
 */
export function notFollowedBy(p: Parser<string>): Parser<null> {
  return (s) => {
    const r = attempt(p)(s);
    if (r.ok) return { ok: false, consumed: false, err: { pos: s.pos, msgs: [{ kind: MsgKind.UnExpect, text: showChar(r.value) }] } };
    return { ok: true, consumed: false, value: null, state: s, err: unknownError(s) };
  };
}

export const eof: Parser<null> = label(notFollowedBy(anyToken), "end of input");

export function lazy<T>(f: () => Parser<T>): Parser<T> {
  let p: Parser<T> | undefined;
  return (s) => (p ??= f())(s);
}

// ---------- running and rendering ----------

export function run<T>(p: Parser<T>, input: string): { ok: true; value: T } | { ok: false; error: ParseError } {
  const r = p({ input: Array.from(input), index: 0, pos: { line: 1, column: 1 } });
  return r.ok ? { ok: true, value: r.value } : { ok: false, error: r.err };
}

/** Parsec's `show (errorPos e)` for a named source. */
export function showPos(sourceName: string, pos: Pos): string {
  return `"${sourceName}" (line ${pos.line}, column ${pos.column})`;
}

/**
 * Parsec's showErrorMessages "or" "unknown parse error" "expecting" "unexpected" "end of input",
 * with PostgREST's post-processing (newlines to spaces, stripped).
 */
export function showMessages(e: ParseError): string {
  const msgs = [...e.msgs].sort((a, b) => a.kind - b.kind); // stable: Parsec orders by kind only
  if (msgs.length === 0) return "unknown parse error";
  const sysUnExpect = msgs.filter((m) => m.kind === MsgKind.SysUnExpect);
  const unExpect = msgs.filter((m) => m.kind === MsgKind.UnExpect);
  const expect = msgs.filter((m) => m.kind === MsgKind.Expect);
  const other = msgs.filter((m) => m.kind === MsgKind.Message);

  const clean = (xs: string[]) => [...new Set(xs.filter((x) => x.length > 0))];
  const commasOr = (ms: string[]) =>
    ms.length === 0 ? "" : ms.length === 1 ? ms[0]! : clean(ms.slice(0, -1)).join(", ") + " or " + ms[ms.length - 1];
  const showMany = (pre: string, ms: Msg[]) => {
    const texts = clean(ms.map((m) => m.text));
    if (texts.length === 0) return "";
    return pre === "" ? commasOr(texts) : pre + " " + commasOr(texts);
  };
  const showSys =
    unExpect.length > 0 || sysUnExpect.length === 0
      ? ""
      : sysUnExpect[0]!.text === ""
        ? "unexpected end of input"
        : "unexpected " + sysUnExpect[0]!.text;
  const parts = clean([showSys, showMany("unexpected", unExpect), showMany("expecting", expect), showMany("", other)]);
  return parts.map((p) => "\n" + p).join("").replace(/\n/g, " ").trim();
}
