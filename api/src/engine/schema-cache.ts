/**
 * What the engine knows about the exposed schemas: functions (for /rpc) and relations with
 * their columns (for table/view reads and the "Perhaps you meant" hints). Loaded at start and
 * again on `NOTIFY pgrst, 'reload schema'`; never queried per request. The gateway reads the
 * same snapshots (its function catalogue: volatility, OpenAPI), from the engine when the engine
 * runs in its process, from a load of its own when it fronts a real PostgREST.
 */
import type { Sql } from "postgres";
import { FuzzySet } from "./fuzzy";

export interface RoutineParam {
  name: string;
  /** The type as SQL spells it (format_type), used to cast arguments. */
  type: string;
  /** pg_type.typname, e.g. json, jsonb, text, _text. */
  typeName: string;
  variadic: boolean;
  hasDefault: boolean;
}

export interface Routine {
  schema: string;
  name: string;
  /** Input parameters (IN, INOUT, VARIADIC) in declaration order. */
  params: RoutineParam[];
  volatility: "immutable" | "stable" | "volatile";
  returnsSet: boolean;
  returnType: string;
  /** void → 204; composite (a row type, OUT/INOUT/TABLE columns) → object or rows; scalar → a JSON value. */
  returnKind: "void" | "scalar" | "composite";
  description: string | null;
  /** Whether the anonymous role may execute it (false when there is no anonymous role). */
  anonymousExecute: boolean;
}

export interface Column {
  name: string;
  type: string;
  nullable: boolean;
  hasDefault: boolean;
}

export interface Relation {
  schema: string;
  name: string;
  kind: "table" | "view" | "materialized_view" | "foreign_table" | "partitioned_table";
  columns: Column[];
  primaryKey: string[];
  description: string | null;
}

/** Where consumers read the schema cache in use. */
export interface SchemaSnapshots {
  /** The snapshot in use, replaced whole by each reload; undefined until one has loaded. */
  current(): SchemaCache | undefined;
  /** Loads now (or joins the load in progress); rejects when the database cannot be read. */
  reload(): Promise<void>;
}

export class SchemaCache {
  private readonly routineFuzzy = new Map<string, FuzzySet>();
  private readonly relationFuzzy = new Map<string, FuzzySet>();

  constructor(
    readonly schemas: string[],
    /** "schema.name" → overloads. */
    readonly routines: Map<string, Routine[]>,
    /** "schema.name" → relation. */
    readonly relations: Map<string, Relation>,
  ) {}

  routinesNamed(schema: string, name: string): Routine[] {
    return this.routines.get(`${schema}.${name}`) ?? [];
  }

  relation(schema: string, name: string): Relation | undefined {
    return this.relations.get(`${schema}.${name}`);
  }

  /** PostgREST's hint for an unknown function name (similarity ≥ 0.75 over the schema's function names). */
  similarRoutineName(schema: string, name: string): string | undefined {
    let set = this.routineFuzzy.get(schema);
    if (!set) {
      set = new FuzzySet([...this.routines.values()].flat().filter((r) => r.schema === schema).map((r) => r.name));
      this.routineFuzzy.set(schema, set);
    }
    return set.getOne(name, 0.75);
  }

  /** PostgREST's hint for an unknown table (similarity ≥ 0.75 over the schema's relation names). */
  similarRelationName(schema: string, name: string): string | undefined {
    let set = this.relationFuzzy.get(schema);
    if (!set) {
      set = new FuzzySet([...this.relations.values()].filter((r) => r.schema === schema).map((r) => r.name));
      this.relationFuzzy.set(schema, set);
    }
    return set.getOne(name, 0.75);
  }
}

const RELKINDS: Record<string, Relation["kind"]> = {
  r: "table", v: "view", m: "materialized_view", f: "foreign_table", p: "partitioned_table",
};

/** The exposed schemas' functions and relations; `anonRole` decides each function's anonymousExecute. */
export async function loadSchemaCache(sql: Sql, schemas: string[], anonRole?: string): Promise<SchemaCache> {
  const [routineRows, relationRows] = await Promise.all([
    sql`
      select n.nspname as schema, p.proname as name, p.provolatile as volatility, p.proretset as returns_set,
             format_type(p.prorettype, null) as return_type,
             p.prorettype = 'void'::regtype as returns_void,
             (rt.typrelid <> 0) as returns_row_type,
             coalesce(p.proargmodes::text[], '{}') as arg_modes,
             coalesce(p.proargnames, '{}') as arg_names,
             array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality u(t, i) order by i) as arg_types,
             array(select ty.typname::text from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality u(t, i) join pg_type ty on ty.oid = u.t order by i) as arg_typnames,
             p.pronargs as n_in, p.pronargdefaults as n_defaults,
             obj_description(p.oid, 'pg_proc') as description,
             coalesce((select has_function_privilege(r.oid, p.oid, 'execute') from pg_roles r where r.rolname = ${anonRole ?? null}), false) as anonymous_execute
        from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        join pg_type rt on rt.oid = p.prorettype
       where n.nspname = any(${schemas}::text[]) and p.prokind = 'f'
         -- PostgREST leaves out what it cannot call: trigger functions, and functions whose
         -- parameters are all unnamed, unless it is a single json, jsonb, text, xml or bytea one
         -- (that one takes the whole body). pg_proc has no argument names at all exactly when
         -- none is named; with some named, the others have '' and count as named, as in PostgREST.
         and p.prorettype <> 'trigger'::regtype
         and case
               when p.pronargs = 0 or p.proargnames is not null then true
               when p.pronargs = 1 then p.proargtypes[0] in ('bytea'::regtype, 'json'::regtype, 'jsonb'::regtype, 'text'::regtype, 'xml'::regtype)
               else false
             end
       order by n.nspname, p.proname, p.oid`,
    sql`
      select n.nspname as schema, c.relname as name, c.relkind::text as relkind,
             obj_description(c.oid, 'pg_class') as description,
             coalesce((select json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                                         'nullable', not a.attnotnull, 'hasDefault', a.atthasdef) order by a.attnum)
                         from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]')::text as columns,
             coalesce((select array_agg(a.attname::text order by k.ord)
                         from pg_constraint con
                         cross join lateral unnest(con.conkey) with ordinality k(attnum, ord)
                         join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
                        where con.conrelid = c.oid and con.contype = 'p'), '{}') as primary_key
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = any(${schemas}::text[]) and c.relkind in ('r', 'v', 'm', 'f', 'p')
       order by n.nspname, c.relname`,
  ]);

  const routines = new Map<string, Routine[]>();
  for (const row of routineRows) {
    const modes: string[] = (row.arg_modes as string[]).length > 0
      ? (row.arg_modes as string[])
      : (row.arg_types as string[]).map(() => "i");
    const names = row.arg_names as string[];
    const types = row.arg_types as string[];
    const typnames = row.arg_typnames as string[];
    const inputs: RoutineParam[] = [];
    let hasOutColumns = false;
    modes.forEach((mode, i) => {
      if (mode === "o" || mode === "t") hasOutColumns = true;
      if (mode === "b") hasOutColumns = true;
      if (mode === "i" || mode === "b" || mode === "v") {
        inputs.push({ name: names[i] ?? "", type: types[i]!, typeName: typnames[i]!, variadic: mode === "v", hasDefault: false });
      }
    });
    const nDefaults = Number(row.n_defaults);
    for (let k = inputs.length - nDefaults; k < inputs.length; k++) if (k >= 0) inputs[k]!.hasDefault = true;
    const returnKind: Routine["returnKind"] = row.returns_void
      ? "void"
      : row.returns_row_type || hasOutColumns ? "composite" : "scalar";
    const routine: Routine = {
      schema: row.schema,
      name: row.name,
      params: inputs,
      volatility: row.volatility === "i" ? "immutable" : row.volatility === "s" ? "stable" : "volatile",
      returnsSet: row.returns_set,
      returnType: row.return_type,
      returnKind,
      description: row.description,
      anonymousExecute: row.anonymous_execute,
    };
    const key = `${routine.schema}.${routine.name}`;
    const list = routines.get(key);
    if (list) list.push(routine);
    else routines.set(key, [routine]);
  }

  for (const list of routines.values()) list.sort(compareOverloads);

  const relations = new Map<string, Relation>();
  for (const row of relationRows) {
    relations.set(`${row.schema}.${row.name}`, {
      schema: row.schema,
      name: row.name,
      kind: RELKINDS[row.relkind as string] ?? "table",
      columns: JSON.parse(row.columns as string) as Column[],
      primaryKey: row.primary_key as string[],
      description: row.description,
    });
  }
  return new SchemaCache(schemas, routines, relations);
}

/** Haskell's `compare` on Text: by code point. */
function compareText(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

const compareBool = (a: boolean, b: boolean) => Number(a) - Number(b);

/** PostgREST's RoutineParam order: name, type, then required (False first), then variadic. */
function compareParam(a: RoutineParam, b: RoutineParam): number {
  return compareText(a.name, b.name) || compareText(a.type, b.type) ||
    compareBool(!a.hasDefault, !b.hasDefault) || compareBool(a.variadic, b.variadic);
}

/**
 * The order PostgREST keeps overloads in (its `Ord Routine`), which is the order of PGRST203's
 * candidates: fewer parameters first; then the description (none first), then the parameter
 * lists element by element; then the return (single before set, scalar before composite) and
 * the volatility (volatile, stable, immutable).
 */
export function compareOverloads(a: Routine, b: Routine): number {
  if (a.params.length !== b.params.length) return a.params.length - b.params.length;
  if (a.description !== b.description) {
    if (a.description === null) return -1;
    if (b.description === null) return 1;
    const d = compareText(a.description, b.description);
    if (d !== 0) return d;
  }
  for (let i = 0; i < a.params.length; i++) {
    const d = compareParam(a.params[i]!, b.params[i]!);
    if (d !== 0) return d;
  }
  const volatility = ["volatile", "stable", "immutable"];
  return compareBool(a.returnsSet, b.returnsSet) ||
    compareBool(a.returnKind === "composite", b.returnKind === "composite") ||
    compareText(a.returnType, b.returnType) ||
    volatility.indexOf(a.volatility) - volatility.indexOf(b.volatility);
}
