import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SHARED_CONFORMANCE_DIR, SNAPSHOT_DIR } from "./support/cases";

const FILES = ["scope.json", "cases/rpc.json", "cases/auth.json", "cases/errors.json"];

// Where shared/ is beside the checkout (CI, our machines), the committed copy must match it.
test.skipIf(!existsSync(join(SHARED_CONFORMANCE_DIR, "scope.json")))(
  "the committed snapshot of the conformance cases matches ../shared/conformance [skipped only where shared/ is absent]",
  () => {
    for (const file of FILES) {
      const shared = readFileSync(join(SHARED_CONFORMANCE_DIR, file), "utf8");
      expect({ file, text: readFileSync(join(SNAPSHOT_DIR, file), "utf8") }).toEqual({ file, text: shared });
    }
  },
);
