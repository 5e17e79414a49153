/** A random guest CID for vhost-vsock: 3 and up (0-2 are reserved), below 2^32-1 (VMADDR_CID_ANY). */
export function randomCid(): number {
  return 3 + Math.floor(Math.random() * (0xffff_fffe - 3));
}
