// Where things are in the node-installer image, and the names the DaemonSet and the installer share.

/** The artifacts install-vmm lays out, under their bin/ names. */
export const ARTIFACTS_DIR = "/opt/kuasar-vmm/bin";
/** The bundled installer (CommonJS, run by the image's node). */
export const INSTALLER_PATH = "/opt/kuasar-vmm/installer.cjs";
export const NODE_PATH = "/usr/bin/node";
/** Written once the mode's work is done (with --stay); the readiness probe checks it. */
export const READY_FILE = "/tmp/kuasar-vmm-node-installer.ready";
/** The node label the installer sets (and only it removes); the RuntimeClass schedules onto it. */
export const NODE_LABEL = "kuasar.io/kuasar-vmm";

export const ENV = {
  mode: "KUASAR_INSTALLER_MODE",
  hostRoot: "KUASAR_HOST_ROOT",
  hypervisor: "KUASAR_HYPERVISOR",
  containerdConfig: "KUASAR_CONTAINERD_CONFIG",
  containerdService: "KUASAR_CONTAINERD_SERVICE",
  stay: "KUASAR_INSTALLER_STAY",
  nodeName: "NODE_NAME",
} as const;
