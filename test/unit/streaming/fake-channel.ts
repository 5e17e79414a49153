import { Writable } from "node:stream";
import type { Any } from "@bufbuild/protobuf/wkt";
import { parseMessage } from "../../../runtime/streaming/messages.ts";
import type { AnyChannel } from "../../../runtime/streaming/stdio-stream.ts";

/**
 * One side of a stream whose peer the test plays: push() delivers to it, `sent` and `state.dataBytes` record what
 * it sent, `state.ended` and `state.abandoned` whether it ended its side and stopped reading.
 */
export function fakeChannel() {
  const queue: Any[] = [];
  let finished = false;
  let waiter: ((r: IteratorResult<Any>) => void) | undefined;
  const sent: Any[] = [];
  const state = { ended: false, abandoned: false, dataBytes: 0 };
  const finish = () => {
    finished = true;
    waiter?.({ done: true, value: undefined });
    waiter = undefined;
  };
  const ch: AnyChannel = {
    send: async (m) => {
      sent.push(m);
      const parsed = parseMessage(m, "test");
      if (parsed.kind === "data") state.dataBytes += parsed.data.length;
      for (const hook of onSend) hook();
    },
    messages: {
      next: () => {
        if (queue.length) return Promise.resolve({ done: false, value: queue.shift()! });
        if (finished) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => (waiter = resolve));
      },
      return: async () => {
        state.abandoned = true;
        finish();
        return { done: true, value: undefined };
      },
    },
    end: () => {
      state.ended = true;
    },
  };
  const onSend: Array<() => void> = [];
  return {
    ch,
    sent,
    state,
    push(m: Any) {
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w({ done: false, value: m });
      } else queue.push(m);
    },
    /** The peer ends its side. */
    end: finish,
    /** Resolves once cond() holds after some send (or at once). */
    sentUntil(cond: () => boolean): Promise<void> {
      if (cond()) return Promise.resolve();
      return new Promise((resolve) => {
        const hook = () => {
          if (!cond()) return;
          onSend.splice(onSend.indexOf(hook), 1);
          resolve();
        };
        onSend.push(hook);
      });
    },
  };
}

/** A sink that never drains, counting writes and the most bytes it held; `overflow` rejects once it holds more than limit. */
export function stuckSink(limit: number) {
  let onOverflow: ((e: Error) => void) | undefined;
  const overflow = new Promise<never>((_, reject) => (onOverflow = reject));
  overflow.catch(() => {});
  const stats = { maxHeld: 0, writes: 0 };
  const sink = new Writable({ write() {} });
  const write = sink.write.bind(sink) as (chunk: Buffer, cb?: (err?: Error | null) => void) => boolean;
  sink.write = ((chunk: Buffer, cb?: (err?: Error | null) => void) => {
    stats.writes++;
    const ok = write(chunk, cb);
    stats.maxHeld = Math.max(stats.maxHeld, sink.writableLength);
    if (stats.maxHeld > limit) onOverflow?.(new Error(`the sink holds ${stats.maxHeld} bytes, over ${limit}`));
    return ok;
  }) as Writable["write"];
  return { sink, stats, overflow };
}

export const tick = () => new Promise((r) => setTimeout(r, 20));
