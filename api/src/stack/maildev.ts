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
  /** Stops the servers but keeps the mails and the ports' configuration (an SMTP outage, in tests). */
  pause(): Promise<void>;
  /** Starts them again on the same ports. */
  resume(): Promise<void>;
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
  const config = {
    smtp: smtpPort,
    ip: "127.0.0.1",
    web: webPort,
    webIp: "127.0.0.1",
    silent: true,
    mailDirectory: options.mailDirectory ?? ownDirectory,
  };
  let maildev: MailDev | undefined = new MailDev(config);
  await maildev.start();
  let stopped = false;
  return {
    smtpUrl: `smtp://127.0.0.1:${smtpPort}`,
    smtpPort,
    webUrl: `http://127.0.0.1:${webPort}`,
    webPort,
    async pause() {
      await maildev?.stop();
      maildev = undefined;
    },
    async resume() {
      if (maildev || stopped) return;
      maildev = new MailDev(config);
      await maildev.start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await maildev?.stop();
      maildev = undefined;
      if (ownDirectory) rmSync(ownDirectory, { recursive: true, force: true });
    },
  };
}
