import { readdir, readFile } from "node:fs/promises";
import { execa } from "execa";
import { type Interface, IPFamily, type Route } from "../protos/gen/kuasar/sandbox_pb.ts";

/** busybox `ip`: the guest has no iproute2, and these few netlink operations are all it needs. */
async function ip(args: string[]): Promise<void> {
  const r = await execa("ip", args, { reject: false, stdin: "ignore" });
  if (r.failed) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim() || r.shortMessage}`);
}

/** Guest NICs by MAC address; the host names each interface by the MAC it gave the VM's NIC. */
export async function linksByMac(sysNet = "/sys/class/net"): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await readdir(sysNet).catch(() => [])) {
    const mac = (await readFile(`${sysNet}/${name}/address`, "utf8").catch(() => "")).trim().toLowerCase();
    if (mac && mac !== "00:00:00:00:00:00") out.set(mac, name);
  }
  return out;
}

/** Renames each NIC to the pod's interface name, sets its MTU and addresses, and brings it up. */
export async function configureInterfaces(interfaces: Interface[]): Promise<void> {
  const byMac = await linksByMac();
  for (const itf of interfaces) {
    const current = byMac.get(itf.hwAddr.toLowerCase());
    if (!current) {
      throw new Error(
        `interface ${itf.name}: no guest NIC has MAC ${itf.hwAddr} (guest NICs: ${[...byMac].join(", ")})`,
      );
    }
    await ip(["link", "set", "dev", current, "down"]);
    if (current !== itf.name) await ip(["link", "set", "dev", current, "name", itf.name]);
    if (itf.mtu > 0n) await ip(["link", "set", "dev", itf.name, "mtu", String(itf.mtu)]);
    for (const a of itf.IPAddresses) {
      const fam = a.family === IPFamily.v6 ? "-6" : "-4";
      await ip([fam, "addr", "add", `${a.address}/${a.mask}`, "dev", itf.name]);
    }
    await ip(["link", "set", "dev", itf.name, "up"]);
  }
  await ip(["link", "set", "dev", "lo", "up"]);
}

/** Adds routes in order: link-scope routes first, so gateways are reachable when default routes are added. */
export async function configureRoutes(routes: Route[]): Promise<void> {
  const ordered = [...routes].sort((a, b) => Number(!!a.gateway) - Number(!!b.gateway));
  for (const r of ordered) {
    const args = [r.family === IPFamily.v6 ? "-6" : "-4", "route", "replace", r.dest || "default"];
    if (r.gateway) args.push("via", r.gateway);
    if (r.device) args.push("dev", r.device);
    if (r.source) args.push("src", r.source);
    if (r.scope === 253) args.push("scope", "link");
    await ip(args);
  }
}
