import type { Sql } from "postgres";
import nodemailer, { type Transporter } from "nodemailer";
import { renderMail, UnknownTemplateError } from "./templates";

/** The outbox channel (trigger on auth.mail_outbox): a new mail wakes the mailer at once. */
export const MAIL_CHANNEL = "autoaudit_mail";

export interface MailerOptions {
  /** Connected as a member of the `mailer` role (the functions in schema mail and nothing else). */
  sql: Sql;
  smtpUrl: string;
  /** The From header, e.g. `AutoAudit <no-reply@example.com>`. */
  from: string;
  /** The base of the links in the mails (PUBLIC_APP_URL). */
  publicAppUrl: string;
  /** Poll interval (a NOTIFY wakes it earlier). */
  pollMs?: number;
  /** How long a claimed mail is ours before another mailer may retry it (must exceed the SMTP timeouts). */
  leaseMs?: number;
  /** Backoff after a failed attempt: base · 2^(attempts-1), at most retryMaxMs. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** A permanent SMTP refusal (5xx) is given up after this many attempts; connection failures are retried forever. */
  maxAttempts?: number;
  batch?: number;
  /** SMTP connection, greeting and socket timeouts. */
  smtpTimeoutMs?: number;
  log?: (event: Record<string, unknown>) => void;
}

interface ClaimedMail {
  id: string;
  message_id: string;
  recipient: string;
  template: string;
  params: Record<string, unknown>;
  attempts: number;
}

/**
 * Sends the outbox (auth.mail_outbox) over SMTP. Delivery is at least once: a mail is marked
 * sent in the step right after the SMTP server accepted it, under the lease of the attempt
 * that claimed it, so it is marked sent exactly once; a mailer that dies before the SMTP
 * server accepted leaves the mail to be retried when the lease runs out, and one that dies
 * between the acceptance and the mark (a window of one database round trip) causes one
 * resend that carries the same Message-ID. Nothing is lost while SMTP is down: the mail
 * stays pending and is retried with exponential backoff.
 */
export class Mailer {
  private transport!: Transporter;
  private readonly domain: string;
  private running = false;
  private loop?: Promise<void>;
  private wake?: () => void;
  private unlisten?: () => Promise<void>;
  private readonly opts: Required<Omit<MailerOptions, "log">> & Pick<MailerOptions, "log">;

  constructor(options: MailerOptions) {
    this.opts = {
      pollMs: 1000,
      leaseMs: 60_000,
      retryBaseMs: 5_000,
      retryMaxMs: 3_600_000,
      maxAttempts: 10,
      batch: 10,
      smtpTimeoutMs: 20_000,
      ...options,
    };
    this.domain = /@([^>\s]+)>?\s*$/.exec(options.from)?.[1] ?? "autoaudit.local";
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const timeout = this.opts.smtpTimeoutMs;
    this.transport = nodemailer.createTransport(this.opts.smtpUrl, {
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
    } as never);
    try {
      const listener = await this.opts.sql.listen(MAIL_CHANNEL, () => this.wake?.());
      this.unlisten = () => listener.unlisten();
    } catch (error) {
      this.opts.log?.({ event: "mailer_listen_failed", error: String(error) });
    }
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.unlisten?.().catch(() => {});
    this.transport.close();
  }

  /** Claims and sends what is due; the number of mails handled. */
  async tick(): Promise<number> {
    const rows = (await this.opts.sql`
      select id::text as id, message_id, recipient, template, params, attempts
        from mail.claim(${this.opts.batch}, ${`${this.opts.leaseMs} milliseconds`}::interval)`) as unknown as ClaimedMail[];
    await Promise.all(rows.map((row) => this.send(row)));
    return rows.length;
  }

  private async run() {
    while (this.running) {
      let handled = 0;
      try {
        handled = await this.tick();
      } catch (error) {
        this.opts.log?.({ event: "mailer_claim_failed", error: String(error) });
      }
      if (handled > 0 || !this.running) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.opts.pollMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private async send(row: ClaimedMail) {
    const messageId = `<${row.message_id}@${this.domain}>`;
    let permanent = false;
    try {
      let rendered;
      try {
        rendered = renderMail(row.template, row.params ?? {}, this.opts.publicAppUrl);
      } catch (error) {
        if (error instanceof UnknownTemplateError) permanent = true;
        throw error;
      }
      await this.transport.sendMail({ from: this.opts.from, to: row.recipient, messageId, ...rendered });
    } catch (error) {
      const code = (error as { responseCode?: number }).responseCode;
      permanent ||= typeof code === "number" && code >= 500 && code < 600;
      const giveUp = permanent && row.attempts >= this.opts.maxAttempts;
      const retryMs = Math.min(this.opts.retryBaseMs * 2 ** Math.min(row.attempts - 1, 30), this.opts.retryMaxMs);
      this.opts.log?.({ event: "mail_failed", mail: row.id, attempt: row.attempts, retry_in_ms: giveUp ? null : retryMs, error: String(error) });
      await this.opts.sql`select mail.mark_failed(${row.id}::bigint, ${row.attempts}, ${String(error)}, ${`${retryMs} milliseconds`}::interval, ${giveUp})`
        .catch(() => {});
      return;
    }
    try {
      const [marked] = await this.opts.sql`select mail.mark_sent(${row.id}::bigint, ${row.attempts}) as ok`;
      this.opts.log?.({ event: "mail_sent", mail: row.id, template: row.template, message_id: messageId, marked: marked?.ok === true });
    } catch (error) {
      // Accepted by SMTP but not marked: retried after the lease, with the same Message-ID.
      this.opts.log?.({ event: "mail_mark_failed", mail: row.id, error: String(error) });
    }
  }
}
