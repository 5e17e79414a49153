import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { OomWatcher } from "../../../runtime/agent/oom.ts";
import { parseCgroupMounts, readCgroupStats, resolveCgroupPaths } from "../../../runtime/cgroups/stats.ts";

const HYBRID = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

test("v1 (hybrid) paths come from the per-controller mounts", () => {
  const p = resolveCgroupPaths(
    "9:name=systemd:/x\n4:memory:/k/c1\n2:cpu,cpuacct:/k/c1\n0::/x\n",
    parseCgroupMounts(HYBRID),
  );
  assert.deepEqual(p, {
    version: 1,
    dirs: {
      memory: "/sys/fs/cgroup/memory/k/c1",
      cpu: "/sys/fs/cgroup/cpu,cpuacct/k/c1",
      cpuacct: "/sys/fs/cgroup/cpu,cpuacct/k/c1",
    },
  });
});

test("v2 paths come from the cgroup2 mount, honouring its root", () => {
  const mi = "25 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
  assert.deepEqual(resolveCgroupPaths("0::/kubepods/pod1/c1\n", parseCgroupMounts(mi)), {
    version: 2,
    dir: "/sys/fs/cgroup/kubepods/pod1/c1",
  });
  const sub = "25 1 0:26 /kubepods /mnt/cg rw - cgroup2 cgroup2 rw\n";
  assert.deepEqual(resolveCgroupPaths("0::/kubepods/c1\n", parseCgroupMounts(sub)), {
    version: 2,
    dir: "/mnt/cg/c1",
  });
});

test("v2 stats parse the cgroup files; unlimited is null", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-cg-"));
  try {
    const files: Record<string, string> = {
      "memory.current": "1048576\n",
      "memory.max": "max\n",
      "memory.stat": "anon 4096\nfile 8192\n",
      "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
      "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
      "pids.current": "3\n",
      "pids.max": "100\n",
      "io.stat": "8:0 rbytes=4096 wbytes=512 rios=1 wios=2 dbytes=0 dios=0\n",
    };
    for (const [f, v] of Object.entries(files)) await writeFile(path.join(dir, f), v);
    assert.deepEqual(await readCgroupStats({ version: 2, dir }), {
      version: 2,
      memory: {
        current: 1048576n,
        max: null,
        stat: { anon: 4096n, file: 8192n },
        events: { low: 0n, high: 0n, max: 2n, oom: 1n, oom_kill: 1n },
      },
      cpu: { usage_usec: 1500n, user_usec: 1000n, system_usec: 500n, nr_periods: 0n },
      pids: { current: 3n, max: 100n },
      io: [{ major: 8, minor: 0, rbytes: 4096n, wbytes: 512n, rios: 1n, wios: 2n }],
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("v1 stats: memory counters, cpuacct ticks as ns, unlimited as null", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-cg-"));
  try {
    const mem = path.join(dir, "memory");
    const cpu = path.join(dir, "cpuacct");
    await mkdir(mem);
    await mkdir(cpu);
    const w = (d: string, f: string, v: string) => writeFile(path.join(d, f), v);
    await w(mem, "memory.usage_in_bytes", "100\n");
    await w(mem, "memory.limit_in_bytes", "9223372036854771712\n");
    await w(mem, "memory.max_usage_in_bytes", "200\n");
    await w(mem, "memory.failcnt", "0\n");
    await w(mem, "memory.stat", "cache 10\nrss 20\n");
    await w(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    await w(cpu, "cpuacct.usage", "123456789\n");
    await w(cpu, "cpuacct.usage_percpu", "100000000 23456789 \n");
    await w(cpu, "cpuacct.stat", "user 3\nsystem 1\n");
    const st = await readCgroupStats({ version: 1, dirs: { memory: mem, cpuacct: cpu } });
    assert.deepEqual(st, {
      version: 1,
      memory: {
        usage: { usage: 100n, limit: null, maxUsage: 200n, failcnt: 0n },
        stat: { cache: 10n, rss: 20n },
        oomControl: { oom_kill_disable: 0n, under_oom: 0n, oom_kill: 2n },
      },
      cpu: {
        usageNs: 123456789n,
        perCpuNs: [100000000n, 23456789n],
        userNs: 30_000_000n,
        kernelNs: 10_000_000n,
        throttling: {},
      },
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("OomWatcher emits when memory.events' oom_kill grows (inotify), and once per increase", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "kuasar-oom-"));
  const w = new OomWatcher({ pollMs: 50 });
  try {
    const events = path.join(dir, "memory.events");
    await writeFile(events, "oom 0\noom_kill 0\n");
    const seen: string[] = [];
    w.on("oom", (ev) => seen.push(ev.containerId));
    await w.add("c1", { version: 2, dir });
    await writeFile(events, "oom 1\noom_kill 1\n");
    const deadline = Date.now() + 5000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await w.check("c1");
    assert.deepEqual(seen, ["c1"]);
    await writeFile(events, "oom 2\noom_kill 2\n");
    await w.remove("c1");
    assert.deepEqual(seen, ["c1", "c1"], "remove() checks a last time");
  } finally {
    w.close();
    await rm(dir, { recursive: true, force: true });
  }
});
