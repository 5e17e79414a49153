import type { ServiceError } from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { controllerClient, reasonOf } from "../doctor/daemon.ts";
import type { AgentAddress } from "../sandboxer/hypervisor/vm-api.ts";
import type { SandboxRecord } from "../sandboxer/sandbox/record.ts";
import { type Loaded, readRecords } from "../sandboxer/store.ts";

export type Entry = Loaded<SandboxRecord>;

/** Every sandbox directory under the daemon's --dir, sorted by id. */
export async function readSandboxes(dir: string): Promise<Entry[]> {
  try {
    return (await readRecords<SandboxRecord>(dir)).sort((a, b) => a.id.localeCompare(b.id));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EACCES") {
      throw new Error(
        `cannot read ${dir}: permission denied (the daemon's state belongs to root: run kuasar-ctl as root)`,
      );
    }
    throw err;
  }
}

/** An exact id, or a prefix of exactly one; otherwise an error listing what matched (or how to look). */
export function resolvePrefix(entries: Entry[], prefix: string, dir: string): Entry {
  if (prefix === "") throw new Error("no sandbox id given");
  const exact = entries.find((e) => e.id === prefix);
  if (exact) return exact;
  const matches = entries.filter((e) => e.id.startsWith(prefix));
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0) {
    throw new Error(
      `no sandbox id starts with '${prefix}' under ${dir} (kuasar-ctl list shows them; pass --dir if the daemon runs with another one)`,
    );
  }
  throw new Error(
    `'${prefix}' matches ${matches.length} sandboxes: ${matches.map((m) => m.id).join(", ")}; give more of the id`,
  );
}

/**
 * The guest agent's address as the launcher recorded it in sandbox.json (runtime.agent): the debug console
 * listens on the same transport, port 1025.
 */
export function agentAddressOf(rec: SandboxRecord): AgentAddress | undefined {
  const agent = (rec.runtime as { agent?: AgentAddress } | undefined)?.agent;
  return agent && (agent.kind === "hvsock" || agent.kind === "vsock") ? agent : undefined;
}

export interface DaemonView {
  /** The Controller's state ("SANDBOX_READY" / "SANDBOX_NOTREADY"), or "unknown to the daemon". */
  state: string;
  pid: number;
  address: string;
}

/**
 * The daemon's view of each sandbox through its Controller, as containerd sees it. `up` is false when nothing
 * answers on the socket (the records on disk are then all there is).
 */
export async function daemonViews(
  listen: string,
  ids: string[],
): Promise<{ up: boolean; reason?: string; views: Map<string, DaemonView> }> {
  const { client, close } = controllerClient(listen);
  const views = new Map<string, DaemonView>();
  try {
    for (const id of ids) {
      try {
        const s = await client.status({ sandboxId: id, verbose: true }, { deadlineMs: 2000 });
        views.set(id, { state: s.state, pid: s.pid, address: s.address });
      } catch (err) {
        const e = err as ServiceError;
        if (e.code === grpcStatus.UNAVAILABLE || e.code === grpcStatus.DEADLINE_EXCEEDED) {
          return { up: false, reason: reasonOf(e), views };
        }
        views.set(id, { state: "unknown to the daemon", pid: 0, address: "" });
      }
    }
    return { up: true, views };
  } finally {
    close();
  }
}
