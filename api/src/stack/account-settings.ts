import postgres from "postgres";
import type { AccountSettings } from "../config";

/**
 * Writes the account settings (loadAccountSettings, config/accounts.ts) into auth.settings, as a
 * superuser (after `dbmate up`); a null deletes the row, so the SQL function's default applies.
 */
export async function applyAccountSettings(adminUrl: string, rows: AccountSettings): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.begin(async (tx) => {
      for (const [name, value] of Object.entries(rows)) {
        if (value === null) await tx`delete from auth.settings where name = ${name}`;
        else await tx`insert into auth.settings (name, value) values (${name}, ${value}) on conflict (name) do update set value = excluded.value`;
      }
    });
  } finally {
    await sql.end();
  }
}
