// Rewrites the generated tables of docs/reference/errors.md from the closed list in
// api/src/gateway/errors.ts (tests/api/errors.test.ts fails when they differ).
import { resolve } from "node:path";
import { withCurrentTables } from "../gateway/errors-doc";

const path = resolve(import.meta.dir, "../../../docs/reference/errors.md");
await Bun.write(path, withCurrentTables(await Bun.file(path).text()));
console.log(`wrote ${path}`);
