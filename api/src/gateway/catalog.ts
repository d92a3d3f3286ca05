import type { Sql } from "postgres";
import { loadSchemaCache, type Routine, type RoutineParam, type SchemaCache, type SchemaSnapshots } from "../engine/schema-cache";

export type CatalogArgument = RoutineParam;
/** An exposed function as the engine's schema cache describes it. */
export type CatalogFunction = Routine;

/**
 * The functions PostgREST exposes, read from the schema cache (schema-cache.ts): Swagger's
 * document and the cache's volatility decisions come from here, so neither can drift from the
 * database nor from what the engine calls. With the embedded engine the snapshots are the
 * engine's own (one introspection, one reload on NOTIFY); in front of a real PostgREST they are
 * the gateway's own load of the same introspection (OwnSchemaSnapshots).
 */
export class FunctionCatalog {
  private listed: { of: SchemaCache; functions: CatalogFunction[] } | undefined;

  constructor(private readonly source: SchemaSnapshots) {}

  isLoaded() {
    return this.source.current() !== undefined;
  }

  /** Every function, by schema and name (overloads in PostgREST's order). */
  all(): CatalogFunction[] {
    const snapshot = this.source.current();
    if (!snapshot) return [];
    if (this.listed?.of !== snapshot) this.listed = { of: snapshot, functions: [...snapshot.routines.values()].flat() };
    return this.listed.functions;
  }

  /** The overloads of `name` in `schema` (PostgREST picks one by argument names). */
  find(schema: string, name: string): CatalogFunction[] {
    return this.source.current()?.routinesNamed(schema, name) ?? [];
  }

  /** Loads now when it can; a failure leaves the catalogue as it was (see isLoaded). */
  reload(): Promise<void> {
    return this.source.reload().catch(() => {});
  }
}

/**
 * The gateway's own schema snapshots, for when it fronts a real PostgREST (whose cache is in
 * another process): the engine's introspection, loaded at start and again on PostgREST's own
 * `NOTIFY pgrst` (and after the listener reconnects), retried while the database is down.
 */
export class OwnSchemaSnapshots implements SchemaSnapshots {
  private snapshot: SchemaCache | undefined;
  private loading: Promise<void> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(
    private readonly sql: Sql,
    private readonly schemas: string[],
    private readonly anonRole: string,
    private readonly log: (event: Record<string, unknown>) => void = () => {},
  ) {}

  /** Loads now, listens for reloads; resolves after the first attempt, whatever its outcome. */
  async start(): Promise<void> {
    let first = true;
    this.sql
      .listen(
        "pgrst",
        (payload) => {
          if (payload === "" || payload === "reload schema") void this.reload().catch(() => {});
        },
        () => {
          if (!first) void this.reload().catch(() => {});
          first = false;
        },
      )
      .catch(() => {});
    await this.reload().catch(() => {});
  }

  stop() {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  current(): SchemaCache | undefined {
    return this.snapshot;
  }

  reload(): Promise<void> {
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  private async load() {
    try {
      this.snapshot = await loadSchemaCache(this.sql, this.schemas, this.anonRole);
    } catch (error) {
      this.log({ event: "catalog_load_failed", error: error instanceof Error ? error.message : String(error) });
      if (this.retryTimer) clearTimeout(this.retryTimer);
      if (!this.stopped) {
        this.retryTimer = setTimeout(() => void this.reload().catch(() => {}), 2000);
        this.retryTimer.unref?.();
      }
      throw error;
    }
  }
}
