// Loaded once per `bun test` run (bunfig.toml): starts what the suites need, unless the
// environment points at a running stack, and tears it down after the last test.
import { afterAll } from "bun:test";
import { startTestStack } from "./stack";

const stack = await startTestStack();
afterAll(async () => {
  await stack.stop();
});
