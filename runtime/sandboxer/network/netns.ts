import { execa } from "execa";

/**
 * Runs a command inside the network namespace at nsPath (CNI's /var/run/netns/cni-<uuid>). Node cannot setns(2),
 * and nsenter takes any namespace path, not only names under /var/run/netns.
 */
export async function inNetns(nsPath: string, cmd: string, args: string[]): Promise<string> {
  const r = await execa("nsenter", [`--net=${nsPath}`, "--", cmd, ...args], { reject: false, stdin: "ignore" });
  if (r.failed) {
    const why = r.stderr.trim() || r.shortMessage;
    throw new Error(`in netns ${nsPath}: ${cmd} ${args.join(" ")} failed: ${why}`);
  }
  return r.stdout;
}

export interface LinkInfo {
  ifindex: number;
  ifname: string;
  mtu: number;
  address: string;
  kind?: string;
  flags: string[];
}

export interface AddrInfo {
  family: "inet" | "inet6";
  local: string;
  prefixlen: number;
  scope: string;
}

export interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  scope?: string;
  protocol?: string;
  flags?: string[];
}

export interface NeighInfo {
  dst: string;
  lladdr?: string;
  state?: string[];
}

export async function links(nsPath: string): Promise<LinkInfo[]> {
  const raw = JSON.parse(await inNetns(nsPath, "ip", ["-j", "-d", "link", "show"])) as Array<
    LinkInfo & { linkinfo?: { info_kind?: string } }
  >;
  return raw.map((l) => ({
    ifindex: l.ifindex,
    ifname: l.ifname,
    mtu: l.mtu,
    address: l.address,
    kind: l.linkinfo?.info_kind,
    flags: l.flags ?? [],
  }));
}

export async function addresses(nsPath: string, dev: string): Promise<AddrInfo[]> {
  const raw = JSON.parse(await inNetns(nsPath, "ip", ["-j", "addr", "show", "dev", dev])) as Array<{
    addr_info?: AddrInfo[];
  }>;
  return (raw[0]?.addr_info ?? []).filter((a) => a.scope !== "link");
}

export async function routes(nsPath: string, family: "-4" | "-6"): Promise<RouteInfo[]> {
  return JSON.parse(await inNetns(nsPath, "ip", ["-j", family, "route", "show"])) as RouteInfo[];
}

/** The permanent (static) neighbour entries on dev: what CNI plugins or operators pinned there, v4 and v6. */
export async function permanentNeighbours(nsPath: string, dev: string): Promise<NeighInfo[]> {
  return JSON.parse(
    await inNetns(nsPath, "ip", ["-j", "neigh", "show", "nud", "permanent", "dev", dev]),
  ) as NeighInfo[];
}
