// Wire facts of the project's protos (service paths, field numbers) and the
// Any helpers.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  isJsonAny,
  JsonTypeUrl,
  packAny,
  packJsonAny,
  packPodSandboxConfigJson,
  protoRegistry,
  typeNameOf,
  unpackAny,
  unpackAnyAs,
  unpackJsonAny,
} from "../../../runtime/protos/any.ts";
import { TaskExitSchema } from "../../../runtime/protos/gen/containerd/events/task_pb.ts";
import { OptionsSchema } from "../../../runtime/protos/gen/containerd/runc/options/oci_pb.ts";
import {
  file_containerd_runtime_task_v2_shim,
  Task as TaskV2,
} from "../../../runtime/protos/gen/containerd/runtime/task/v2/shim_pb.ts";
import {
  file_containerd_runtime_task_v3_shim,
  Task as TaskV3,
} from "../../../runtime/protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { Events } from "../../../runtime/protos/gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import {
  Controller,
  ControllerStartResponseSchema,
} from "../../../runtime/protos/gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { Streaming } from "../../../runtime/protos/gen/containerd/services/streaming/v1/streaming_pb.ts";
import { Status } from "../../../runtime/protos/gen/containerd/types/task/task_pb.ts";
import {
  ImageService,
  NamespaceMode,
  PodSandboxConfigSchema,
  RuntimeService,
} from "../../../runtime/protos/gen/k8s/cri/runtime/v1/api_pb.ts";
import { SandboxService, SyncClockPacketSchema } from "../../../runtime/protos/gen/kuasar/sandbox_pb.ts";

/** "name=number" for every field of a message, in declaration order. */
const fields = (m: DescMessage) => m.fields.map((f) => `${f.name}=${f.number}`);
const message = (name: string) => {
  const m = protoRegistry.getMessage(name);
  assert.ok(m, `message ${name} is defined`);
  return m;
};

describe("service wire names", () => {
  it("match what containerd and Kuasar call", () => {
    assert.equal(Controller.typeName, "containerd.services.sandbox.v1.Controller");
    assert.deepEqual(
      Controller.methods.map((m) => m.name),
      ["Create", "Start", "Platform", "Stop", "Wait", "Status", "Shutdown", "Metrics", "Update"],
    );
    assert.equal(TaskV3.typeName, "containerd.task.v3.Task");
    assert.equal(TaskV2.typeName, "containerd.task.v2.Task");
    const taskMethods = [
      "State",
      "Create",
      "Start",
      "Delete",
      "Pids",
      "Pause",
      "Resume",
      "Checkpoint",
      "Kill",
      "Exec",
      "ResizePty",
      "CloseIO",
      "Update",
      "Wait",
      "Stats",
      "Connect",
      "Shutdown",
    ];
    assert.deepEqual(
      TaskV3.methods.map((m) => m.name),
      taskMethods,
    );
    assert.deepEqual(
      TaskV2.methods.map((m) => m.name),
      taskMethods,
    );
    assert.equal(Events.typeName, "containerd.services.events.ttrpc.v1.Events");
    assert.equal(Streaming.typeName, "containerd.services.streaming.v1.Streaming");
    assert.equal(Streaming.method.stream.methodKind, "bidi_streaming");
    assert.equal(SandboxService.typeName, "grpc.SandboxService");
    assert.deepEqual(
      SandboxService.methods.map((m) => m.name),
      [
        "UpdateInterfaces",
        "UpdateRoutes",
        "Check",
        "ExecVMProcess",
        "SyncClock",
        "GetEvents",
        "SetupSandbox",
        "OnlineCpuMem",
        "DrainSpans",
      ],
    );
    assert.equal(SandboxService.method.getEvents.output.typeName, "containerd.services.events.ttrpc.v1.Envelope");
    assert.equal(RuntimeService.typeName, "runtime.v1.RuntimeService");
    assert.equal(RuntimeService.methods.length, 15);
    assert.equal(RuntimeService.method.portForward.name, "PortForward");
    assert.deepEqual(
      ImageService.methods.map((m) => m.name),
      ["ListImages", "ImageStatus", "PullImage"],
    );
  });

  it("v2 and v3 task messages are identical but for the package", () => {
    const v2 = file_containerd_runtime_task_v2_shim.messages;
    const v3 = file_containerd_runtime_task_v3_shim.messages;
    assert.deepEqual(
      v2.map((m) => m.name),
      v3.map((m) => m.name),
    );
    for (const [i, m] of v3.entries()) {
      const other = v2[i]!;
      assert.deepEqual(
        other.fields.map((f) => [f.name, f.number, f.fieldKind, f.proto.typeName.replace(".v2.", ".v3.")]),
        m.fields.map((f) => [f.name, f.number, f.fieldKind, f.proto.typeName]),
        m.name,
      );
    }
  });
});

describe("field numbers", () => {
  it("sandbox controller", () => {
    assert.deepEqual(fields(message("containerd.services.sandbox.v1.ControllerCreateRequest")), [
      "sandbox_id=1",
      "rootfs=2",
      "options=3",
      "netns_path=4",
      "annotations=5",
      "sandbox=6",
      "sandboxer=10",
    ]);
    assert.deepEqual(fields(message("containerd.services.sandbox.v1.ControllerStartResponse")), [
      "sandbox_id=1",
      "pid=2",
      "created_at=3",
      "labels=4",
      "address=5",
      "version=6",
    ]);
    assert.deepEqual(fields(message("containerd.services.sandbox.v1.ControllerUpdateRequest")), [
      "sandbox_id=1",
      "sandboxer=2",
      "sandbox=3",
      "fields=4",
    ]);
    assert.deepEqual(fields(message("containerd.types.Sandbox")), [
      "sandbox_id=1",
      "runtime=2",
      "spec=3",
      "labels=4",
      "created_at=5",
      "updated_at=6",
      "extensions=7",
      "sandboxer=10",
    ]);
  });

  it("task API, events and runc options", () => {
    assert.deepEqual(fields(message("containerd.task.v3.StateResponse")), [
      "id=1",
      "bundle=2",
      "pid=3",
      "status=4",
      "stdin=5",
      "stdout=6",
      "stderr=7",
      "terminal=8",
      "exit_status=9",
      "exited_at=10",
      "exec_id=11",
    ]);
    assert.deepEqual(
      [Status.UNKNOWN, Status.CREATED, Status.RUNNING, Status.STOPPED, Status.PAUSED, Status.PAUSING],
      [0, 1, 2, 3, 4, 5],
    );
    assert.deepEqual(fields(message("containerd.events.TaskDelete")), [
      "container_id=1",
      "pid=2",
      "exit_status=3",
      "exited_at=4",
      "id=5",
    ]);
    const opts = fields(OptionsSchema);
    assert.ok(opts.includes("task_api_address=12") && opts.includes("task_api_version=13"));
    assert.deepEqual(
      fields(message("containerd.types.Envelope")),
      fields(message("containerd.services.events.ttrpc.v1.Envelope")),
    );
  });

  it("Kuasar and CRI", () => {
    assert.deepEqual(fields(SyncClockPacketSchema), [
      "ClientSendTime=1",
      "ClientArriveTime=2",
      "ServerSendTime=3",
      "ServerArriveTime=4",
      "Delta=5",
    ]);
    assert.deepEqual(fields(message("grpc.Interface")), [
      "device=1",
      "name=2",
      "IPAddresses=3",
      "mtu=4",
      "hwAddr=5",
      "type=6",
      "raw_flags=7",
    ]);
    assert.deepEqual(fields(PodSandboxConfigSchema), [
      "metadata=1",
      "hostname=2",
      "log_directory=3",
      "dns_config=4",
      "port_mappings=5",
      "labels=6",
      "annotations=7",
      "linux=8",
      "windows=9",
    ]);
    assert.deepEqual(fields(message("runtime.v1.LinuxSandboxSecurityContext")).sort(), [
      "apparmor=10",
      "namespace_options=1",
      "privileged=6",
      "readonly_rootfs=4",
      "run_as_group=8",
      "run_as_user=3",
      "seccomp=9",
      "seccomp_profile_path=7",
      "selinux_options=2",
      "supplemental_groups=5",
      "supplemental_groups_policy=11",
    ]);
  });

  it("encodes a Start response byte for byte as containerd expects", () => {
    const bytes = toBinary(
      ControllerStartResponseSchema,
      create(ControllerStartResponseSchema, { sandboxId: "p", pid: 7, address: "ttrpc+unix:///t", version: 3 }),
    );
    assert.equal(
      Buffer.from(bytes).toString("hex"),
      `0a0170 1007 2a0f${Buffer.from("ttrpc+unix:///t").toString("hex")} 3003`.replaceAll(" ", ""),
    );
  });
});

describe("Any helpers", () => {
  const exit = create(TaskExitSchema, { containerId: "c1", id: "c1", pid: 42, exitStatus: 137 });

  it("packs with containerd's bare type URL by default and unpacks both forms", () => {
    const bare = packAny(TaskExitSchema, exit);
    assert.equal(bare.typeUrl, "containerd.events.TaskExit");
    const prefixed = packAny(TaskExitSchema, exit, { googlePrefix: true });
    assert.equal(prefixed.typeUrl, "type.googleapis.com/containerd.events.TaskExit");
    for (const any of [bare, prefixed]) {
      const back = unpackAnyAs(any, TaskExitSchema);
      assert.equal(back.pid, 42);
      const generic = unpackAny(any);
      assert.equal(generic.$typeName, "containerd.events.TaskExit");
    }
    assert.equal(typeNameOf("type.googleapis.com/a.B"), "a.B");
    assert.equal(typeNameOf("runtime.v1.PodSandboxConfig"), "runtime.v1.PodSandboxConfig");
  });

  it("unpacks the CRI PodSandboxConfig option containerd sends to Create", () => {
    const config = create(PodSandboxConfigSchema, {
      metadata: { name: "pod", uid: "u", namespace: "default", attempt: 1 },
      hostname: "pod-host",
      dnsConfig: { servers: ["10.0.0.10"], searches: ["svc.cluster.local"] },
      linux: {
        cgroupParent: "/kubepods/pod-u",
        sysctls: { "net.ipv4.ip_forward": "1" },
        securityContext: { namespaceOptions: { network: NamespaceMode.NODE } },
      },
    });
    const any = create(AnySchema, {
      typeUrl: "runtime.v1.PodSandboxConfig",
      value: toBinary(PodSandboxConfigSchema, config),
    });
    const back = unpackAnyAs(any, PodSandboxConfigSchema);
    assert.equal(back.hostname, "pod-host");
    assert.equal(back.linux?.securityContext?.namespaceOptions?.network, NamespaceMode.NODE);
    assert.equal(back.linux?.sysctls["net.ipv4.ip_forward"], "1");
  });

  it("handles Kuasar's JSON PodSandboxConfig, including serde-style input", () => {
    const any = packPodSandboxConfigJson({ hostname: "h", logDirectory: "/var/log/pods/x", labels: { a: "b" } });
    assert.equal(any.typeUrl, JsonTypeUrl.kuasarPodSandboxConfig);
    assert.ok(isJsonAny(any));
    assert.match(Buffer.from(any.value).toString(), /"log_directory":"\/var\/log\/pods\/x"/);
    const back = unpackAnyAs(any, PodSandboxConfigSchema);
    assert.equal(back.logDirectory, "/var/log/pods/x");
    assert.equal(unpackAny(any).$typeName, "runtime.v1.PodSandboxConfig");

    // what Rust serde writes: snake_case names, numbers for int64 and enums, null for absent messages
    const serde = create(AnySchema, {
      typeUrl: "PodSandboxConfig",
      value: Buffer.from(
        JSON.stringify({
          metadata: { name: "n", uid: "u", namespace: "ns", attempt: 0 },
          hostname: "h2",
          log_directory: "",
          dns_config: null,
          port_mappings: [{ protocol: 1, container_port: 53, host_port: 0, host_ip: "" }],
          labels: {},
          annotations: {},
          linux: {
            cgroup_parent: "/k",
            security_context: null,
            sysctls: {},
            overhead: null,
            resources: { cpu_period: 100000 },
          },
          windows: null,
        }),
      ),
    });
    const parsed = unpackAnyAs(serde, PodSandboxConfigSchema);
    assert.equal(parsed.hostname, "h2");
    assert.equal(parsed.portMappings[0]?.containerPort, 53);
    assert.equal(parsed.linux?.resources?.cpuPeriod, 100000n);
  });

  it("carries JSON OCI specs", () => {
    const process = { args: ["sh", "-c", "true"], cwd: "/", terminal: false };
    const any = packJsonAny(JsonTypeUrl.ociProcess, process);
    assert.ok(isJsonAny(any));
    assert.deepEqual(unpackJsonAny(any, JsonTypeUrl.ociProcess), process);
    assert.throws(() => unpackJsonAny(any, JsonTypeUrl.ociLinuxResources), /is not the expected/);
    assert.throws(() => unpackAny(any), /carries JSON.*unpackJsonAny/);
  });

  it("names the type URL in errors", () => {
    const unknown = create(AnySchema, { typeUrl: "type.googleapis.com/no.such.Message", value: new Uint8Array() });
    assert.throws(() => unpackAny(unknown), /unknown Any type URL "type.googleapis.com\/no.such.Message"/);
    assert.throws(
      () => unpackAnyAs(packAny(TaskExitSchema, exit), PodSandboxConfigSchema),
      /"containerd.events.TaskExit" does not hold runtime.v1.PodSandboxConfig/,
    );
    const corrupt = create(AnySchema, { typeUrl: "containerd.events.TaskExit", value: new Uint8Array([0x0a, 0x05]) });
    assert.throws(() => unpackAny(corrupt), /"containerd.events.TaskExit": cannot decode/);
    const badJson = create(AnySchema, { typeUrl: JsonTypeUrl.ociProcess, value: Buffer.from("{nope") });
    assert.throws(() => unpackJsonAny(badJson), /not valid JSON/);
  });

  it("round-trips timestamps in events", () => {
    const when = new Date("2026-01-02T03:04:05.678Z");
    const any = packAny(TaskExitSchema, { ...exit, exitedAt: timestampFromDate(when) });
    const back = fromBinary(TaskExitSchema, any.value);
    assert.equal(back.exitedAt?.seconds, BigInt(Math.floor(when.getTime() / 1000)));
    assert.equal(back.exitedAt?.nanos, 678_000_000);
  });
});
