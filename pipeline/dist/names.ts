// What the release bundle is called and where things are inside it. install.sh (installers/dist/install.sh) names
// the same paths: bin/node and lib/install.cjs.

/** The artifacts install-vmm lays out, under their bin/ names, so the installer reads the bundle as it reads bin/. */
export const BIN_DIR = "bin";
export const INSTALL_SH = "install.sh";
/** install-vmm with its command line (installers/dist/cli.ts), run by bin/node. */
export const INSTALLER_CJS = "lib/install.cjs";
/** The Kubernetes node installer's program, which the node-installer image takes from the bundle. */
export const NODE_INSTALLER_CJS = "lib/node-installer.cjs";
/** installers/kubernetes/*.yaml: kubectl apply -f them after importing the node-installer image. */
export const KUBERNETES_DIR = "kubernetes";
/** `sha256sum -c` format: inside the bundle for every other file in it, beside it for the bundle and the SBOM. */
export const SUMS = "SHA256SUMS";

/** The machine names `uname -m` prints, for Node's process.arch. */
const UNAME_ARCH: Record<string, string> = { x64: "x86_64", arm64: "aarch64" };

export function unameArch(arch: string = process.arch): string {
  const a = UNAME_ARCH[arch];
  if (!a) throw new Error(`no release bundle architecture known for '${arch}' (supported: x64, arm64)`);
  return a;
}

export function bundleName(version: string, arch: string = unameArch()): string {
  return `kuasar-vmm-${version}-${arch}.tar.zst`;
}

export function sbomName(version: string): string {
  return `kuasar-vmm-${version}.cdx.json`;
}
