/** Identifier quoting for names that come from the schema cache or configuration (never from values). */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** `schema.function` from configuration (e.g. PGRST_DB_PRE_REQUEST) → `"schema"."function"`. */
export function quoteQualified(name: string): string {
  const dot = name.indexOf(".");
  if (dot < 0) return quoteIdent(name);
  return `${quoteIdent(name.slice(0, dot))}.${quoteIdent(name.slice(dot + 1))}`;
}
