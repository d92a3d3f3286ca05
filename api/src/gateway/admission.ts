/**
 * Admission control for the bcrypt routes. A hash occupies one core for its whole duration, so
 * more concurrent sign-ins than cores only make every one of them slower. This lets `limit`
 * run, keeps at most `queue` more waiting (so the cores never idle between two requests), and
 * refuses the rest at once; a waiter that cannot start within `timeoutMs` is refused too.
 */
export class Admission {
  private running = 0;
  private readonly waiting: { grant: () => void; timer: ReturnType<typeof setTimeout> }[] = [];

  constructor(
    private readonly limit: number,
    private readonly queue: number,
    private readonly timeoutMs: number,
  ) {}

  /** A release function, or undefined when the request must be refused now. */
  async acquire(): Promise<(() => void) | undefined> {
    if (this.running < this.limit) {
      this.running++;
      return this.releaser();
    }
    if (this.waiting.length >= this.queue) return undefined;
    return new Promise((resolve) => {
      const waiter = {
        grant: () => {
          clearTimeout(waiter.timer);
          resolve(this.releaser());
        },
        timer: setTimeout(() => {
          const index = this.waiting.indexOf(waiter);
          if (index >= 0) this.waiting.splice(index, 1);
          resolve(undefined);
        }, this.timeoutMs),
      };
      this.waiting.push(waiter);
    });
  }

  /** Every slot taken and the queue full: a request now would be refused. */
  full(): boolean {
    return this.running >= this.limit && this.waiting.length >= this.queue;
  }

  stats() {
    return { running: this.running, waiting: this.waiting.length, limit: this.limit };
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter, so `running` stays as it is.
      if (next) next.grant();
      else this.running--;
    };
  }
}
