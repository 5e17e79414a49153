/**
 * Pairs a value offered under an id with the one claim for that id, whichever comes first: a claim made before
 * the offer waits for it, up to a deadline. Each offer is taken once.
 */
export class Rendezvous<T> {
  private ready = new Map<string, T>();
  private waiters = new Map<string, Array<(v: T) => void>>();

  offer(id: string, value: T): void {
    const waiting = this.waiters.get(id);
    this.waiters.delete(id);
    if (waiting?.length) for (const w of waiting) w(value);
    else this.ready.set(id, value);
  }

  /** Takes back an offer nobody claimed (its process or container is gone). */
  withdraw(id: string): void {
    this.ready.delete(id);
  }

  /** The value offered under id; rejects with `what` named when none comes within timeoutMs. */
  claim(id: string, timeoutMs: number, what: string): Promise<T> {
    const ready = this.ready.get(id);
    if (ready !== undefined) {
      this.ready.delete(id);
      return Promise.resolve(ready);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.set(
          id,
          (this.waiters.get(id) ?? []).filter((w) => w !== done),
        );
        reject(new Error(`no ${what} named ${id} appeared within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (v: T) => {
        clearTimeout(timer);
        resolve(v);
      };
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), done]);
    });
  }
}
