// Reading docker-compose.yml, .env.example and the Dockerfile the way Docker would, for
// the static checks in compose.test.ts (no Docker engine runs where this project is built).
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";

export const ROOT = resolve(import.meta.dir, "../..");
export const COMPOSE_PATH = resolve(ROOT, "docker-compose.yml");

export type Env = Record<string, string>;

export interface Healthcheck {
  test: string | string[];
  interval?: string;
  timeout?: string;
  retries?: number;
  start_period?: string;
}

export interface Service {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  depends_on?: Record<string, { condition: string }>;
  environment?: Record<string, string | number | boolean | null>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: Healthcheck;
  restart?: string;
}

export interface ComposeFile {
  name?: string;
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  [extension: `x-${string}`]: unknown;
}

export function readText(relativePath: string): string {
  return readFileSync(resolve(ROOT, relativePath), "utf8");
}

export function fileExists(relativePath: string): boolean {
  return existsSync(resolve(ROOT, relativePath));
}

/** The compose file as Compose sees it before interpolation (YAML merge keys resolved). */
export function loadCompose(): ComposeFile {
  return parse(readText("docker-compose.yml"), { merge: true }) as ComposeFile;
}

/** A service's environment with every value as the string Compose would pass on. */
export function serviceEnv(service: Service): Env {
  const env: Env = {};
  for (const [key, value] of Object.entries(service.environment ?? {})) env[key] = value === null ? "" : String(value);
  return env;
}

/** `NAME=value` lines of a dotenv file; comments and blank lines ignored. */
export function parseDotenv(text: string): Env {
  const env: Env = {};
  for (const line of text.split("\n")) {
    const match = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!match) continue;
    let value = match[2]!;
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    env[match[1]!] = value;
  }
  return env;
}

export interface VariableUse {
  name: string;
  /** The operator after the name: "" for ${NAME}/$NAME, else one of :- - :? ? :+ + */
  operator: string;
  argument: string;
}

const VARIABLE = /\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/** Every variable reference in a text, as Compose's interpolation reads them (`$$` is a literal `$`). */
export function variableUses(text: string): VariableUse[] {
  const uses: VariableUse[] = [];
  for (const m of text.matchAll(VARIABLE)) {
    if (m[1]) continue;
    uses.push({ name: (m[2] ?? m[5])!, operator: m[3] ?? "", argument: m[4] ?? "" });
  }
  return uses;
}

export class MissingVariableError extends Error {}

/** Compose's interpolation of one string against `env`. */
export function interpolate(text: string, env: Env): string {
  return text.replace(VARIABLE, (_all, dollar, braced, operator = "", argument = "", bare) => {
    if (dollar) return "$";
    const name = (braced ?? bare) as string;
    const value = env[name];
    const set = value !== undefined;
    const nonEmpty = set && value !== "";
    // Compose (compose-go v2) interpolates a default in turn, so `$$` in it is a literal `$`.
    const fallback = () => interpolate(argument as string, env);
    switch (operator) {
      case ":-": return nonEmpty ? value! : fallback();
      case "-": return set ? value! : fallback();
      case ":?": if (!nonEmpty) throw new MissingVariableError(`${name}: ${argument}`); return value!;
      case "?": if (!set) throw new MissingVariableError(`${name}: ${argument}`); return value!;
      case ":+": return nonEmpty ? argument : "";
      case "+": return set ? argument : "";
      default: return value ?? "";
    }
  });
}

/** A service's environment after interpolation against `env` (what the container receives). */
export function resolvedEnv(service: Service, env: Env): Env {
  const out: Env = {};
  for (const [key, value] of Object.entries(serviceEnv(service))) out[key] = interpolate(value, env);
  return out;
}

/** The host ports a service publishes ("127.0.0.1:5432:5432" -> 5432). */
export function publishedPorts(service: Service): { hostIp?: string; host: number; container: number }[] {
  return (service.ports ?? []).map((spec) => {
    const parts = String(spec).split(":");
    const container = Number(parts.pop());
    const host = Number(parts.pop() ?? container);
    const hostIp = parts.length ? parts.join(":") : undefined;
    return { hostIp, host, container };
  });
}

/**
 * Environment names a config module reads: `env.NAME`, `env["NAME"]`, and string literals
 * passed as a call's first argument (`read("NAME")`, `int("NAME", …)`).
 */
export function envNamesReadBy(source: string): Set<string> {
  const names = new Set<string>();
  const patterns = [
    /\benv\.([A-Z][A-Z0-9_]*)\b/g,
    /\benv\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]/g,
    /\b[A-Za-z_$][\w$]*\(\s*["']([A-Z][A-Z0-9_]*)["']/g,
  ];
  for (const pattern of patterns) for (const m of source.matchAll(pattern)) names.add(m[1]!);
  return names;
}

export interface DockerfileStage {
  name?: string;
  from: string;
  instructions: { keyword: string; args: string }[];
}

/** The Dockerfile's stages and instructions (continuation lines joined, comments dropped). */
export function parseDockerfile(text: string): { args: Env; stages: DockerfileStage[] } {
  const logical = text.replace(/\\\r?\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const args: Env = {};
  const stages: DockerfileStage[] = [];
  for (const line of logical) {
    const [, keyword = "", rest = ""] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const upper = keyword.toUpperCase();
    if (upper === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest)!;
      const from = m[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_a, x, y) => args[x ?? y] ?? "");
      stages.push({ from, name: m[2], instructions: [] });
    } else if (upper === "ARG" && stages.length === 0) {
      const [name, value = ""] = rest.split("=");
      args[name!.trim()] = value.trim();
    } else {
      stages.at(-1)?.instructions.push({ keyword: upper, args: rest });
    }
  }
  return { args, stages };
}
