// The parts of an OCI runtime spec (a bundle's config.json) the host or the guest reads or rewrites: the host mounts
// the rootfs and binds into the share and rewrites their paths, the guest adjusts namespaces, cgroups and labels.
// Every other field passes through untouched, on both sides.

export interface OciRoot {
  path: string;
  readonly?: boolean;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciProcess {
  terminal?: boolean;
  args?: string[];
  apparmorProfile?: string;
  selinuxLabel?: string;
  [key: string]: unknown;
}

export interface OciNamespace {
  type: string;
  path?: string;
}

export interface OciLinux {
  namespaces?: OciNamespace[];
  cgroupsPath?: string;
  mountLabel?: string;
  [key: string]: unknown;
}

export interface OciSpec {
  root?: OciRoot;
  mounts?: OciMount[];
  process?: OciProcess;
  linux?: OciLinux;
  [key: string]: unknown;
}
