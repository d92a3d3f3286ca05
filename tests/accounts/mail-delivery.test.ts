// The outbox under failure: SMTP down, and a mailer killed in the middle of a send.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createServer, type Server, type Socket } from "node:net";
import { resolve } from "node:path";
import { freePort } from "../../api/src/stack/free-port";
import { testStack } from "../support/stack";
import { adminSql, call, mailsTo, newUser, signUp, waitForMails, type Sql } from "./support";

const ROOT = resolve(import.meta.dir, "../..");
let sql: Sql;
beforeAll(async () => {
  sql = adminSql();
  await sql`insert into auth.settings (name, value) values ('reset_per_client_max', '100000') on conflict (name) do update set value = excluded.value`;
});
afterAll(async () => {
  await sql`delete from auth.settings where name = 'reset_per_client_max'`;
  await sql.end();
});

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

const resetRow = async (email: string) =>
  (await sql`select status, attempts, last_error, message_id from auth.mail_outbox where recipient = ${email} and template = 'reset_password'`)[0];

describe("mail delivery", () => {
  test("SMTP down: nothing is lost; retried with backoff, sent once it returns", async () => {
    const { maildev } = testStack();
    const user = newUser();
    await signUp(user);
    await waitForMails(user.email, /Confirm your email/);
    await maildev.pause();
    try {
      expect((await call("/rpc/request_password_reset", { body: { email: user.email } })).status).toBe(200);
      const failing = await until("two failed attempts", async () => {
        const row = await resetRow(user.email);
        return row && row.attempts >= 2 && row.status !== "sent" ? row : undefined;
      });
      expect(failing.last_error).toMatch(/ECONNREFUSED|connect/i);
    } finally {
      await maildev.resume();
    }
    const [mail] = await waitForMails(user.email, /Reset your password/, 1, 15_000);
    await Bun.sleep(500);
    expect((await mailsTo(user.email)).filter((m) => /Reset/.test(m.subject))).toHaveLength(1);
    const row = await resetRow(user.email);
    expect(row!.status).toBe("sent");
    expect(mail!.headers["message-id"]).toBe(`<${row!.message_id}@autoaudit.test>`);
  }, 30_000);

  test("a mailer killed mid-send: the mail is sent once, by the next mailer, with the same Message-ID", async () => {
    const { mailer } = testStack();
    const blackHole = await smtpBlackHole();
    await mailer.stop();
    let child: ReturnType<typeof Bun.spawn> | undefined;
    const user = newUser();
    try {
      await signUp(user);
      expect((await call("/rpc/request_password_reset", { body: { email: user.email } })).status).toBe(200);
      child = Bun.spawn(["bun", "api/src/cli/mailer.ts"], {
        cwd: ROOT,
        env: { ...process.env, DATABASE_URL: testStack().databaseUrl, SMTP_URL: `smtp://127.0.0.1:${blackHole.port}`,
               MAIL_FROM: "AutoAudit <no-reply@autoaudit.test>", PUBLIC_APP_URL: testStack().publicAppUrl, MAIL_POLL_MS: "50", MAIL_LEASE_MS: "60000" },
        stdout: "ignore",
        stderr: "ignore",
      });
      // The child has handed the message to SMTP, which never confirms it: kill it there.
      await until("the message data at the black hole", async () => blackHole.received().includes(user.email), 15_000);
      expect((await resetRow(user.email))!.status).toBe("sending");
      child.kill("SIGKILL");
      await child.exited;
      // The lease would run out after MAIL_LEASE_MS: move the clock in SQL instead of waiting.
      await sql`update auth.mail_outbox set lease_until = now() - interval '1 second' where recipient = ${user.email} and status = 'sending'`;
    } finally {
      child?.kill("SIGKILL");
      await mailer.start();
      blackHole.close();
    }
    const [mail] = await waitForMails(user.email, /Reset your password/);
    await Bun.sleep(500);
    expect((await mailsTo(user.email)).filter((m) => /Reset/.test(m.subject))).toHaveLength(1);
    const row = await resetRow(user.email);
    expect(row).toMatchObject({ status: "sent", attempts: 2 });
    expect(mail!.headers["message-id"]).toBe(`<${row!.message_id}@autoaudit.test>`);
  }, 40_000);
});

/** An SMTP server that takes a message's data and never confirms it (a relay hanging mid-send). */
async function smtpBlackHole(): Promise<{ port: number; received(): string; close(): void }> {
  const port = await freePort();
  let data = "";
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    let inData = false;
    socket.write("220 blackhole ESMTP\r\n");
    socket.on("data", (chunk) => {
      const text = chunk.toString("utf8");
      if (inData) {
        data += text;
        return;
      }
      for (const line of text.split("\r\n").filter(Boolean)) {
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO" || verb === "HELO") socket.write("250 blackhole\r\n");
        else if (verb === "DATA") {
          inData = true;
          socket.write("354 go ahead\r\n");
        } else if (verb === "QUIT") socket.end("221 bye\r\n");
        else socket.write("250 ok\r\n");
        data += `${line}\n`;
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((done) => server.listen(port, "127.0.0.1", done));
  return {
    port,
    received: () => data,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}
