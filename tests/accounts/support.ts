import postgres from "postgres";
import { testStack } from "../support/stack";

export { call, newUser, signUp, signIn, signedInUser, type TestUser, type Tokens } from "../api/helpers";

export type Sql = postgres.Sql;

/** A superuser pool on the test database; callers end it in afterAll. */
export function adminSql(): Sql {
  return postgres(testStack().databaseUrl, { max: 4, onnotice: () => {} });
}

export interface CaughtMail {
  id: string;
  subject: string;
  text: string;
  html: string;
  to: { address: string }[];
  headers: Record<string, string>;
}

/** Every mail MailDev caught for `address` (its REST API). */
export async function mailsTo(address: string): Promise<CaughtMail[]> {
  const response = await fetch(`${testStack().maildev.webUrl}/api/email`);
  if (!response.ok) throw new Error(`maildev answered ${response.status}`);
  const all = (await response.json()) as CaughtMail[];
  return all.filter((m) => m.to.some((t) => t.address.toLowerCase() === address.toLowerCase()));
}

/** Waits (polling the catcher) until `address` has `count` mails matching `subject`; returns them. */
export async function waitForMails(address: string, subject: RegExp, count = 1, timeoutMs = 10_000): Promise<CaughtMail[]> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const found = (await mailsTo(address)).filter((m) => subject.test(m.subject));
    if (found.length >= count) return found;
    if (Date.now() > deadline) throw new Error(`no ${count} mail(s) "${subject}" for ${address} within ${timeoutMs} ms (got ${found.length})`);
    await Bun.sleep(50);
  }
}

/** The token of the link in a mail, checked in both the text and the HTML part. */
export function linkToken(mail: CaughtMail, path: string): string {
  const base = testStack().publicAppUrl;
  const pattern = new RegExp(`${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}${path}\\?token=([A-Za-z0-9_-]+)`);
  const inText = pattern.exec(mail.text)?.[1];
  const inHtml = pattern.exec(mail.html)?.[1];
  if (!inText || inText !== inHtml) throw new Error(`no ${path} link in the mail: ${mail.text}`);
  return inText;
}

export const STRONG = () => `Zq8!vL2#${crypto.randomUUID().slice(0, 8)}-pX9m`;
