import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * Onlining what the host hot-plugged. A vCPU added over ACPI arrives offline (x86 onlines none by itself); memory
 * blocks come up online with CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE, and any left offline (another kernel) are onlined
 * here too. sysfs is the kernel's, so what is read there is trusted.
 */
export interface SysPaths {
  cpu: string;
  memory: string;
}

const SYS: SysPaths = { cpu: "/sys/devices/system/cpu", memory: "/sys/devices/system/memory" };
const POLL_MS = 50;
/** The host's timeout is a request, not a promise to hold the call forever. */
export const MAX_ONLINE_WAIT_MS = 60_000;

export interface Online {
  cpus: number;
  memoryBytes: number;
}

async function entries(dir: string, pattern: RegExp): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => pattern.test(n));
}

const read = (file: string) =>
  readFile(file, "utf8").then(
    (s) => s.trim(),
    () => undefined,
  );

/** Onlines every offline CPU and memory block, then counts what is online. */
export async function onlineAll(sys: SysPaths = SYS): Promise<Online> {
  let cpus = 0;
  for (const name of await entries(sys.cpu, /^cpu\d+$/)) {
    const file = path.join(sys.cpu, name, "online");
    // cpu0 has no "online" file: it cannot go offline.
    const state = await read(file);
    if (state === "0") await writeFile(file, "1").catch(() => {});
    if (state === undefined || (await read(file)) === "1") cpus++;
  }
  const blockSize = Number.parseInt((await read(path.join(sys.memory, "block_size_bytes"))) ?? "", 16);
  let blocks = 0;
  for (const name of await entries(sys.memory, /^memory\d+$/)) {
    const file = path.join(sys.memory, name, "state");
    if ((await read(file)) === "offline") await writeFile(file, "online").catch(() => {});
    if ((await read(file)) === "online") blocks++;
  }
  return { cpus, memoryBytes: Number.isFinite(blockSize) ? blocks * blockSize : 0 };
}

/**
 * Onlines what arrives until the guest has at least `want` online, or until timeoutMs (at most MAX_ONLINE_WAIT_MS)
 * runs out: ACPI notifies the guest a little after the host's device_add returns. Resolves with what is online.
 */
export async function onlineUntil(want: Online, timeoutMs: number, sys: SysPaths = SYS): Promise<Online> {
  const until = Date.now() + Math.min(Math.max(timeoutMs, 0), MAX_ONLINE_WAIT_MS);
  for (;;) {
    const got = await onlineAll(sys);
    if ((got.cpus >= want.cpus && got.memoryBytes >= want.memoryBytes) || Date.now() >= until) return got;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
