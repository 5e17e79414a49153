import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { type MethodsOf, type UnaryClient, unaryClient } from "../../runtime/grpc/service.ts";
import { Task } from "../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Controller } from "../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { SandboxService } from "../../runtime/protos/gen/kuasar/sandbox_pb.ts";
import { type ClockSample, sampleClock, syncGuestClock } from "../../runtime/sandboxer/agent.ts";
import { dial } from "../../runtime/transport/address.ts";
import { TtrpcClient } from "../../runtime/ttrpc/index.ts";
import { cleanupDaemonDir, type Daemon, requireArtifacts, startDaemon, writeConfig } from "../../testkit/daemon.ts";

// The guest clock through the daemon as containerd drives it (QEMU, TCG here): set at boot with clock_settime to
// the nanosecond, and stepped back as well as forward. Each measurement is the best of SAMPLES SyncClock rounds
// (host send t0, guest arrival and departure, host receipt t3); its offset is exact to within half its round trip.
const SAMPLES = 20;
const LIMIT_NS = 10_000_000n;

let dir: string;
let daemon: Daemon;
let controller: UnaryClient<MethodsOf<typeof Controller>>;
let closeController: () => void;

before(async () => {
  requireArtifacts();
  dir = await mkdtemp(path.join(os.tmpdir(), "vm-clock-"));
  const config = path.join(dir, "config.toml");
  await writeConfig(config, 'kernel_params = "task.debug"\n');
  daemon = await startDaemon(dir, config);
  ({ client: controller, close: closeController } = unaryClient(Controller, `unix://${daemon.sock}`));
});

after(async () => {
  closeController?.();
  await cleanupDaemonDir(daemon, dir);
});

async function best(client: TtrpcClient): Promise<ClockSample> {
  let b = await sampleClock(client);
  for (let i = 1; i < SAMPLES; i++) {
    const s = await sampleClock(client);
    if (s.rttNs < b.rttNs) b = s;
  }
  return b;
}

const ms = (ns: bigint) => `${(Number(ns) / 1e6).toFixed(3)} ms`;
const abs = (n: bigint) => (n < 0n ? -n : n);

test("the guest clock is within 10 ms of the host's after sync, from boot and after a step back; idle, it takes no periodic tick", {
  timeout: 240_000,
}, async (t) => {
  await controller.create({ sandboxId: "pod-clock" });
  await controller.start({ sandboxId: "pod-clock" });
  // The clock is set as Start returns; the task API holds every call until it is, so a call answered there without
  // the guest (the proxy's no-op Shutdown) returns once the clock is set.
  const tasks = new TtrpcClient(await dial(`unix://${path.join(dir, "state/pod-clock/task.sock")}`));
  await tasks.service(Task).shutdown({ id: "pod-clock" });
  tasks.close();
  const client = new TtrpcClient(await dial(`hvsock://${path.join(dir, "state/pod-clock/task.vsock")}:1024`));
  try {
    // Boot: the guest started from the RTC's whole seconds (no KVM clock under TCG); the boot's sync set it.
    const boot = await best(client);
    t.diagnostic(`after the boot sync: guest offset ${ms(boot.offsetNs)}, round trip ${ms(boot.rttNs)}`);
    assert.ok(abs(boot.offsetNs) <= LIMIT_NS, `guest off by ${ms(boot.offsetNs)} after the boot sync`);

    // Kuasar's default sysctls reached the guest at boot.
    const svc = client.service(SandboxService);
    const sysctl = await svc.execVMProcess({ command: "cat /proc/sys/vm/overcommit_memory" });
    assert.equal(sysctl.out, "1\n", "vm.overcommit_memory is Kuasar's default");

    // The kernel is tickless when idle (NO_HZ_IDLE): a periodic tick would add 250 local timer interrupts a second,
    // and under TCG each wakes QEMU's vCPU thread. One exec, so the host's calls do not wake the guest meanwhile.
    const loc = await svc.execVMProcess({
      command: "grep LOC: /proc/interrupts; sleep 2; grep LOC: /proc/interrupts",
    });
    const counts = [...loc.out.matchAll(/LOC:\s+(\d+)/g)].map((m) => Number(m[1]));
    assert.equal(counts.length, 2, `no two LOC lines in: ${loc.out}`);
    const ticks = counts[1]! - counts[0]!;
    t.diagnostic(`local timer interrupts over 2 s of an idle guest: ${ticks}`);
    assert.ok(ticks < 250, `${ticks} local timer interrupts in 2 s: the idle guest is ticking (periodic at 250 Hz)`);

    // Under TCG the guest takes the APIC timer's rate from lapic_timer_hz instead of calibrating it. Were that rate
    // wrong, timers would fire late by the same factor: a 1 s sleep, by the guest's own clock, shows it.
    const slept = await svc.execVMProcess({ command: "cat /proc/uptime; sleep 1; cat /proc/uptime" });
    const uptimes = [...slept.out.matchAll(/^([\d.]+) /gm)].map((m) => Number(m[1]));
    assert.equal(uptimes.length, 2, `no two uptimes in: ${slept.out}`);
    const sleptS = uptimes[1]! - uptimes[0]!;
    t.diagnostic(`a 1 s sleep in the guest took ${sleptS.toFixed(2)} s by its clock`);
    assert.ok(sleptS >= 0.99 && sleptS < 3, `a 1 s sleep took ${sleptS} s by the guest's clock: its timer rate is off`);

    // 5 s ahead, then the host's sync steps it back (a negative Delta) to the nanosecond.
    await svc.syncClock({ Delta: 5_000_000_000n });
    const measured = await syncGuestClock(client);
    t.diagnostic(`guest pushed 5 s ahead; the sync measured ${ms(measured)} and stepped it back`);
    assert.ok(abs(measured + 5_000_000_000n) <= LIMIT_NS, `measured ${ms(measured)} for a guest 5 s ahead`);
    const after = await best(client);
    t.diagnostic(
      `after the step back: guest offset ${ms(after.offsetNs)}, round trip ${ms(after.rttNs)} ` +
        `(so the clocks differ by at most ${ms(abs(after.offsetNs) + after.rttNs / 2n)})`,
    );
    assert.ok(abs(after.offsetNs) <= LIMIT_NS, `guest off by ${ms(after.offsetNs)} after the step back`);
  } finally {
    client.close();
    await controller.shutdown({ sandboxId: "pod-clock" });
  }
});
