import { validateId } from "../contract/ids.ts";
import { TaskError } from "./errors.ts";
import type { Proc, TaskStatus } from "./process.ts";

/** A container of the pod: its init, its execs and the agent's files for it. */
export interface Container {
  id: string;
  /** The host's bundle (in the share), as the create named it. */
  bundle: string;
  /** The agent's own bundle and files for the container. */
  dir: string;
  init: Proc;
  execs: Map<string, Proc>;
  paused: boolean;
  deleted: boolean;
}

/** The pod's containers by id, and the ids of creates under way (so a second create of one fails at once). */
export class ContainerRegistry {
  readonly #containers = new Map<string, Container>();
  readonly #reserved = new Set<string>();

  /** Claims id for a create; release() it when the create ends, after add() if the create succeeded. */
  reserve(id: string): void {
    // containerd's rule, as the host applies it: the id is a file name here.
    const invalid = validateId("container", id);
    if (invalid) throw new TaskError("InvalidArgument", invalid);
    if (this.#containers.has(id) || this.#reserved.has(id)) {
      throw new TaskError("AlreadyExists", `container ${id} already exists`);
    }
    this.#reserved.add(id);
  }

  release(id: string): void {
    this.#reserved.delete(id);
  }

  add(c: Container): void {
    this.#containers.set(c.id, c);
  }

  remove(id: string): void {
    this.#containers.delete(id);
  }

  ids(): string[] {
    return [...this.#containers.keys()];
  }

  find(id: string): Container | undefined {
    return this.#containers.get(id);
  }

  get(id: string): Container {
    const c = this.#containers.get(id);
    if (!c) throw new TaskError("NotFound", `container ${id} not found`);
    return c;
  }
}

/** The container's init ("" execId) or one of its execs. */
export function processOf(c: Container, execId: string): Proc {
  if (!execId) return c.init;
  const p = c.execs.get(execId);
  if (!p) throw new TaskError("NotFound", `exec ${execId} of container ${c.id} not found`);
  return p;
}

/** containerd's status of a process: a running process of a paused container is PAUSED. */
export function statusOf(c: Container, p: Proc): TaskStatus {
  if (p.exit) return "STOPPED";
  if (p.phase === "created" || p.phase === "starting") return "CREATED";
  if (p.phase === "running") return c.paused ? "PAUSED" : "RUNNING";
  return "UNKNOWN";
}
