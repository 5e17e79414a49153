/** Messages a stream's consumer has not read yet beyond which reading from the connection pauses. */
export const QUEUE_HIGH_WATER = 64;
const QUEUE_LOW_WATER = 16;

export interface QueueHooks {
  /** The queue reached QUEUE_HIGH_WATER: stop feeding it. */
  onFull(): void;
  /** The consumer caught up (or left): feeding may resume. */
  onRelieved(): void;
  /** The consumer stopped iterating early. */
  onAbandon(): void;
}

/**
 * Inbound messages of one stream, consumed as an async iterable. Ends with
 * end() or fail(err); the consumer sees the error after the queued messages.
 */
export class MessageQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  private ended = false;
  private error: unknown = undefined;
  private full = false;
  private iterated = false;

  constructor(private readonly hooks: QueueHooks) {}

  get closed(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (!this.full && this.items.length - this.head >= QUEUE_HIGH_WATER) {
      this.full = true;
      this.hooks.onFull();
    }
  }

  end(): void {
    this.close(undefined);
  }

  fail(err: unknown): void {
    this.close(err ?? new Error("stream failed"));
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head]!;
      this.items[this.head++] = undefined as T;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      this.relieveIfLow();
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) {
      if (this.error !== undefined) {
        const err = this.error;
        this.error = undefined; // report once, then behave as ended
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter) return Promise.reject(new Error("MessageQueue: concurrent next() calls"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<T>> {
    if (!this.ended) {
      this.close(undefined);
      this.hooks.onAbandon();
    }
    this.items = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    if (this.iterated) throw new Error("MessageQueue: a stream can be iterated only once");
    this.iterated = true;
    return this;
  }

  private close(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    if (this.full) {
      this.full = false;
      this.hooks.onRelieved();
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      this.error = undefined;
      if (err !== undefined) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  private relieveIfLow(): void {
    if (this.full && this.items.length - this.head <= QUEUE_LOW_WATER) {
      this.full = false;
      this.hooks.onRelieved();
    }
  }
}
