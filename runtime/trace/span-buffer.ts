/**
 * A FIFO bounded by count and by bytes: what does not fit is dropped and counted, never waited for. The guest
 * keeps its finished spans in one until the host drains them; the host queues guests' spans for its exporter in
 * another.
 */
export class SpanBuffer<T> {
  private items: Array<{ item: T; bytes: number }> = [];
  private head = 0;
  private bytes = 0;
  private droppedSince = 0;

  constructor(
    private readonly maxItems: number,
    private readonly maxBytes: number,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  /** Keeps `item` (of `bytes`) unless the buffer is full; false and counted when it is. */
  push(item: T, bytes: number): boolean {
    if (this.length >= this.maxItems || this.bytes + bytes > this.maxBytes) {
      this.droppedSince++;
      return false;
    }
    this.items.push({ item, bytes });
    this.bytes += bytes;
    return true;
  }

  /** Takes up to `max` items of at most `maxBytes` together, oldest first, and the number dropped since the last take. */
  take(max: number, maxBytes = Number.POSITIVE_INFINITY): { items: T[]; dropped: number } {
    let end = this.head;
    let bytes = 0;
    while (end < this.items.length && end - this.head < max && bytes + this.items[end]!.bytes <= maxBytes) {
      bytes += this.items[end]!.bytes;
      end++;
    }
    const taken = this.items.slice(this.head, end);
    this.head = end;
    for (const t of taken) this.bytes -= t.bytes;
    // Compact once the consumed prefix dominates, so a long-lived buffer does not keep its history.
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    const dropped = this.droppedSince;
    this.droppedSince = 0;
    return { items: taken.map((t) => t.item), dropped };
  }
}
