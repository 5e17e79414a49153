import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import type { IRuntimeClass } from "kubernetes-models/node.k8s.io/v1/RuntimeClass";
import type { IClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole";
import type { IClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding";
import type { IServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { stringify } from "yaml";
import { imageName, packageVersion } from "../node-installer/image-name.ts";
import { ENV, INSTALLER_PATH, NODE_LABEL, NODE_PATH } from "../node-installer/paths.ts";

// The Kubernetes objects that deploy kuasar-vmm, as typed objects; kuasar-vmm.yaml is generated from them
// (node --import tsx installers/kubernetes/generate.ts) and a test keeps it fresh and checks it against the API schema.

const NAME = "kuasar-vmm-node-installer";
const NAMESPACE = "kube-system";
const LABELS = { "app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "kuasar-vmm" };

export type Manifest = IServiceAccount | IClusterRole | IClusterRoleBinding | IRuntimeClass | IDaemonSet;

export function manifests(version: string): Manifest[] {
  const serviceAccount: IServiceAccount = {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name: NAME, namespace: NAMESPACE, labels: LABELS },
  };
  // Least privilege: the installer reads its own node and patches one label on it; nothing else in the API.
  const role: IClusterRole = {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    metadata: { name: NAME, labels: LABELS },
    rules: [{ apiGroups: [""], resources: ["nodes"], verbs: ["get", "patch"] }],
  };
  const binding: IClusterRoleBinding = {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding",
    metadata: { name: NAME, labels: LABELS },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: NAME },
    subjects: [{ kind: "ServiceAccount", name: NAME, namespace: NAMESPACE }],
  };
  const runtimeClass: IRuntimeClass = {
    apiVersion: "node.k8s.io/v1",
    kind: "RuntimeClass",
    metadata: { name: "kuasar-vmm", labels: { "app.kubernetes.io/part-of": "kuasar-vmm" } },
    // The CRI runtime name the installer merges into containerd's config.
    handler: "kuasar-vmm",
    // What the VM costs beside the containers: bench/results/density.json measured 278.5 MiB PSS per idle
    // 512 MiB guest (QEMU + vhost-device-vsock, TCG); the CPU figure is an estimate for the VMM's own threads.
    overhead: { podFixed: { memory: "280Mi", cpu: "250m" } },
    // Only nodes where the installer has finished carry the label.
    scheduling: { nodeSelector: { [NODE_LABEL]: "true" } },
  };
  const env = (name: string, value: string) => ({ name, value });
  const daemonSet: IDaemonSet = {
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name: NAME, namespace: NAMESPACE, labels: LABELS },
    spec: {
      selector: { matchLabels: { "app.kubernetes.io/name": NAME } },
      updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels: LABELS },
        spec: {
          serviceAccountName: NAME,
          // nsenter --target=1 reaches the host's systemd only when PID 1 is the host's.
          hostPID: true,
          nodeSelector: { "kubernetes.io/os": "linux" },
          containers: [
            {
              name: "installer",
              image: imageName(version),
              // The image is imported on each node (ctr -n k8s.io images import), not pulled.
              imagePullPolicy: "IfNotPresent",
              env: [
                { name: ENV.nodeName, valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
                // kubectl set env ... KUASAR_INSTALLER_MODE=uninstall turns every pod into an uninstaller.
                env(ENV.mode, "install"),
                env(ENV.stay, "true"),
                env(ENV.hostRoot, "/host"),
                env(ENV.hypervisor, "qemu"),
                env(ENV.containerdConfig, "/etc/containerd/config.toml"),
                env(ENV.containerdService, "containerd.service"),
              ],
              // Writes under the host's /, enters PID 1's mount namespace to run systemctl.
              securityContext: { privileged: true },
              readinessProbe: { exec: { command: [NODE_PATH, INSTALLER_PATH, "ready"] }, periodSeconds: 10 },
              resources: { requests: { cpu: "10m", memory: "64Mi" } },
              terminationMessagePolicy: "FallbackToLogsOnError",
              volumeMounts: [{ name: "host-root", mountPath: "/host" }],
            },
          ],
          volumes: [{ name: "host-root", hostPath: { path: "/", type: "Directory" } }],
        },
      },
    },
  };
  return [serviceAccount, role, binding, runtimeClass, daemonSet];
}

export const GENERATED_FILE = "installers/kubernetes/kuasar-vmm.yaml";

/** The multi-document YAML committed as kuasar-vmm.yaml. */
export function render(version: string): string {
  const header =
    "# Generated from installers/kubernetes/manifests.ts; do not edit.\n" +
    "# Regenerate with: node --import tsx installers/kubernetes/generate.ts\n";
  return (
    header +
    manifests(version)
      .map((m) => `---\n${stringify(m, { lineWidth: 0, aliasDuplicateObjects: false })}`)
      .join("")
  );
}

/** Writes kuasar-vmm.yaml for the image tag the repo's package.json names; false when it was already current. */
export async function writeGenerated(repo: string): Promise<boolean> {
  const file = path.join(repo, GENERATED_FILE);
  const text = render(await packageVersion(repo));
  if ((await readFile(file, "utf8").catch(() => "")) === text) return false;
  await writeFile(file, text);
  return true;
}
