import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  TaskExecStartedSchema,
  TaskExitSchema,
  TaskOOMSchema,
  TaskStartSchema,
} from "../protos/gen/containerd/events/task_pb.ts";
import type { ContainerManager } from "./containers.ts";
import type { EventQueue } from "./event-queue.ts";

/** The namespace CRI runs pods in; the host re-labels events of containers it created in another one. */
const NAMESPACE = "k8s.io";

function envelope<D extends DescMessage>(topic: string, schema: D, msg: MessageInitShape<D>) {
  return {
    $typeName: "containerd.services.events.ttrpc.v1.Envelope" as const,
    timestamp: timestampFromDate(new Date()),
    namespace: NAMESPACE,
    topic,
    event: {
      $typeName: "google.protobuf.Any" as const,
      typeUrl: schema.typeName,
      value: toBinary(schema, create(schema, msg)),
    },
  };
}

/**
 * Queues the task events only the guest sees first — start, exit, OOM kill — for the host to drain with
 * GetEvents. Queued in the guest, an exit that happens while the host daemon restarts still reaches containerd.
 */
export function queueTaskEvents(manager: ContainerManager, queue: EventQueue): void {
  manager.on("start", (ev) =>
    queue.push(
      ev.execId
        ? envelope("/tasks/exec-started", TaskExecStartedSchema, {
            containerId: ev.containerId,
            execId: ev.execId,
            pid: ev.pid,
          })
        : envelope("/tasks/start", TaskStartSchema, { containerId: ev.containerId, pid: ev.pid }),
    ),
  );
  manager.on("exit", (ev) =>
    queue.push(
      envelope("/tasks/exit", TaskExitSchema, {
        containerId: ev.containerId,
        id: ev.execId || ev.containerId,
        pid: ev.pid,
        exitStatus: ev.exitStatus,
        exitedAt: timestampFromDate(ev.exitedAt),
      }),
    ),
  );
  manager.on("oom", (ev) => queue.push(envelope("/tasks/oom", TaskOOMSchema, { containerId: ev.containerId })));
}
