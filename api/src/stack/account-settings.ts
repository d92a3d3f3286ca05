import postgres from "postgres";

/**
 * The environment variables that configure the account functions in SQL, and the rows of
 * auth.settings they become (see migrations/20261202000300_accounts.sql). An unset variable
 * deletes its row: the function's default applies.
 */
export const ACCOUNT_SETTINGS = {
  SESSION_INACTIVITY_DAYS: "session_inactivity_days",
  SESSION_MAX_DAYS: "session_max_days",
  REFRESH_REUSE_GRACE_SECONDS: "refresh_reuse_grace_seconds",
  AUTH_REQUIRE_VERIFIED_EMAIL: "require_verified_email",
  PASSWORD_RESET_PER_ADDRESS_MAX: "reset_per_address_max",
  PASSWORD_RESET_PER_CLIENT_MAX: "reset_per_client_max",
  PASSWORD_RESET_WINDOW_SECONDS: "reset_window_seconds",
} as const;

const BOOLEAN = new Set(["AUTH_REQUIRE_VERIFIED_EMAIL"]);

/** Validated rows, or an Error naming every bad variable. */
export function accountSettingsFromEnv(env: Record<string, string | undefined>): Record<string, string | null> {
  const rows: Record<string, string | null> = {};
  const problems: string[] = [];
  for (const [variable, name] of Object.entries(ACCOUNT_SETTINGS)) {
    const raw = env[variable]?.trim().toLowerCase();
    if (!raw) {
      rows[name] = null;
    } else if (BOOLEAN.has(variable)) {
      if (["1", "true", "yes", "on"].includes(raw)) rows[name] = "true";
      else if (["0", "false", "no", "off"].includes(raw)) rows[name] = "false";
      else problems.push(`${variable} must be true or false (got "${raw}")`);
    } else if (/^\d{1,9}$/.test(raw)) {
      rows[name] = String(Number(raw));
    } else {
      problems.push(`${variable} must be a non-negative integer (got "${raw}")`);
    }
  }
  if (problems.length) throw new Error(`invalid account settings:\n  - ${problems.join("\n  - ")}`);
  return rows;
}

/** Writes the settings into auth.settings, as a superuser (after `dbmate up`). */
export async function applyAccountSettings(adminUrl: string, env: Record<string, string | undefined>): Promise<void> {
  const rows = accountSettingsFromEnv(env);
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
