import type { Any } from "@bufbuild/protobuf/wkt";
import { dataMessage, ProtocolViolation, parseMessage, type StreamMessage, windowMessage } from "./messages.ts";
import { type AnyChannel, MAX_CREDIT } from "./stdio-stream.ts";

const ENDED = { done: true, value: undefined } as const;

/**
 * Joins containerd's stdio stream (io_type "streaming") to the guest's stream for the same process end.
 * containerd is trusted: what it sends passes as it is, and its WindowUpdates are counted as the credit the guest
 * may use. The guest is not: its Data must fit that credit and its WindowUpdates are forwarded only up to
 * MAX_CREDIT outstanding; anything else from it ends both sides and rejects naming the stream. Resolves when the
 * guest's side ends.
 */
export async function relayStreams(host: AnyChannel, guest: AnyChannel, name: string): Promise<void> {
  /** Bytes containerd granted that the guest has not sent yet. */
  let hostCredit = 0;
  /** Bytes the guest granted (as forwarded) that containerd has not sent yet. */
  let guestCredit = 0;
  let failure: Error | undefined;
  // a pending read also ends when the relay fails, whatever the iterator does with return()
  const reads = new Set<(r: IteratorResult<Any>) => void>();
  const next = (ch: AnyChannel): Promise<IteratorResult<Any>> => {
    if (failure) return Promise.resolve(ENDED);
    return new Promise((resolve, reject) => {
      const settle = (r: IteratorResult<Any>) => {
        reads.delete(settle);
        resolve(r);
      };
      reads.add(settle);
      ch.messages.next().then(settle, (err) => {
        reads.delete(settle);
        reject(err);
      });
    });
  };
  const fail = (err: unknown) => {
    failure ??= err instanceof Error ? err : new Error(String(err));
    for (const end of reads) end(ENDED);
    guest.end();
    void guest.messages.return?.();
    void host.messages.return?.();
  };

  const toGuest = async () => {
    for (;;) {
      const r = await next(host);
      if (r.done) return guest.end();
      const m = counted(r.value, name);
      if (m?.kind === "window" && m.update > 0) hostCredit += m.update;
      if (m?.kind === "data") guestCredit = Math.max(0, guestCredit - m.data.length);
      await guest.send(r.value);
    }
  };

  const toHost = async () => {
    for (;;) {
      const r = await next(guest);
      if (r.done) return host.end();
      // re-encoded, so only the fields checked here reach containerd
      const m = parseMessage(r.value, name);
      if (m.kind === "data") {
        const n = m.data.length;
        if (n > hostCredit)
          throw new ProtocolViolation(
            `stdio stream ${name}: the guest sent ${n} bytes with ${hostCredit} bytes of containerd's credit left; closing the stream`,
          );
        if (n === 0) continue;
        hostCredit -= n;
        await host.send(dataMessage(m.data));
      } else {
        // non-positive updates grant nothing; a huge one is clipped so containerd's int32 counter stays sane
        const n = Math.min(m.update, MAX_CREDIT - guestCredit);
        if (n <= 0) continue;
        guestCredit += n;
        await host.send(windowMessage(n));
      }
    }
  };

  void toGuest().catch(fail);
  await toHost().catch(fail);
  if (failure) throw failure;
}

/** containerd's message as Data or WindowUpdate to count; anything else it sends passes uncounted. */
function counted(msg: Any, name: string): StreamMessage | undefined {
  try {
    return parseMessage(msg, name);
  } catch {
    return undefined;
  }
}
