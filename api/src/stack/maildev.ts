import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MailDev } from "maildev";
import { freePort } from "./free-port";

export interface RunningMailDev {
  /** Where the mailer sends (no TLS, no auth: a development catcher). */
  smtpUrl: string;
  smtpPort: number;
  /** The inbox in a browser; its REST API is under /api (GET /api/email). */
  webUrl: string;
  webPort: number;
  stop(): Promise<void>;
}

export interface MailDevOptions {
  /** Default: a free port each. */
  smtpPort?: number;
  webPort?: number;
  /** Where MailDev keeps the mails; default a temporary folder removed on stop. */
  mailDirectory?: string;
}

/**
 * MailDev, the development mail catcher (npm maildev), in this process on loopback: an SMTP
 * server that keeps every mail and a web inbox with a REST API. Never a relay.
 */
export async function startMailDev(options: MailDevOptions = {}): Promise<RunningMailDev> {
  const smtpPort = options.smtpPort || (await freePort());
  const webPort = options.webPort || (await freePort());
  const ownDirectory = options.mailDirectory ? undefined : mkdtempSync(join(tmpdir(), "maildev-"));
  const maildev = new MailDev({
    smtp: smtpPort,
    ip: "127.0.0.1",
    web: webPort,
    webIp: "127.0.0.1",
    silent: true,
    mailDirectory: options.mailDirectory ?? ownDirectory,
  });
  await maildev.start();
  let stopped = false;
  return {
    smtpUrl: `smtp://127.0.0.1:${smtpPort}`,
    smtpPort,
    webUrl: `http://127.0.0.1:${webPort}`,
    webPort,
    async stop() {
      if (stopped) return;
      stopped = true;
      await maildev.stop();
      if (ownDirectory) rmSync(ownDirectory, { recursive: true, force: true });
    },
  };
}
