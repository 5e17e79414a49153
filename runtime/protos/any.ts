// google.protobuf.Any helpers for the type URLs containerd and Kuasar use:
// bare message names ("runtime.v1.PodSandboxConfig", "containerd.events.TaskExit"),
// the "type.googleapis.com/<name>" form, and Anys whose value is JSON (OCI specs
// from containerd's typeurl registry, Kuasar's SetupSandbox "PodSandboxConfig").

import {
  create,
  createRegistry,
  type DescMessage,
  fromBinary,
  fromJsonString,
  type Message,
  type MessageInitShape,
  type MessageShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import {
  type Any,
  AnySchema,
  file_google_protobuf_any,
  file_google_protobuf_empty,
  file_google_protobuf_timestamp,
} from "@bufbuild/protobuf/wkt";
import { file_containerd_events_task } from "./gen/containerd/events/task_pb.ts";
import { file_containerd_runc_options_oci } from "./gen/containerd/runc/options/oci_pb.ts";
import { file_containerd_runtime_task_v2_shim } from "./gen/containerd/runtime/task/v2/shim_pb.ts";
import { file_containerd_runtime_task_v3_shim } from "./gen/containerd/runtime/task/v3/shim_pb.ts";
import { file_containerd_services_events_ttrpc_v1_events } from "./gen/containerd/services/events/ttrpc/v1/events_pb.ts";
import { file_containerd_services_sandbox_v1_sandbox } from "./gen/containerd/services/sandbox/v1/sandbox_pb.ts";
import { file_containerd_services_streaming_v1_streaming } from "./gen/containerd/services/streaming/v1/streaming_pb.ts";
import { file_containerd_types_event } from "./gen/containerd/types/event_pb.ts";
import { file_containerd_types_metrics } from "./gen/containerd/types/metrics_pb.ts";
import { file_containerd_types_mount } from "./gen/containerd/types/mount_pb.ts";
import { file_containerd_types_platform } from "./gen/containerd/types/platform_pb.ts";
import { file_containerd_types_sandbox } from "./gen/containerd/types/sandbox_pb.ts";
import { file_containerd_types_task_task } from "./gen/containerd/types/task/task_pb.ts";
import { file_containerd_types_transfer_streaming } from "./gen/containerd/types/transfer/streaming_pb.ts";
import { file_google_rpc_status } from "./gen/google/rpc/status_pb.ts";
import {
  file_k8s_cri_runtime_v1_api,
  type PodSandboxConfig,
  PodSandboxConfigSchema,
} from "./gen/k8s/cri/runtime/v1/api_pb.ts";
import { file_kuasar_sandbox } from "./gen/kuasar/sandbox_pb.ts";
import { file_ttrpc_request } from "./gen/ttrpc/request_pb.ts";

/** Type URLs whose Any value is JSON, not protobuf. */
export const JsonTypeUrl = {
  /** containerd Exec spec: an OCI runtime-spec Process. */
  ociProcess: "types.containerd.io/opencontainers/runtime-spec/1/Process",
  /** containerd task Update resources. */
  ociLinuxResources: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
  ociSpec: "types.containerd.io/opencontainers/runtime-spec/1/Spec",
  /** Kuasar's grpc.SandboxService/SetupSandbox config: a CRI PodSandboxConfig as JSON. */
  kuasarPodSandboxConfig: "PodSandboxConfig",
} as const;

const GOOGLE_PREFIX = "type.googleapis.com/";
/** Prefix of the JSON types containerd's typeurl package registers. */
const CONTAINERD_JSON_PREFIX = "types.containerd.io/";

/** Every message this project's protos define, plus the well-known types they use. */
export const protoRegistry = createRegistry(
  file_google_protobuf_any,
  file_google_protobuf_empty,
  file_google_protobuf_timestamp,
  file_google_rpc_status,
  file_containerd_types_mount,
  file_containerd_types_platform,
  file_containerd_types_sandbox,
  file_containerd_types_metrics,
  file_containerd_types_event,
  file_containerd_types_transfer_streaming,
  file_containerd_types_task_task,
  file_containerd_services_sandbox_v1_sandbox,
  file_containerd_runtime_task_v2_shim,
  file_containerd_runtime_task_v3_shim,
  file_containerd_events_task,
  file_containerd_services_events_ttrpc_v1_events,
  file_containerd_services_streaming_v1_streaming,
  file_containerd_runc_options_oci,
  file_kuasar_sandbox,
  file_k8s_cri_runtime_v1_api,
  file_ttrpc_request,
);

/** The message name a type URL designates: the part after the last "/" (bare URLs are the name). */
export function typeNameOf(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
}

/** Whether the Any carries JSON (containerd typeurl JSON types, Kuasar's PodSandboxConfig). */
export function isJsonAny(any: Any): boolean {
  return any.typeUrl.startsWith(CONTAINERD_JSON_PREFIX) || any.typeUrl === JsonTypeUrl.kuasarPodSandboxConfig;
}

/**
 * Packs a message. containerd writes bare names ("containerd.events.TaskExit")
 * and that is the default; `googlePrefix` gives "type.googleapis.com/<name>".
 */
export function packAny<D extends DescMessage>(
  schema: D,
  message: MessageInitShape<D>,
  options: { googlePrefix?: boolean } = {},
): Any {
  return create(AnySchema, {
    typeUrl: options.googlePrefix ? GOOGLE_PREFIX + schema.typeName : schema.typeName,
    value: toBinary(schema, create(schema, message)),
  });
}

/**
 * Unpacks a protobuf Any of any type the project knows (bare or prefixed URL).
 * Kuasar's JSON "PodSandboxConfig" comes back as a runtime.v1.PodSandboxConfig.
 */
export function unpackAny(any: Any): Message {
  if (any.typeUrl === JsonTypeUrl.kuasarPodSandboxConfig) return unpackPodSandboxConfigJson(any);
  if (isJsonAny(any)) {
    throw new TypeError(`Any type URL "${any.typeUrl}" carries JSON, not protobuf: use unpackJsonAny`);
  }
  const name = typeNameOf(any.typeUrl);
  const schema = protoRegistry.getMessage(name);
  if (!schema) {
    throw new TypeError(
      `unknown Any type URL "${any.typeUrl}": no message ${name || "(empty name)"} in runtime/protos (add its .proto there and to protoRegistry in runtime/protos/any.ts)`,
    );
  }
  return decode(schema, any);
}

/** Unpacks an Any that must hold `schema`'s type; a PodSandboxConfig may also be Kuasar's JSON form. */
export function unpackAnyAs<D extends DescMessage>(any: Any, schema: D): MessageShape<D> {
  if (any.typeUrl === JsonTypeUrl.kuasarPodSandboxConfig && schema.typeName === PodSandboxConfigSchema.typeName) {
    return unpackPodSandboxConfigJson(any) as unknown as MessageShape<D>;
  }
  const name = typeNameOf(any.typeUrl);
  if (name !== schema.typeName) {
    throw new TypeError(`Any type URL "${any.typeUrl}" does not hold ${schema.typeName}`);
  }
  return decode(schema, any);
}

/** An Any whose value is `value` as JSON, e.g. an OCI Process for Task/Exec. */
export function packJsonAny(typeUrl: string, value: unknown): Any {
  return create(AnySchema, { typeUrl, value: Buffer.from(JSON.stringify(value)) });
}

/** Parses a JSON-valued Any; with `typeUrl`, the Any must carry exactly that type. */
export function unpackJsonAny<T = unknown>(any: Any, typeUrl?: string): T {
  if (typeUrl !== undefined && any.typeUrl !== typeUrl) {
    throw new TypeError(`Any type URL "${any.typeUrl}" is not the expected "${typeUrl}"`);
  }
  try {
    return JSON.parse(Buffer.from(any.value.buffer, any.value.byteOffset, any.value.byteLength).toString("utf8")) as T;
  } catch (err) {
    throw new TypeError(`Any type URL "${any.typeUrl}": value is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * Kuasar's SetupSandbox config: type URL "PodSandboxConfig", JSON value with
 * the proto field names (as Kuasar's serde output has them).
 */
export function packPodSandboxConfigJson(config: MessageInitShape<typeof PodSandboxConfigSchema>): Any {
  const json = toJsonString(PodSandboxConfigSchema, create(PodSandboxConfigSchema, config), {
    useProtoFieldName: true,
  });
  return create(AnySchema, { typeUrl: JsonTypeUrl.kuasarPodSandboxConfig, value: Buffer.from(json) });
}

function unpackPodSandboxConfigJson(any: Any): PodSandboxConfig {
  const text = Buffer.from(any.value.buffer, any.value.byteOffset, any.value.byteLength).toString("utf8");
  try {
    // Kuasar (serde) writes integers as numbers and absent messages as null; both parse
    return fromJsonString(PodSandboxConfigSchema, text, { ignoreUnknownFields: true });
  } catch (err) {
    throw new TypeError(`Any type URL "${any.typeUrl}": not a JSON PodSandboxConfig: ${(err as Error).message}`);
  }
}

function decode<D extends DescMessage>(schema: D, any: Any): MessageShape<D> {
  try {
    return fromBinary(schema, any.value);
  } catch (err) {
    throw new TypeError(`Any type URL "${any.typeUrl}": cannot decode ${schema.typeName}: ${(err as Error).message}`);
  }
}
