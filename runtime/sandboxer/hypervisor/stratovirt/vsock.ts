import type { HostProbes } from "../host.ts";

/** StratoVirt reaches the guest over vhost-vsock only: without the device no sandbox starts. */
export const NO_VHOST_VSOCK = "stratovirt talks to the guest over vhost-vsock, and /dev/vhost-vsock does not exist";

export const hasVhostVsock = (probes: HostProbes) => probes.exists("/dev/vhost-vsock");
