import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./free-port";

export interface RunningRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Whether Debian's redis-server is on PATH. */
export function redisServerAvailable(): boolean {
  return Bun.which("redis-server") !== null;
}

/**
 * Starts `redis-server` on a free loopback port. With `dataDir` it keeps an append-only
 * file there (the queue survives a restart); without, it is a throwaway in-memory server.
 */
export async function startRedisServer(options: { dataDir?: string; port?: number } = {}): Promise<RunningRedis> {
  const bin = Bun.which("redis-server");
  if (!bin) throw new Error("redis-server is not on PATH (apt-get install -y redis-server)");
  const port = options.port ?? (await freePort());
  const scratch = options.dataDir ? undefined : mkdtempSync(join(tmpdir(), "autoaudit-redis-"));
  const dir = options.dataDir ?? scratch!;
  const persistence = options.dataDir ? ["--appendonly", "yes", "--save", ""] : ["--appendonly", "no", "--save", ""];
  const proc = Bun.spawn(
    [bin, "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no", "--loglevel", "warning", ...persistence],
    { stdout: "pipe", stderr: "pipe" },
  );
  const onExit = () => proc.kill("SIGTERM");
  process.on("exit", onExit);
  await waitForPing(port, proc);
  let stopped = false;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (stopped) return;
      stopped = true;
      process.off("exit", onExit);
      proc.kill("SIGTERM");
      await proc.exited;
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    },
  };
}

async function waitForPing(port: number, proc: Bun.Subprocess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}`);
    try {
      const socket = await Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: { data() {}, error() {} },
      });
      socket.end();
      return;
    } catch {
      await Bun.sleep(20);
    }
  }
  throw new Error("redis-server did not start within 10 s");
}
