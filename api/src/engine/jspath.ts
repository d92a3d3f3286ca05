/**
 * PostgREST's JSPath for `jwt-role-claim-key`: `.role`, `$.postgrest.roles[1]`,
 * `$["https://example.com/roles"][0].value`, and filters on arrays such as
 * `.roles[?(@ == "admin")]` (operators ==, !=, ^== starts with, ==^ ends with, *== contains).
 */
export type JsPathStep =
  | { kind: "key"; key: string }
  | { kind: "index"; index: number }
  | { kind: "filter"; op: "==" | "!=" | "^==" | "==^" | "*=="; value: string };

export type JsPath = JsPathStep[];

export function parseJsPath(source: string): JsPath {
  const fail = (why: string): never => {
    throw new Error(`failed to parse role-claim-key value (${source}): ${why}`);
  };
  const steps: JsPath = [];
  let i = 0;
  if (source.startsWith("$")) i = 1;
  if (i >= source.length) fail("empty path");
  const quoted = (): string => {
    const end = source.indexOf('"', i + 1);
    if (end < 0) fail("unterminated quote");
    const text = source.slice(i + 1, end);
    i = end + 1;
    return text;
  };
  while (i < source.length) {
    const ch = source[i];
    if (ch === ".") {
      i++;
      if (source[i] === '"') {
        steps.push({ kind: "key", key: quoted() });
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
        steps.push({ kind: "filter", op: filter[1] as "==", value: filter[2]! });
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

function matches(op: JsPathStep & { kind: "filter" }, v: unknown): boolean {
  if (typeof v !== "string") return false;
  switch (op.op) {
    case "==": return v === op.value;
    case "!=": return v !== op.value;
    case "^==": return v.startsWith(op.value);
    case "==^": return v.endsWith(op.value);
    case "*==": return v.includes(op.value);
  }
}

/** The value at `path` in `value`, or undefined when any step does not apply. */
export function walkJsPath(value: unknown, path: JsPath): unknown {
  let current: unknown = value;
  for (const step of path) {
    if (current === undefined || current === null) return undefined;
    if (step.kind === "key") {
      if (typeof current !== "object" || Array.isArray(current)) return undefined;
      if (!Object.prototype.hasOwnProperty.call(current, step.key)) return undefined;
      current = (current as Record<string, unknown>)[step.key];
    } else if (step.kind === "index") {
      if (!Array.isArray(current)) return undefined;
      current = current[step.index];
    } else {
      if (!Array.isArray(current)) return undefined;
      current = current.find((v) => matches(step, v));
    }
  }
  return current;
}
