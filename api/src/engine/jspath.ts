/**
 * The path of `jwt-role-claim-key` into the JWT's claims, in the two syntaxes PostgREST 16
 * reads:
 *
 * - JSONPath (RFC 9535), starting with `$`: `$.role`, `$.realm_access.roles[0]`, `$.roles[-1]`,
 *   `$["https://example.com/role"]`, `$['a b']`, `$.*`, `$[*]`, and filters on one value,
 *   `$.roles[?@ == "admin"]` / `$.roles[?(@ != 'other')]`. Also read: `$."quoted key"`.
 * - The older JSPath, without the `$`: `.role`, `.a.b[0]`, `."https://example.com/role"`,
 *   `.roles[?(@ == "admin")]` with its operators ==, !=, ^== (starts with), ==^ (ends with) and
 *   *== (contains). Deprecated since 16.2: still read with the same meaning, and the engine logs
 *   one warning at start (`legacyRoleClaimKeyWarning`).
 *
 * A path selects a list of nodes (RFC 9535's nodelist); the role is the first of them.
 */
export type FilterOp = "==" | "!=" | "^==" | "==^" | "*==";

export type JsPathStep =
  | { kind: "key"; key: string }
  | { kind: "index"; index: number }
  | { kind: "wildcard" }
  | { kind: "filter"; op: FilterOp; value: string };

export type JsPath = JsPathStep[];

/** Whether the value is in the older JSPath syntax (no leading `$`), deprecated since PostgREST 16.2. */
export function isLegacyJsPath(source: string): boolean {
  return !source.startsWith("$");
}

export function parseJsPath(source: string): JsPath {
  return isLegacyJsPath(source) ? parseLegacy(source) : parseJsonPath(source);
}

function failure(source: string, why: string): never {
  throw new Error(`failed to parse role-claim-key value (${source}): ${why}`);
}

/** The older JSPath: `.key`, `."quoted"`, `[n]`, `[?(@ op "value")]`. */
function parseLegacy(source: string): JsPath {
  const fail = (why: string): never => failure(source, why);
  const steps: JsPath = [];
  let i = 0;
  if (source.length === 0) fail("empty path");
  while (i < source.length) {
    const ch = source[i];
    if (ch === ".") {
      i++;
      if (source[i] === '"') {
        const end = source.indexOf('"', i + 1);
        if (end < 0) fail("unterminated quote");
        steps.push({ kind: "key", key: source.slice(i + 1, end) });
        i = end + 1;
      } else {
        const m = /^[A-Za-z0-9_$@]+/.exec(source.slice(i));
        if (!m) fail(`expected an attribute name at ${i}`);
        steps.push({ kind: "key", key: m![0] });
        i += m![0].length;
      }
    } else if (ch === "[") {
      const rest = source.slice(i);
      const idx = /^\[(\d+)\]/.exec(rest);
      const key = /^\["([^"]*)"\]/.exec(rest);
      const filter = /^\[\?\(@\s*(==\^|\^==|\*==|==|!=)\s*"([^"]*)"\s*\)\]/.exec(rest);
      if (idx) {
        steps.push({ kind: "index", index: Number(idx[1]) });
        i += idx[0].length;
      } else if (key) {
        steps.push({ kind: "key", key: key[1]! });
        i += key[0].length;
      } else if (filter) {
        steps.push({ kind: "filter", op: filter[1] as FilterOp, value: filter[2]! });
        i += filter[0].length;
      } else {
        fail(`expected an array index, a quoted key or a filter at ${i}`);
      }
    } else {
      fail(`unexpected ${JSON.stringify(ch)} at ${i}`);
    }
  }
  return steps;
}

const SHORTHAND_FIRST = /[A-Za-z_\u0080-\uffff]/;
const SHORTHAND_REST = /[A-Za-z0-9_\u0080-\uffff]/;
const ESCAPES: Record<string, string> = { b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", "/": "/", "\\": "\\", '"': '"', "'": "'" };

/** RFC 9535 JSONPath, the subset a role claim needs (see the module comment). */
function parseJsonPath(source: string): JsPath {
  const fail = (why: string): never => failure(source, why);
  const steps: JsPath = [];
  let i = 1; // past "$"
  const blanks = () => {
    while (i < source.length && " \t\n\r".includes(source[i]!)) i++;
  };
  const stringLiteral = (): string => {
    const quote = source[i]!;
    let out = "";
    i++;
    while (i < source.length && source[i] !== quote) {
      const ch = source[i]!;
      if (ch === "\\") {
        const next = source[i + 1];
        if (next === "u") {
          const hex = source.slice(i + 2, i + 6);
          if (!/^[0-9A-Fa-f]{4}$/.test(hex)) fail(`bad \\u escape at ${i}`);
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
          continue;
        }
        if (next === undefined || !(next in ESCAPES) || (next === "'" && quote !== "'") || (next === '"' && quote !== '"')) {
          fail(`bad escape at ${i}`);
        }
        out += ESCAPES[next!];
        i += 2;
        continue;
      }
      out += ch;
      i++;
    }
    if (i >= source.length) fail("unterminated string");
    i++; // closing quote
    return out;
  };
  const filter = (): JsPathStep => {
    // After "?": `@ op "s"`, `"s" op @`, either one in parentheses.
    blanks();
    let parens = 0;
    while (source[i] === "(") {
      parens++;
      i++;
      blanks();
    }
    let value: string | undefined;
    let op: FilterOp | undefined;
    const readOp = () => {
      blanks();
      const m = /^(==|!=)/.exec(source.slice(i));
      if (!m) fail(`expected == or != at ${i}`);
      i += m![0].length;
      blanks();
      return m![0] as FilterOp;
    };
    if (source[i] === "@") {
      i++;
      op = readOp();
      if (source[i] !== '"' && source[i] !== "'") fail(`expected a string literal at ${i}`);
      value = stringLiteral();
    } else if (source[i] === '"' || source[i] === "'") {
      value = stringLiteral();
      op = readOp();
      if (source[i] !== "@") fail(`expected @ at ${i}`);
      i++;
    } else {
      fail(`expected a comparison of @ with a string at ${i}`);
    }
    blanks();
    while (parens > 0) {
      if (source[i] !== ")") fail(`expected ) at ${i}`);
      parens--;
      i++;
      blanks();
    }
    return { kind: "filter", op: op!, value: value! };
  };
  while (i < source.length) {
    const ch = source[i];
    if (ch === ".") {
      i++;
      if (source[i] === "*") {
        steps.push({ kind: "wildcard" });
        i++;
      } else if (source[i] === '"') {
        steps.push({ kind: "key", key: stringLiteral() });
      } else {
        if (i >= source.length || !SHORTHAND_FIRST.test(source[i]!)) fail(`expected a member name at ${i}`);
        const start = i;
        while (i < source.length && SHORTHAND_REST.test(source[i]!)) i++;
        steps.push({ kind: "key", key: source.slice(start, i) });
      }
    } else if (ch === "[") {
      i++;
      blanks();
      const c = source[i];
      if (c === "'" || c === '"') {
        steps.push({ kind: "key", key: stringLiteral() });
      } else if (c === "*") {
        steps.push({ kind: "wildcard" });
        i++;
      } else if (c === "?") {
        i++;
        steps.push(filter());
      } else {
        const m = /^(-?(?:0|[1-9]\d*))/.exec(source.slice(i));
        if (!m || m[1] === "-0") fail(`expected an index, a name, * or a filter at ${i}`);
        steps.push({ kind: "index", index: Number(m![1]) });
        i += m![1]!.length;
      }
      blanks();
      if (source[i] !== "]") fail(`expected ] at ${i}`);
      i++;
    } else {
      fail(`unexpected ${JSON.stringify(ch)} at ${i}`);
    }
  }
  return steps;
}

function matches(step: JsPathStep & { kind: "filter" }, v: unknown): boolean {
  if (typeof v !== "string") return false;
  switch (step.op) {
    case "==": return v === step.value;
    case "!=": return v !== step.value;
    case "^==": return v.startsWith(step.value);
    case "==^": return v.endsWith(step.value);
    case "*==": return v.includes(step.value);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The nodes `path` selects in `value`, in document order. */
export function selectJsPath(value: unknown, path: JsPath): unknown[] {
  let nodes: unknown[] = [value];
  for (const step of path) {
    const next: unknown[] = [];
    for (const node of nodes) {
      switch (step.kind) {
        case "key":
          if (isObject(node) && Object.prototype.hasOwnProperty.call(node, step.key)) next.push(node[step.key]);
          break;
        case "index":
          if (Array.isArray(node)) {
            const at = step.index < 0 ? node.length + step.index : step.index;
            if (at >= 0 && at < node.length) next.push(node[at]);
          }
          break;
        case "wildcard":
          if (Array.isArray(node)) next.push(...node);
          else if (isObject(node)) next.push(...Object.values(node));
          break;
        case "filter":
          if (Array.isArray(node)) next.push(...node.filter((v) => matches(step, v)));
          else if (isObject(node)) next.push(...Object.values(node).filter((v) => matches(step, v)));
          break;
      }
    }
    nodes = next;
  }
  return nodes;
}

/** The first node `path` selects in `value`, or undefined when it selects none. */
export function walkJsPath(value: unknown, path: JsPath): unknown {
  return selectJsPath(value, path)[0];
}

/** `steps` written as JSONPath, or undefined when a step has no JSONPath equivalent (^==, ==^, *==). */
export function toJsonPath(steps: JsPath): string | undefined {
  let out = "$";
  for (const step of steps) {
    if (step.kind === "key") out += /^[A-Za-z_][A-Za-z0-9_]*$/.test(step.key) ? `.${step.key}` : `[${JSON.stringify(step.key)}]`;
    else if (step.kind === "index") out += `[${step.index}]`;
    else if (step.kind === "wildcard") out += "[*]";
    else if (step.op === "==" || step.op === "!=") out += `[?@ ${step.op} ${JSON.stringify(step.value)}]`;
    else return undefined;
  }
  return out;
}

/** The start-up warning for a role claim key in the deprecated syntax; undefined for JSONPath. */
export function legacyRoleClaimKeyWarning(source: string): string | undefined {
  if (!isLegacyJsPath(source)) return undefined;
  const rewritten = toJsonPath(parseLegacy(source));
  return (
    `WARNING: jwt-role-claim-key ${JSON.stringify(source)} uses the JSPath syntax, deprecated since PostgREST 16.2 ` +
    `and due for removal; ` +
    (rewritten === undefined
      ? "write it as an RFC 9535 JSONPath starting with $."
      : `write it as the RFC 9535 JSONPath ${JSON.stringify(rewritten)}.`)
  );
}
