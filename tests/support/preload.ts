// Loaded once per `bun test` run (bunfig.toml): starts what the suites need, unless the
// environment points at a running stack, and tears it down after the last test.
// When the stack cannot start, the run stops here with one message: no test waits for it.
import { afterAll } from "bun:test";
import { closeStackEngines } from "./engine";
import { startTestStack } from "./stack";

const stack = await startTestStack().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`\nbun test: the test stack cannot start, so no test runs.\n${message}\n`);
  process.exit(1);
});
afterAll(async () => {
  await closeStackEngines();
  await stack.stop();
});
