/**
 * The VMMs this daemon drives, by the name `[hypervisor] type` takes. A leaf: the build pipeline and the node installer
 * read the names without loading a driver. registry.ts maps each name to its VMM's descriptor (a test keeps the two
 * equal).
 */
export const HYPERVISORS = ["qemu", "cloud-hypervisor", "stratovirt"] as const;
export type HypervisorKind = (typeof HYPERVISORS)[number];
