/**
 * CPU scheduling of local PostgreSQL backends, for the embedded stack where the API, the engine
 * and PostgreSQL share the machine's cores. Best effort: a call that is not allowed (another
 * user's process without privileges) or not supported (no autogroups, no chrt) changes nothing.
 */
import { writeFileSync } from "node:fs";
import { setPriority } from "node:os";
import { isLocalSocket } from "./connection";

/**
 * Lowers a backend's CPU priority. PostgreSQL starts every backend in a session of its own, and
 * with the kernel's autogroup scheduling (the default on most distributions) each session is
 * weighed as one group: a process's own nice value then only ranks it within its session, so
 * the session's nice value (`/proc/<pid>/autogroup`) is the one that counts. Both are set;
 * raising a nice value needs no privilege for a process the caller owns (or as root).
 */
export function lowerPriority(pid: number, nice: number): void {
  try {
    setPriority(pid, nice);
  } catch {
    return;
  }
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch {
    // No autogroup scheduling on this kernel (or not Linux): the process's nice value is enough.
  }
}

/**
 * Puts a backend under SCHED_BATCH (util-linux `chrt`; Node has no sched_setscheduler). A batch
 * task does not preempt the running one when it is woken: the API's write of a statement no
 * longer hands its core to the backend mid-request (with two cores that ping-pong cost about a
 * fifth of `me`'s throughput); the backend runs as soon as a core is free instead.
 */
export function batchScheduling(pid: number): void {
  try {
    const child = Bun.spawn(["chrt", "--batch", "--pid", "0", String(pid)], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    child.exited.catch(() => {});
  } catch {
    // chrt is not installed: scheduling stays as it is.
  }
}

/**
 * An engine's onBackend hook: SCHED_BATCH when it is wanted and PostgreSQL runs on this machine
 * (a Unix socket URL); a remote server's processes are not ours to schedule.
 */
export function localBatchScheduling(url: string | undefined, wanted: boolean): ((pid: number) => void) | undefined {
  return wanted && url !== undefined && isLocalSocket(url) ? batchScheduling : undefined;
}
