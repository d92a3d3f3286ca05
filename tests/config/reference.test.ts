// The generated reference, .env.example and docker-compose.yml agree with the schemas.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ApiEnv, CONSUMERS, variables } from "../../api/src/config";
import { configurationReference, REFERENCE_PATH } from "../../api/src/config/docs";

const ROOT = resolve(import.meta.dir, "../..");
const text = (path: string) => readFileSync(resolve(ROOT, path), "utf8");

describe("docs/reference/configuration.md", () => {
  test("is what `bun run docs:config` generates from the schemas (run it after changing one)", () => {
    expect(text(REFERENCE_PATH)).toBe(configurationReference());
  });

  test("describes every variable with its type, default and description", () => {
    const reference = text(REFERENCE_PATH);
    for (const consumer of CONSUMERS) {
      for (const [name, schema] of variables(consumer.schema)) {
        expect(schema.description.length).toBeGreaterThan(10);
        expect(reference).toContain(`| \`${name}\` |`);
      }
    }
    expect(reference).toContain("| `PORT` | integer | `8000` | between 0 and 65535 |");
  });
});

describe(".env.example", () => {
  test("lists every variable a schema knows (set, or commented with its default)", () => {
    const listed = new Set([...text(".env.example").matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const missing = CONSUMERS.flatMap((c) => variables(c.schema).map(([name]) => name)).filter((name) => !listed.has(name));
    expect([...new Set(missing)]).toEqual([]);
  });
});

describe("docker-compose.yml", () => {
  test("the api service gets every variable ApiEnv knows, except the development-only one", () => {
    const compose = text("docker-compose.yml");
    const api = compose.slice(compose.indexOf("\n  api:\n"), compose.indexOf("\n  mailer:\n"));
    const pgrst = compose.slice(compose.indexOf("x-pgrst-env:"), compose.indexOf("\nservices:"));
    const passed = new Set([...`${api}\n${pgrst}`.matchAll(/^\s+([A-Z][A-Z0-9_]*):/gm)].map((m) => m[1]));
    const notPassed = Object.keys(ApiEnv.properties).filter((name) => !passed.has(name) && name !== "AUTH_OIDC_DEV_PROVIDER");
    expect(notPassed).toEqual([]);
  });
});
