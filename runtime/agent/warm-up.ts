import { mkdirSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { IPFamily, SetupSandboxRequestSchema } from "../protos/gen/kuasar/sandbox_pb.ts";
import { checkInterface, checkNeighbour, checkRoute, linksByMac } from "./network.ts";
import { SANDBOX_NS_DIR, sandboxNamespaces } from "./spec.ts";

/** A request of the shape the host sends: one of everything SetupSandbox checks. */
const SAMPLE = create(SetupSandboxRequestSchema, {
  config: { typeUrl: "PodSandboxConfig", value: Buffer.from('{"hostname":"warm-up","linux":{"sysctls":{}}}') },
  interfaces: [
    {
      name: "eth0",
      hwAddr: "02:00:00:00:00:01",
      mtu: 1500n,
      IPAddresses: [{ family: IPFamily.v4, address: "10.0.0.2", mask: "24" }],
    },
  ],
  routes: [{ dest: "", gateway: "10.0.0.1", device: "eth0", family: IPFamily.v4 }],
  neighbors: [
    { toIPAddress: { family: IPFamily.v4, address: "10.0.0.1" }, device: "eth0", lladdr: "02:00:00:00:00:02" },
  ],
});

/**
 * The guest's node starts from a snapshot that holds no compiled code (node builds it with V8's kClear), so each
 * function, node's own included, is compiled at its first call: under TCG the first SetupSandbox spent about 45 of
 * its 53 ms in the guest compiling (a second call took 8). Run once the agent listens, while the host sees the
 * ready line and dials, this takes SetupSandbox's read-only parts through once: the request's decoding, the checks
 * of what the host sends, the NIC listing and the pod namespaces' probe. It changes nothing but nsDir existing,
 * which SetupSandbox creates anyway. Returns why it stopped early, if it did: a warm-up is never worth failing over.
 */
export function warmUp(nsDir = SANDBOX_NS_DIR): string | undefined {
  try {
    warmSetupPath(nsDir);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function warmSetupPath(nsDir: string): void {
  const req = fromBinary(SetupSandboxRequestSchema, toBinary(SetupSandboxRequestSchema, SAMPLE));
  JSON.parse(Buffer.from(req.config?.value ?? []).toString("utf8"));
  for (const i of req.interfaces) checkInterface(i);
  for (const r of req.routes) checkRoute(r);
  for (const n of req.neighbors) checkNeighbour(n);
  linksByMac();
  mkdirSync(nsDir, { recursive: true });
  sandboxNamespaces(nsDir);
}
