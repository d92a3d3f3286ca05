import { ZxcvbnFactory } from "@zxcvbn-ts/core";
import * as common from "@zxcvbn-ts/language-common";
import * as english from "@zxcvbn-ts/language-en";
import { gatewayError } from "./errors";

/**
 * The password strength policy, applied by the gateway before a new password reaches the
 * database (and its bcrypt): zxcvbn's offline estimate with its common-password and English
 * dictionaries; nothing leaves the machine. The database keeps the length rules (8 characters,
 * 72 bytes) for every path to it.
 */
export const MIN_PASSWORD_SCORE = 3;

/** The functions that set a password, and the argument holding the new one. */
export const NEW_PASSWORD_ARGUMENT: Record<string, string> = {
  sign_up: "password",
  reset_password: "new_password",
  change_password: "new_password",
};

/** zxcvbn is O(n²) in the length: longer inputs are left to the database's 72-byte refusal. */
const MAX_CHECKED_LENGTH = 256;

let factory: ZxcvbnFactory | undefined;
const zxcvbn = () =>
  (factory ??= new ZxcvbnFactory({
    dictionary: { ...common.dictionary, ...english.dictionary },
    graphs: common.adjacencyGraphs,
    translations: english.translations,
  }));

/**
 * Throws a PostgREST-shaped 400 when `fn`'s new password is too guessable; the other inputs of
 * the call (email, names) count as guessable words. Leaves malformed calls to the database.
 */
export function checkNewPassword(fn: string, args: unknown): void {
  const name = NEW_PASSWORD_ARGUMENT[fn];
  if (!name || args === null || typeof args !== "object" || Array.isArray(args)) return;
  const fields = args as Record<string, unknown>;
  const password = fields[name];
  if (typeof password !== "string" || password.length < 8 || password.length > MAX_CHECKED_LENGTH) return;
  const userInputs: string[] = [];
  for (const key of ["email", "first_name", "last_name", "current_password"]) {
    const value = fields[key];
    if (typeof value === "string" && value.length <= 254) userInputs.push(...value.split(/[@.\s_+-]+/).filter((part) => part.length >= 3));
  }
  const result = zxcvbn().check(password, userInputs);
  if (result.score >= MIN_PASSWORD_SCORE) return;
  const { warning, suggestions } = result.feedback;
  const hint = [warning, ...suggestions].filter(Boolean).join(" ") || "Use a longer password: several unrelated words, or a password manager's.";
  throw gatewayError("AA103", { params: { feedback: hint }, details: `strength ${result.score} of 4; at least ${MIN_PASSWORD_SCORE} is required` });
}
