import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { DaemonSet, type IDaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { RuntimeClass } from "kubernetes-models/node.k8s.io/v1/RuntimeClass";
import { ClusterRole, type IClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole";
import {
  ClusterRoleBinding,
  type IClusterRoleBinding,
} from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding";
import { type IServiceAccount, ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { parse as parseToml } from "smol-toml";
import { parseAllDocuments } from "yaml";
import { GENERATED_FILE, render } from "../../../installers/kubernetes/manifests.ts";
import { imageName, packageVersion } from "../../../installers/node-installer/image-name.ts";
import { ENV, INSTALLER_PATH, NODE_LABEL } from "../../../installers/node-installer/paths.ts";

const version = await packageVersion(".");
const committed = await readFile(GENERATED_FILE, "utf8");
const docs = parseAllDocuments(committed).map((d) => {
  assert.deepEqual(d.errors, [], "the committed YAML parses");
  return d.toJS() as { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } };
});
const byKind = <T>(kind: string) => docs.find((d) => d.kind === kind) as T;

/** Each kind's model: its validate() checks the object against the Kubernetes OpenAPI schema. */
const MODELS: Record<string, (o: never) => { validate(): void }> = {
  "v1/ServiceAccount": (o) => new ServiceAccount(o),
  "rbac.authorization.k8s.io/v1/ClusterRole": (o) => new ClusterRole(o),
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": (o) => new ClusterRoleBinding(o),
  "node.k8s.io/v1/RuntimeClass": (o) => new RuntimeClass(o),
  "apps/v1/DaemonSet": (o) => new DaemonSet(o),
};

test(`${GENERATED_FILE} is what manifests.ts generates`, () => {
  assert.ok(
    committed === render(version),
    `${GENERATED_FILE} is stale: run 'node --import tsx installers/kubernetes/generate.ts' and commit the result`,
  );
});

test("every object validates against the Kubernetes API schema", () => {
  assert.deepEqual(
    docs.map((d) => `${d.apiVersion}/${d.kind}`),
    Object.keys(MODELS),
  );
  for (const d of docs) {
    const model = MODELS[`${d.apiVersion}/${d.kind}`]!;
    assert.doesNotThrow(() => model(d as never).validate(), `${d.kind} ${d.metadata.name}`);
  }
  // The check is real: a wrong type or an unknown enum value is refused.
  const ds = structuredClone(byKind<IDaemonSet>("DaemonSet"));
  (ds.spec!.template.spec!.containers[0] as { imagePullPolicy: string }).imagePullPolicy = "Sometimes";
  assert.throws(() => new DaemonSet(ds).validate(), /imagePullPolicy must be equal to one of the allowed values/);
  const rc = structuredClone(byKind<{ handler: unknown }>("RuntimeClass"));
  rc.handler = 3;
  assert.throws(() => new RuntimeClass(rc as never).validate(), /handler must be string/);
});

test("the RuntimeClass names the runtime the installer merges into containerd, and schedules onto labelled nodes", async () => {
  const dropIn = parseToml(await readFile("installers/containerd/kuasar-vmm.toml", "utf8")) as {
    plugins: Record<string, { containerd: { runtimes: Record<string, unknown> } }>;
  };
  const runtimes = Object.keys(dropIn.plugins["io.containerd.cri.v1.runtime"]!.containerd.runtimes);
  const rc = byKind<{ handler: string; overhead: unknown; scheduling: unknown }>("RuntimeClass");
  assert.deepEqual(runtimes, [rc.handler]);
  assert.deepEqual(rc.scheduling, { nodeSelector: { [NODE_LABEL]: "true" } });
  assert.deepEqual(rc.overhead, { podFixed: { memory: "280Mi", cpu: "250m" } });
});

test("RBAC is least privilege: get and patch on nodes, bound to the DaemonSet's service account only", () => {
  const sa = byKind<IServiceAccount>("ServiceAccount");
  const role = byKind<IClusterRole>("ClusterRole");
  const binding = byKind<IClusterRoleBinding>("ClusterRoleBinding");
  const ds = byKind<IDaemonSet>("DaemonSet");
  assert.deepEqual(role.rules, [{ apiGroups: [""], resources: ["nodes"], verbs: ["get", "patch"] }]);
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name: role.metadata!.name,
  });
  assert.deepEqual(binding.subjects, [
    { kind: "ServiceAccount", name: sa.metadata!.name, namespace: sa.metadata!.namespace },
  ]);
  assert.equal(ds.spec!.template.spec!.serviceAccountName, sa.metadata!.name);
  assert.equal(ds.metadata!.namespace, sa.metadata!.namespace);
});

test("the DaemonSet runs this version's image on the host's root, PID namespace and node name", () => {
  const ds = byKind<IDaemonSet>("DaemonSet");
  const pod = ds.spec!.template.spec!;
  const c = pod.containers[0]!;
  assert.equal(c.image, imageName(version));
  assert.equal(pod.hostPID, true);
  const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.deepEqual(env[ENV.nodeName], { fieldRef: { fieldPath: "spec.nodeName" } });
  assert.equal(env[ENV.mode], "install");
  assert.equal(env[ENV.stay], "true");
  const mount = c.volumeMounts!.find((m) => m.mountPath === env[ENV.hostRoot]);
  assert.ok(mount, "the host root is mounted where the installer looks");
  assert.deepEqual(pod.volumes!.find((v) => v.name === mount.name)?.hostPath, { path: "/", type: "Directory" });
  assert.deepEqual(c.readinessProbe!.exec!.command!.slice(1), [INSTALLER_PATH, "ready"]);
  assert.deepEqual(ds.spec!.selector.matchLabels, { "app.kubernetes.io/name": "kuasar-vmm-node-installer" });
  for (const [k, v] of Object.entries(ds.spec!.selector.matchLabels!)) {
    assert.equal(ds.spec!.template.metadata!.labels![k], v, "the selector matches the pod template");
  }
});
