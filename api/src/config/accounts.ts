/**
 * The account settings: rows of auth.settings the account functions read in SQL (see
 * migrations/20261202000300_accounts.sql), written by `bun run migrate up` and `bun run dev`.
 * An unset variable deletes its row, so the function's own default applies; the defaults below
 * document those SQL defaults.
 */
import { Type } from "@sinclair/typebox";
import { Var, readEnv, throwIfProblems, type Env } from "./env";

const count = (description: string, defaultText: string, unit?: string) =>
  Var.optionalInteger({ minimum: 0, maximum: 999_999_999, unit, defaultText, description });

export const AccountEnv = Type.Object({
  SESSION_INACTIVITY_DAYS: count("A session not refreshed for this long ends.", "14", "days"),
  SESSION_MAX_DAYS: count("A session ends this long after sign-in, however often it is refreshed.", "60", "days"),
  REFRESH_REUSE_GRACE_SECONDS: count("A just-rotated refresh token presented again within this returns the same successor.", "10", "seconds"),
  AUTH_REQUIRE_VERIFIED_EMAIL: Var.optionalBoolean({ defaultText: "false", description: "true: unverified accounts cannot sign in or refresh." }),
  PASSWORD_RESET_PER_ADDRESS_MAX: count("Reset and verification mails per address per window (then 429).", "5"),
  PASSWORD_RESET_PER_CLIENT_MAX: count("Reset and verification mails per client address per window.", "30"),
  PASSWORD_RESET_WINDOW_SECONDS: count("The window of the two limits above.", "3600", "seconds"),
});

/** Variable → the auth.settings row it becomes. */
export const ACCOUNT_SETTINGS = {
  SESSION_INACTIVITY_DAYS: "session_inactivity_days",
  SESSION_MAX_DAYS: "session_max_days",
  REFRESH_REUSE_GRACE_SECONDS: "refresh_reuse_grace_seconds",
  AUTH_REQUIRE_VERIFIED_EMAIL: "require_verified_email",
  PASSWORD_RESET_PER_ADDRESS_MAX: "reset_per_address_max",
  PASSWORD_RESET_PER_CLIENT_MAX: "reset_per_client_max",
  PASSWORD_RESET_WINDOW_SECONDS: "reset_window_seconds",
} as const satisfies Record<keyof typeof AccountEnv.properties, string>;

/** auth.settings rows (null: delete the row), or a ConfigError naming every bad variable. */
export type AccountSettings = Record<string, string | null>;

export function loadAccountSettings(env: Env = process.env): AccountSettings {
  const problems: string[] = [];
  const v = readEnv(AccountEnv, env, problems);
  throwIfProblems(problems);
  const rows: AccountSettings = {};
  for (const [variable, row] of Object.entries(ACCOUNT_SETTINGS)) {
    const value = v[variable as keyof typeof v];
    rows[row] = value === undefined ? null : String(value);
  }
  return rows;
}
