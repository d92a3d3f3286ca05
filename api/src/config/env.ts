/**
 * How an environment variable's text becomes a typed value. Every variable is a TypeBox schema
 * (description, default, bounds) with an `env` key naming how its text is read; `readEnv` reads
 * a whole object of them at once and collects every problem instead of stopping at the first.
 * The schemas are also what docs/reference/configuration.md is generated from (docs.ts).
 *
 * Rules shared by every variable: the value is trimmed; empty means unset (compose passes unset
 * knobs as empty strings) unless the variable says an empty value means something; a secret's
 * value is never repeated in a message.
 */
import { Type, type Static, type TObject, type TProperties, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";

export type Env = Record<string, string | undefined>;

/** How the text is read. */
export type EnvKind = "integer" | "boolean" | "url" | "list" | "enum" | "string";

export interface EnvAnnotations {
  env: EnvKind;
  description: string;
  /** Never repeated in a message. */
  secret?: boolean;
  /** The default, in words, when it is computed at start (e.g. "CPU cores"). */
  defaultText?: string;
  /** An empty value is a value (e.g. "stay the URL's role"), not "unset". */
  emptyIsValue?: boolean;
  /** URL: the protocols accepted ("postgres:", …). */
  protocols?: string[];
  /** Integer: what it counts, for messages ("days", "milliseconds"). */
  unit?: string;
}

type Opts<T> = { description: string; default?: T; secret?: boolean; defaultText?: string };

const annotate = (kind: EnvKind, opts: object) => ({ env: kind, ...opts });

export const BOOLEAN_TRUE = ["1", "true", "yes", "on"];
export const BOOLEAN_FALSE = ["0", "false", "no", "off"];

type IntegerOpts = Opts<number> & { minimum: number; maximum?: number; unit?: string };
type StringOpts = Opts<string> & { pattern?: string; minLength?: number };

/** The kinds of variable; one without a default is Optional (its value is then undefined). */
export const Var = {
  integer: (opts: IntegerOpts & { default: number }) => Type.Integer(annotate("integer", opts)),
  optionalInteger: (opts: IntegerOpts) => Type.Optional(Type.Integer(annotate("integer", opts))),
  boolean: (opts: Opts<boolean> & { default: boolean }) => Type.Boolean(annotate("boolean", opts)),
  optionalBoolean: (opts: Opts<boolean>) => Type.Optional(Type.Boolean(annotate("boolean", opts))),
  url: (opts: Opts<string> & { protocols: string[] }) => Type.Optional(Type.String(annotate("url", opts))),
  list: (opts: Opts<string[]> & { default: string[]; minItems?: number }) => Type.Array(Type.String({ minLength: 1 }), annotate("list", opts)),
  enum: <const V extends string>(values: readonly V[], opts: Opts<V> & { default: V }) =>
    Type.Union(values.map((v) => Type.Literal(v)), annotate("enum", opts)),
  string: (opts: StringOpts & { default: string; emptyIsValue?: boolean }) => Type.String(annotate("string", opts)),
  optionalString: (opts: StringOpts) => Type.Optional(Type.String(annotate("string", opts))),
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
  }
}

/** The value as a message may show it: never a secret, never a URL's password, never very long. */
export function shown(schema: EnvAnnotations, raw: string): string {
  if (schema.secret) return `a value of ${raw.length} characters`;
  let text = raw;
  if (schema.env === "url") {
    try {
      const url = new URL(raw);
      if (url.password) {
        url.password = "***";
        text = url.toString();
      }
    } catch {
      // Unparseable: it may still hold a password, so show only its length.
      return `a value of ${raw.length} characters`;
    }
  }
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}...` : text);
}

export function read(env: Env, name: string, emptyIsValue = false): string | undefined {
  const value = env[name]?.trim();
  if (value === undefined) return undefined;
  return value === "" && !emptyIsValue ? undefined : value;
}

/** "a whole number between 1 and 10", the expected form of an integer variable. */
export function integerForm(schema: { minimum?: number; maximum?: number; unit?: string }): string {
  const of = schema.unit ? ` of ${schema.unit}` : "";
  return schema.maximum === undefined ? `a whole number${of} of at least ${schema.minimum ?? 0}` : `a whole number${of} between ${schema.minimum ?? 0} and ${schema.maximum}`;
}

function parseOne(name: string, schema: TSchema & EnvAnnotations, raw: string, problems: string[]): unknown {
  const got = `(got ${shown(schema, raw)})`;
  switch (schema.env) {
    case "integer": {
      const value = /^[+-]?\d+$/.test(raw) ? Number(raw) : Number.NaN;
      if (!Value.Check(schema, value)) {
        problems.push(`${name} must be ${integerForm(schema)} ${got}`);
        return undefined;
      }
      return value;
    }
    case "boolean": {
      const lower = raw.toLowerCase();
      if (BOOLEAN_TRUE.includes(lower)) return true;
      if (BOOLEAN_FALSE.includes(lower)) return false;
      problems.push(`${name} must be true or false (also 1/0, yes/no, on/off) ${got}`);
      return undefined;
    }
    case "url": {
      const protocols = schema.protocols ?? [];
      const form = `a ${protocols.map((p) => p.replace(/:$/, "")).join(" or ")} URL`;
      let url: URL;
      try {
        url = new URL(raw);
      } catch {
        problems.push(`${name} must be ${form} ${got}`);
        return undefined;
      }
      if (protocols.length > 0 && !protocols.includes(url.protocol)) {
        problems.push(`${name} must be ${form} ${got}`);
        return undefined;
      }
      return raw;
    }
    case "list": {
      const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
      const min = (schema as { minItems?: number }).minItems ?? 0;
      if (items.length < min) {
        problems.push(`${name} must be a comma-separated list of at least ${min} ${got}`);
        return undefined;
      }
      return items;
    }
    case "enum": {
      if (!Value.Check(schema, raw)) {
        const values = (schema as unknown as { anyOf: { const: string }[] }).anyOf.map((s) => s.const);
        problems.push(`${name} must be one of ${values.join(", ")} ${got}`);
        return undefined;
      }
      return raw;
    }
    case "string": {
      if (!Value.Check(schema, raw)) {
        const s = schema as { pattern?: string; minLength?: number };
        const form = s.pattern ? `text matching ${s.pattern}` : `at least ${s.minLength} characters long`;
        problems.push(`${name} must be ${form} ${got}`);
        return undefined;
      }
      return raw;
    }
  }
}

/**
 * Reads every variable of `schema` from `env`: a bad value adds one problem (naming the
 * variable, the value unless secret, and the expected form) and leaves the default in its place,
 * so the caller can go on checking and report everything together.
 */
export function readEnv<P extends TProperties>(schema: TObject<P>, env: Env, problems: string[]): Static<TObject<P>> {
  const values: Record<string, unknown> = {};
  for (const [name, property] of Object.entries(schema.properties)) {
    const variable = property as TSchema & EnvAnnotations;
    const raw = read(env, name, variable.emptyIsValue);
    const parsed = raw === undefined ? undefined : parseOne(name, variable, raw, problems);
    values[name] = parsed ?? variable.default;
  }
  return values as Static<TObject<P>>;
}

/** Every variable a schema knows, with its annotations (for the reference and the tests). */
export function variables(schema: TObject): [string, TSchema & EnvAnnotations][] {
  return Object.entries(schema.properties) as [string, TSchema & EnvAnnotations][];
}

/** Throws ConfigError when there is anything in `problems` (each named once). */
export function throwIfProblems(problems: string[]): void {
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);
}

/** A shared secret's weakness, in the same words wherever it is checked. */
export function weakSecret(name: string, length: number, min: number, what = "characters"): string {
  return `${name} is too weak: ${length} ${what}, at least ${min} are required`;
}

// Variables more than one process reads, defined once.
export const POSTGRES_PROTOCOLS = ["postgres:", "postgresql:"];
export const Shared = {
  DATABASE_URL: Var.url({ protocols: POSTGRES_PROTOCOLS, description: "PostgreSQL, as the authenticator for the API and engine (health, function catalogue, requests); as an owner or superuser for migrate, seed and the audit commands." }),
  REDIS_URL: Var.url({ protocols: ["redis:", "rediss:"], description: "Redis. Unset: the API keeps cache, rate limits and session state in its own process; the worker requires it." }),
};
