/** The mails the outbox (auth.mail_outbox) asks for, in plain text and HTML. */
export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

export type MailParams = Record<string, unknown>;

const escapeHtml = (value: string) =>
  value.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** The link base (PUBLIC_APP_URL) plus a path and the token, as the app's pages expect it. */
export function appLink(publicAppUrl: string, path: string, token: string): string {
  const base = publicAppUrl.replace(/\/+$/, "");
  return `${base}${path}?token=${encodeURIComponent(token)}`;
}

function layout(greeting: string, paragraphs: string[], link?: { href: string; label: string }, footer?: string): RenderedMail["html"] {
  const body = paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("\n");
  const button = link ? `<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.label)}</a></p>\n<p style="color:#666;font-size:12px">${escapeHtml(link.href)}</p>` : "";
  return `<!doctype html>
<html><body style="font-family:sans-serif;line-height:1.5">
<p>${escapeHtml(greeting)}</p>
${body}
${button}
${footer ? `<p style="color:#666;font-size:12px">${escapeHtml(footer)}</p>` : ""}
</body></html>`;
}

/** Renders one outbox row. Throws for an unknown template (the row is then given up). */
export function renderMail(template: string, params: MailParams, publicAppUrl: string): RenderedMail {
  const name = typeof params.first_name === "string" && params.first_name ? params.first_name : "there";
  const greeting = `Hello ${name},`;
  const token = typeof params.token === "string" ? params.token : "";
  switch (template) {
    case "verify_email": {
      const href = appLink(publicAppUrl, "/verify-email", token);
      const lines = ["Please confirm your email address for AutoAudit by opening this link (valid for 24 hours):"];
      const footer = "If you did not create an AutoAudit account, ignore this mail.";
      return {
        subject: "Confirm your email address",
        text: `${greeting}\n\n${lines[0]}\n\n${href}\n\n${footer}\n`,
        html: layout(greeting, lines, { href, label: "Confirm my email address" }, footer),
      };
    }
    case "reset_password": {
      const href = appLink(publicAppUrl, "/reset-password", token);
      const lines = ["Someone asked to reset the password of your AutoAudit account. Open this link within 30 minutes to choose a new one; it works once:"];
      const footer = "If it was not you, ignore this mail: your password stays as it is.";
      return {
        subject: "Reset your password",
        text: `${greeting}\n\n${lines[0]}\n\n${href}\n\n${footer}\n`,
        html: layout(greeting, lines, { href, label: "Choose a new password" }, footer),
      };
    }
    case "password_changed": {
      const lines = ["The password of your AutoAudit account was just changed, and your other sessions were signed out."];
      const footer = "If it was not you, reset your password at once and contact support.";
      return {
        subject: "Your password was changed",
        text: `${greeting}\n\n${lines[0]}\n\n${footer}\n`,
        html: layout(greeting, lines, undefined, footer),
      };
    }
    default:
      throw new UnknownTemplateError(template);
  }
}

export class UnknownTemplateError extends Error {
  constructor(readonly template: string) {
    super(`unknown mail template ${JSON.stringify(template)}`);
  }
}
