import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import pkg from "../../package.json" with { type: "json" };
import { readTaskLink } from "../contract/task-link.ts";
import { type DeleteResponse, DeleteResponseSchema, Task } from "../protos/gen/containerd/runtime/task/v3/shim_pb.ts";
import { dial } from "../transport/address.ts";
import { Code, TtrpcClient, TtrpcError } from "../ttrpc/index.ts";

// The bundler inlines package.json, so a shipped binary reports the version it was built from.
const VERSION = pkg.version;
const DELETE_TIMEOUT_MS = 10_000;
/** What runc's shim reports for a task whose process is gone without a status: killed (128 + SIGKILL). */
const KILLED = 137;

const USAGE = `usage: containerd-shim-kuasar-vmm-v1 -namespace NS -address SOCK -id ID -bundle DIR [-debug] delete
containerd runs this binary only to clean up a container task after it restarted; the tasks themselves are served
by vmm-sandboxer through containerd's sandbox API (runtime_type io.containerd.kuasar-vmm.v1 with sandboxer "vmm").`;

/**
 * containerd-shim-kuasar-vmm-v1: containerd resolves a shim binary from runtime_type on restart and drops tasks
 * whose binary is missing; for a task whose API does not answer it runs `<shim> ... delete` and reads a
 * DeleteResponse from stdout. The delete goes to the sandbox's task API (the daemon), which stops and removes the
 * container in the guest; a task the daemon no longer knows is reported killed, as runc's shim does.
 */
async function main(argv: string[]): Promise<number> {
  // containerd passes Go-style single-dash flags.
  const args = argv.map((a) => (/^-[a-z][a-z-]+(=|$)/.test(a) ? `-${a}` : a));
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: false,
    options: {
      namespace: { type: "string" },
      address: { type: "string" },
      "publish-binary": { type: "string" },
      id: { type: "string" },
      bundle: { type: "string" },
      debug: { type: "boolean" },
      version: { type: "boolean", short: "v" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.version) {
    process.stdout.write(`containerd-shim-kuasar-vmm-v1 ${VERSION} (kuasar-vmm)\n`);
    return 0;
  }
  const action = positionals[0];
  if (values.help || action !== "delete") {
    process.stderr.write(`${action && !values.help ? `unsupported action '${action}'\n` : ""}${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const id = typeof values.id === "string" ? values.id : "";
  const bundle = typeof values.bundle === "string" ? values.bundle : "";
  if (!id || !bundle) {
    process.stderr.write(`delete needs -id and -bundle\n${USAGE}\n`);
    return 2;
  }
  const response = await deleteTask(id, bundle);
  process.stdout.write(toBinary(DeleteResponseSchema, response));
  return 0;
}

async function deleteTask(id: string, bundle: string): Promise<DeleteResponse> {
  const killed = create(DeleteResponseSchema, { pid: 0, exitStatus: KILLED, exitedAt: timestampNow() });
  const link = await readTaskLink(bundle);
  if (!link) {
    process.stderr.write(`${bundle} has no task link: container ${id} is not served by vmm-sandboxer any more\n`);
    return killed;
  }
  let client: TtrpcClient | undefined;
  try {
    client = new TtrpcClient(await dial(link.taskAddress, { timeoutMs: 3000 }));
    const task = client.service(Task);
    // A running task is killed first: Delete refuses a live process.
    await task.kill({ id, execId: "", signal: 9, all: true }, { timeoutMs: DELETE_TIMEOUT_MS }).catch(() => undefined);
    await task.wait({ id, execId: "" }, { timeoutMs: DELETE_TIMEOUT_MS }).catch(() => undefined);
    return await task.delete({ id, execId: "" }, { timeoutMs: DELETE_TIMEOUT_MS });
  } catch (err) {
    const why = err instanceof TtrpcError && err.code === Code.NotFound ? "it is gone" : (err as Error).message;
    process.stderr.write(`delete ${id} through ${link.taskAddress} (sandbox ${link.sandboxId}): ${why}\n`);
    return killed;
  } finally {
    client?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`containerd-shim-kuasar-vmm-v1: ${err.message}\n`);
    process.exit(1);
  },
);
