import type { Sql } from "postgres";

export interface CatalogArgument {
  name: string;
  type: string;
  hasDefault: boolean;
}

export interface CatalogFunction {
  schema: string;
  name: string;
  args: CatalogArgument[];
  returnType: string;
  returnsSet: boolean;
  volatility: "immutable" | "stable" | "volatile";
  description: string | null;
  /** Whether the anonymous role may execute it (otherwise the bearer token is required). */
  anonymous: boolean;
}

/**
 * The functions PostgREST exposes (every function of the exposed schemas), read from pg_proc.
 * Swagger's document and the cache's volatility decisions come from here, so neither can drift
 * from the database. Reloaded on PostgREST's own `NOTIFY pgrst` after migrations.
 */
export class FunctionCatalog {
  private functions: CatalogFunction[] = [];
  private bySchema = new Map<string, Map<string, CatalogFunction[]>>();
  private loaded = false;
  private reloading: Promise<void> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly sql: Sql,
    private readonly schemas: string[],
    private readonly anonRole: string,
    private readonly log: (event: Record<string, unknown>) => void = () => {},
  ) {}

  /** Loads now, listens for reloads; a database that is down is retried in the background. */
  async start(): Promise<void> {
    this.sql.listen("pgrst", () => void this.reload()).catch(() => {});
    await this.reload();
  }

  stop() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  isLoaded() {
    return this.loaded;
  }

  all(): CatalogFunction[] {
    return this.functions;
  }

  /** The overloads of `name` in `schema` (PostgREST picks one by argument names). */
  find(schema: string, name: string): CatalogFunction[] {
    return this.bySchema.get(schema)?.get(name) ?? [];
  }

  reload(): Promise<void> {
    this.reloading ??= this.load().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async load() {
    try {
      const rows = await this.sql<
        { schema: string; name: string; volatility: string; returns_set: boolean; return_type: string; arg_names: string[] | null; arg_types: string[]; arg_modes: string[] | null; defaults: number; description: string | null; anonymous: boolean }[]
      >`
        select n.nspname as schema, p.proname as name, p.provolatile as volatility, p.proretset as returns_set,
               format_type(p.prorettype, null) as return_type, p.proargnames as arg_names,
               array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) as t) as arg_types,
               p.proargmodes::text[] as arg_modes, p.pronargdefaults as defaults,
               obj_description(p.oid, 'pg_proc') as description,
               coalesce((select has_function_privilege(r.oid, p.oid, 'execute') from pg_roles r where r.rolname = ${this.anonRole}), false) as anonymous
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = any(${this.schemas}) and p.prokind = 'f'
         order by 1, 2`;
      this.functions = rows.map(toFunction);
      this.bySchema = new Map();
      for (const fn of this.functions) {
        let names = this.bySchema.get(fn.schema);
        if (!names) this.bySchema.set(fn.schema, (names = new Map()));
        names.set(fn.name, [...(names.get(fn.name) ?? []), fn]);
      }
      this.loaded = true;
    } catch (error) {
      this.log({ event: "catalog_load_failed", error: error instanceof Error ? error.message : String(error) });
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => void this.reload(), 2000);
      this.retryTimer.unref?.();
    }
  }
}

function toFunction(row: {
  schema: string; name: string; volatility: string; returns_set: boolean; return_type: string;
  arg_names: string[] | null; arg_types: string[]; arg_modes: string[] | null; defaults: number;
  description: string | null; anonymous: boolean;
}): CatalogFunction {
  const inputs: { name: string; type: string }[] = [];
  row.arg_types.forEach((type, i) => {
    const mode = row.arg_modes?.[i] ?? "i";
    if (mode === "i" || mode === "b" || mode === "v") inputs.push({ name: row.arg_names?.[i] ?? "", type });
  });
  // Defaults belong to the last `defaults` input arguments.
  const firstDefault = inputs.length - row.defaults;
  return {
    schema: row.schema,
    name: row.name,
    args: inputs.map((arg, i) => ({ ...arg, hasDefault: i >= firstDefault })),
    returnType: row.return_type,
    returnsSet: row.returns_set,
    volatility: row.volatility === "i" ? "immutable" : row.volatility === "s" ? "stable" : "volatile",
    description: row.description,
    anonymous: row.anonymous,
  };
}
