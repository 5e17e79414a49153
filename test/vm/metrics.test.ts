import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { lstat, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { unaryClient } from "../../runtime/grpc/service.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { cleanupDaemonDir, requireArtifacts, startDaemon, writeConfig } from "../../testkit/daemon.ts";

// The metrics endpoint of the daemon from source with real QEMU guests: two pods show up running with their Start
// phases and their VMMs' memory; with metrics_listen unset the daemon listens on nothing but its sandbox API.
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function daemonWith(prefix: string, metricsListen?: (dir: string) => string) {
  requireArtifacts();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  const config = path.join(dir, "config.toml");
  await writeConfig(config);
  const listen = metricsListen?.(dir);
  if (listen) {
    const text = await readFile(config, "utf8");
    await writeFile(config, text.replace("[sandbox]\n", `[sandbox]\nmetrics_listen = ${JSON.stringify(listen)}\n`));
  }
  const daemon = await startDaemon(dir, config);
  const { client, close } = unaryClient(Controller, `unix://${daemon.sock}`);
  cleanups.push(async () => {
    close();
    await cleanupDaemonDir(daemon, dir);
  });
  return { dir, daemon, controller: client };
}

function scrape(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath, path: "/metrics" }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${res.statusCode}: ${body}`))));
      })
      .on("error", reject);
  });
}

function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** What a process listens on: unix socket paths and TCP ports, from its fds and /proc/net. */
function listeners(pid: number): { unix: string[]; tcp: string[] } {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON (0x10000) marks a listener.
  const unix = readFileSync("/proc/net/unix", "utf8")
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 7 && inodes.has(f[6]!) && (Number.parseInt(f[3]!, 16) & 0x10000) !== 0)
    .map((f) => f[7] ?? "(unnamed)");
  // /proc/net/tcp{,6}: st 0A is LISTEN, inode is the tenth column.
  const tcp = ["/proc/net/tcp", "/proc/net/tcp6"].flatMap((file) =>
    readFileSync(file, "utf8")
      .split("\n")
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f.length >= 10 && f[3] === "0A" && inodes.has(f[9]!))
      .map((f) => `${file}:${f[1]}`),
  );
  return { unix, tcp };
}

test("two pods: the scrape shows them running, their Start phases and their VMMs' CPU and memory", {
  timeout: 600_000,
}, async (t) => {
  const sock = (dir: string) => path.join(dir, "run/metrics.sock");
  const { dir, daemon, controller } = await daemonWith("vm-metrics-", (d) => `unix://${sock(d)}`);
  assert.equal((await stat(path.dirname(sock(dir)))).mode & 0o777, 0o700, "the socket's directory is made 0700");
  assert.equal((await lstat(sock(dir))).mode & 0o777, 0o600);
  assert.deepEqual(listeners(daemon.proc.pid!).unix.sort(), [daemon.sock, sock(dir)].sort());

  const pods = ["pod-m1", "pod-m2"];
  for (const id of pods) {
    await controller.create({ sandboxId: id });
    await controller.start({ sandboxId: id });
  }
  const text = await scrape(sock(dir));
  for (const l of text.split("\n")) {
    if (/^kuasar_vmm_(sandboxes|sandbox_start_duration_seconds_(count|sum)|vmm_)/.test(l)) t.diagnostic(l);
  }
  assert.equal(value(text, 'kuasar_vmm_sandboxes{state="running"}'), 2);
  for (const phase of ["spawn", "agent", "setup", "total"]) {
    const n = value(text, `kuasar_vmm_sandbox_start_duration_seconds_count{phase="${phase}"}`) ?? 0;
    assert.ok(n >= 2, `${n} observations of phase ${phase}`);
  }
  assert.ok(value(text, 'kuasar_vmm_sandbox_start_duration_seconds_sum{phase="total"}')! > 0);
  for (const id of pods) {
    for (const kind of ["rss", "pss"]) {
      const bytes = value(text, `kuasar_vmm_vmm_memory_bytes{sandbox="${id}",kind="${kind}"}`) ?? 0;
      assert.ok(bytes > 0, `${id} ${kind} ${bytes}`);
    }
    assert.ok((value(text, `kuasar_vmm_vmm_cpu_seconds_total{sandbox="${id}"}`) ?? 0) > 0, `${id} cpu`);
  }
  assert.match(text, /^process_resident_memory_bytes \d/m, "the daemon's own process metrics");

  for (const id of pods) await controller.shutdown({ sandboxId: id });
  const after = await scrape(sock(dir));
  assert.equal(value(after, 'kuasar_vmm_sandboxes{state="running"}'), 0);
  assert.ok((value(after, "kuasar_vmm_sandbox_stop_duration_seconds_count") ?? 0) >= 2);
  assert.doesNotMatch(after, /sandbox="pod-m/, "per-sandbox series go with the sandboxes");
});

test("with metrics_listen unset the daemon listens on its sandbox API alone", { timeout: 60_000 }, async () => {
  const { daemon } = await daemonWith("vm-metrics-off-");
  const l = listeners(daemon.proc.pid!);
  assert.deepEqual(l.unix, [daemon.sock]);
  assert.deepEqual(l.tcp, []);
});
