import { ConfigError } from "../config";

/**
 * A command's configuration, read at start; on a bad environment the command stops with exit 2
 * and one message (`prefix` + every problem ConfigError lists). Other errors are not its to hide.
 */
export function configOrExit<T>(load: () => T, prefix: string): T {
  try {
    return load();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`${prefix}${error.message}`);
    process.exit(2);
  }
}
