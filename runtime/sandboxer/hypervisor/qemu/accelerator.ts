import { type Accel, type Choice, chooseAccelerator, type HostProbes } from "../host.ts";

const ACCELERATORS = ["auto", "kvm", "tcg"];
const words = (value: string) =>
  value
    .split(",")
    .map((w) => w.trim())
    .filter(Boolean);

/** The accelerator words machine_accelerators names (more than one is a configuration error). */
export function acceleratorWords(value: string): string[] {
  return words(value).filter((w) => ACCELERATORS.includes(w));
}

/** Splits machine_accelerators into the accelerator word and Kuasar-style extra -machine options. */
export function parseAccelerators(value: string): { accel: "auto" | Accel; machineOptions: string[] } {
  const accel = (acceleratorWords(value)[0] ?? "auto") as "auto" | Accel;
  return { accel, machineOptions: words(value).filter((w) => !ACCELERATORS.includes(w)) };
}

/** kvm or tcg as the QEMU driver chooses it on this host for hypervisor.machine_accelerators. */
export function qemuAccelerator(machineAccelerators: string, probes: HostProbes): Promise<Choice<Accel>> {
  return chooseAccelerator(parseAccelerators(machineAccelerators).accel, probes);
}
