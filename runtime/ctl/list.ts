import { existsSync } from "node:fs";
import { probeDaemon } from "../doctor/daemon.ts";
import { agentUrl } from "../sandboxer/hypervisor/vm-api.ts";
import { agentAddressOf, daemonViews, type Entry, readSandboxes } from "./sandboxes.ts";

export interface Row {
  id: string;
  /** sandbox.json's state (created, running, stopped), or "unreadable". */
  state: string;
  /** The daemon's Controller state, or why there is none. */
  daemon: string;
  pid: number | null;
  /** The recorded VMM pid still exists. */
  pidAlive: boolean;
  startedAt: string | null;
  uptimeSeconds: number | null;
  /** The task API address containerd dials. */
  address: string;
  /** Where the guest agent is reached (its debug console is port 1025 of the same transport). */
  agent: string;
  error?: string;
}

export function rowOf(e: Entry, daemon: string, now: number): Row {
  const r = e.record;
  if (!r) {
    return {
      id: e.id,
      state: "unreadable",
      daemon,
      pid: null,
      pidAlive: false,
      startedAt: null,
      uptimeSeconds: null,
      address: "",
      agent: "",
      ...(e.error ? { error: e.error } : {}),
    };
  }
  const running = r.state === "running";
  const started = running && r.startedAt ? Date.parse(r.startedAt) : Number.NaN;
  const agent = agentAddressOf(r);
  return {
    id: r.id,
    state: r.state,
    daemon,
    pid: r.pid ?? null,
    pidAlive: r.pid !== undefined && existsSync(`/proc/${r.pid}`),
    startedAt: r.startedAt ?? null,
    uptimeSeconds: Number.isNaN(started) ? null : Math.max(0, Math.round((now - started) / 1000)),
    address: r.taskAddress ?? "",
    agent: agent ? agentUrl(agent) : "",
  };
}

/** 3d4h, 2h05m, 7m03s, 42s. */
export function formatDuration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

/** Ids as long as containerd's (64 hex) are cut like crictl does; prefixes resolve in every other command. */
const ID_WIDTH = 13;

export function formatTable(rows: Row[], daemonLine: string): string {
  const cells = rows.map((r) => [
    r.id.length > ID_WIDTH ? r.id.slice(0, ID_WIDTH) : r.id,
    r.state,
    r.daemon,
    r.pid === null ? "-" : r.pidAlive || r.state !== "running" ? String(r.pid) : `${r.pid} (gone)`,
    r.uptimeSeconds === null ? "-" : formatDuration(r.uptimeSeconds),
    r.address || r.error || "-",
  ]);
  const head = ["SANDBOX", "STATE", "DAEMON", "VMM PID", "UPTIME", "ADDRESS"];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return `${[daemonLine, line(head), ...cells.map(line)].join("\n")}\n`;
}

const SHORT_STATE: Record<string, string> = { SANDBOX_READY: "ready", SANDBOX_NOTREADY: "notready" };

/** The sandboxes under dir, with the daemon's view of each when it answers on listen. */
export async function listSandboxes(dir: string, listen: string): Promise<{ daemonLine: string; rows: Row[] }> {
  const entries = await readSandboxes(dir);
  const probe = await probeDaemon(listen);
  let daemonLine: string;
  let views: Awaited<ReturnType<typeof daemonViews>>["views"] = new Map();
  if (probe.up) {
    const d = await daemonViews(
      listen,
      entries.map((e) => e.id),
    );
    views = d.views;
    daemonLine = d.up ? `daemon: serving on ${listen}` : `daemon: stopped answering on ${listen} (${d.reason})`;
  } else {
    daemonLine = `daemon: not answering on ${listen} (${probe.reason}); showing ${dir} only`;
  }
  const now = Date.now();
  const rows = entries.map((e) => {
    const v = views.get(e.id);
    return rowOf(e, v ? (SHORT_STATE[v.state] ?? v.state) : probe.up ? "-" : "down", now);
  });
  return { daemonLine, rows };
}
