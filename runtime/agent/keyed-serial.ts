/** Runs the operations given for one key one at a time, in call order; operations on different keys overlap. */
export class KeyedSerial {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** Runs fn once every earlier operation on key settled, whether it failed or not. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return next;
  }
}
