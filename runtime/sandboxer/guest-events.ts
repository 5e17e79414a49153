import { type DescField, type DescMessage, fromBinary, type Message, ScalarType } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { validateId } from "../contract/ids.ts";
import type { Logger } from "../log/log.ts";
import {
  type TaskExecStarted,
  TaskExecStartedSchema,
  type TaskExit,
  TaskExitSchema,
  type TaskOOM,
  TaskOOMSchema,
  type TaskStart,
  TaskStartSchema,
} from "../protos/gen/containerd/events/task_pb.ts";
import { type EventPublisher, ThrottledWarning } from "./events.ts";

/** Real guest events are a few hundred bytes; anything much larger is refused before it is decoded. */
export const MAX_GUEST_EVENT_BYTES = 64 * 1024;

/** What vmm-task sends (runtime/agent/task-events.ts); create, delete and exec-added are the host's own. */
const GUEST_TOPICS: Readonly<Record<string, DescMessage>> = {
  "/tasks/start": TaskStartSchema,
  "/tasks/exit": TaskExitSchema,
  "/tasks/oom": TaskOOMSchema,
  "/tasks/exec-started": TaskExecStartedSchema,
};

type GuestTaskEvent = TaskStart | TaskExit | TaskOOM | TaskExecStarted;

const ANY_PREFIX = "type.googleapis.com/";

/** google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;

/** What GetEvents returns; its namespace is ignored (the host knows where each container lives). */
export interface GuestEnvelope {
  topic: string;
  event?: { typeUrl: string; value: Uint8Array } | undefined;
}

export type Admission =
  | { ok: true; namespace: string; topic: string; schema: DescMessage; message: Message }
  | { ok: false; reason: string };

/**
 * Admits one event the guest sent for its sandbox, or says why not. Only the task events a guest sees first are
 * admitted, about containers of this sandbox (`namespaceOf` knows them, and gives the namespace containerd
 * created each in); the payload is decoded strictly and handed back decoded, so the host re-encodes it and the
 * guest's bytes never reach containerd.
 */
export function admitGuestEvent(
  env: GuestEnvelope,
  namespaceOf: (containerId: string) => string | undefined,
): Admission {
  const refuse = (reason: string): Admission => ({ ok: false, reason });
  const schema = Object.hasOwn(GUEST_TOPICS, env.topic) ? GUEST_TOPICS[env.topic] : undefined;
  if (!schema) return refuse(`topic ${show(env.topic)} is not a task event a guest may send`);
  if (!env.event) return refuse(`${env.topic}: no event`);
  const { typeUrl, value } = env.event;
  if (typeUrl !== schema.typeName && typeUrl !== ANY_PREFIX + schema.typeName) {
    return refuse(`${env.topic}: type URL ${show(typeUrl)} is not ${schema.typeName}`);
  }
  if (value.byteLength > MAX_GUEST_EVENT_BYTES) {
    return refuse(`${env.topic}: payload of ${value.byteLength} bytes is over ${MAX_GUEST_EVENT_BYTES}`);
  }
  let message: GuestTaskEvent;
  try {
    const mismatch = wireTypeMismatch(schema, value);
    if (mismatch) return refuse(`${env.topic}: ${mismatch}`);
    message = fromBinary(schema, value, { readUnknownFields: false }) as GuestTaskEvent;
  } catch (err) {
    return refuse(`${env.topic}: payload is not a ${schema.typeName}: ${show((err as Error).message)}`);
  }
  const { containerId } = message;
  if (validateId("container", containerId)) return refuse(`${env.topic}: container_id ${show(containerId)} is invalid`);
  const namespace = namespaceOf(containerId);
  if (namespace === undefined) {
    return refuse(`${env.topic}: container_id ${show(containerId)} is not a container of this sandbox`);
  }
  const problem = checkFields(message);
  if (problem) return refuse(`${env.topic}: ${problem}`);
  return { ok: true, namespace, topic: env.topic, schema, message };
}

/** The message's own fields: process ids and the exit time. */
function checkFields(message: GuestTaskEvent): string | undefined {
  if (message.$typeName === "containerd.events.TaskExecStarted" && validateId("exec", message.execId)) {
    return `exec_id ${show(message.execId)} is invalid`;
  }
  if (message.$typeName === "containerd.events.TaskExit") {
    // The init process exits under the container's id, an exec under its exec id.
    const { id, exitedAt: at } = message;
    if (id !== message.containerId && validateId("exec", id)) return `id ${show(id)} is invalid`;
    if (at && (at.seconds < MIN_SECONDS || at.seconds > MAX_SECONDS || at.nanos < 0 || at.nanos > 999_999_999)) {
      return `exited_at ${at.seconds}s ${at.nanos}ns is not a valid time`;
    }
  }
  return undefined;
}

/**
 * protobuf-es reads a known field whatever wire type it arrives with (a length-delimited "pid" is read as a
 * varint, and the rest is read out of step); the guest's encoder never does that, so it is refused.
 */
function wireTypeMismatch(schema: DescMessage, bytes: Uint8Array, path = ""): string | undefined {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wire] = r.tag();
    const field = schema.fields.find((f) => f.number === no);
    if (!field) {
      r.skip(wire, no);
      continue;
    }
    const want = wireTypeOf(field);
    if (wire !== want) {
      return `field ${path}${field.name} has wire type ${WireType[wire]}, not ${want === undefined ? "any" : WireType[want]}`;
    }
    if (field.fieldKind === "message") {
      const inner = wireTypeMismatch(field.message, r.bytes(), `${path}${field.name}.`);
      if (inner) return inner;
    } else r.skip(wire, no);
  }
  return undefined;
}

function wireTypeOf(field: DescField): WireType | undefined {
  switch (field.fieldKind) {
    case "message":
      return WireType.LengthDelimited;
    case "enum":
      return WireType.Varint;
    case "scalar":
      switch (field.scalar) {
        case ScalarType.STRING:
        case ScalarType.BYTES:
          return WireType.LengthDelimited;
        case ScalarType.DOUBLE:
        case ScalarType.FIXED64:
        case ScalarType.SFIXED64:
          return WireType.Bit64;
        case ScalarType.FLOAT:
        case ScalarType.FIXED32:
        case ScalarType.SFIXED32:
          return WireType.Bit32;
        default:
          return WireType.Varint;
      }
    default:
      // Repeated and map fields: no event a guest may send has one.
      return undefined;
  }
}

/** A guest's string in a log line: cut short, quoted and escaped (no forged log lines). */
function show(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);
}

export interface ForwarderOptions {
  /** Events pulled per second once the burst is spent. */
  ratePerSec?: number;
  burst?: number;
  /** Refusals are reported at most once per window, with a count. */
  warnWindowMs?: number;
}

/**
 * One sandbox's events from the guest on their way to containerd: admitted (or refused, logged without letting a
 * guest flood the log) and queued under the sandbox's id. `forward` also paces the pull loop: a guest's queue
 * holds what is not pulled yet, so pacing loses nothing, while a guest answering GetEvents as fast as it can
 * costs the daemon (and containerd's event service) no more than `ratePerSec` events a second.
 */
export class GuestEventForwarder {
  private readonly rate: number;
  private readonly burst: number;
  private tokens: number;
  private refilledAt = Date.now();
  private readonly refusals: ThrottledWarning;

  constructor(
    private readonly publisher: EventPublisher,
    private readonly sandboxId: string,
    private readonly namespaceOf: (containerId: string) => string | undefined,
    log: Logger,
    options: ForwarderOptions = {},
  ) {
    this.rate = options.ratePerSec ?? 200;
    this.burst = options.burst ?? 1000;
    this.tokens = this.burst;
    this.refusals = new ThrottledWarning(log, options.warnWindowMs ?? 10_000);
  }

  /** Forwards or refuses one event; resolves when the next one may be pulled. */
  forward(env: GuestEnvelope): Promise<void> {
    const a = admitGuestEvent(env, this.namespaceOf);
    if (a.ok) this.publisher.publish(this.sandboxId, a.namespace, a.topic, a.schema, a.message);
    else this.refusals.warn(`sandbox ${this.sandboxId}: refused an event from the guest: ${a.reason}`);
    return this.pace();
  }

  /** A token bucket; a clock that steps back refills nothing. */
  private pace(): Promise<void> {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.refilledAt) * this.rate) / 1000);
    this.refilledAt = now;
    this.tokens--;
    if (this.tokens >= 0) return Promise.resolve();
    const waitMs = (-this.tokens * 1000) / this.rate;
    return new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}
