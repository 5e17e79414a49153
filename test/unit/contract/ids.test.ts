import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { ContainerManager } from "../../../runtime/agent/containers.ts";
import { TaskError } from "../../../runtime/agent/errors.ts";
import { MAX_ID_LENGTH, validateId } from "../../../runtime/contract/ids.ts";

// containerd's identifier rule (pkg/identifiers): alphanumeric runs joined by single . _ -, at most 76 characters.
const IDS: Array<[string, boolean]> = [
  ["a", true],
  ["0", true],
  ["web-0", true],
  ["a.b-c_d", true],
  ["1.2.3", true],
  ["Pod.Sandbox_2", true],
  ["f".repeat(64), true],
  ["x".repeat(MAX_ID_LENGTH), true],
  ["", false],
  ["a__b", false],
  ["a..b", false],
  ["a.-b", false],
  ["-a", false],
  ["a-", false],
  [".hidden", false],
  ["a.", false],
  ["_a", false],
  ["a/b", false],
  ["../etc", false],
  ["a b", false],
  ["a\nb", false],
  ["nul\0", false],
  ["é", false],
  ["x".repeat(MAX_ID_LENGTH + 1), false],
  // The host took up to 128 characters before; containerd itself refuses them.
  ["x".repeat(128), false],
];

const dir = await mkdtemp(path.join(os.tmpdir(), "contract-ids-"));
after(() => rm(dir, { recursive: true, force: true }));

/** The guest's verdict: whether ContainerManager.create gets past the id to the bundle. */
const REACHED_BUNDLE = new Error("the id was accepted");
const guest = new ContainerManager({
  runc: {} as never,
  exits: { mark: () => 0, waitExit: () => new Promise(() => undefined) },
  stateDir: dir,
  lsm: { apparmor: false, selinux: false },
  prepareBundle: () => Promise.reject(REACHED_BUNDLE),
});
async function guestAccepts(id: string): Promise<boolean> {
  try {
    await guest.create(id, "/nonexistent/bundle");
  } catch (e) {
    if (e === REACHED_BUNDLE) return true;
    assert.ok(e instanceof TaskError && e.code === "InvalidArgument", `${JSON.stringify(id)}: ${e}`);
    assert.equal(e.message, validateId("container", id), "the guest says what the host says");
    return false;
  }
  assert.fail("create cannot succeed without a bundle");
}

test("the host and the guest give every id the same verdict, containerd's", async () => {
  for (const [id, valid] of IDS) {
    for (const kind of ["sandbox", "container", "exec"] as const) {
      assert.equal(validateId(kind, id) === undefined, valid, `host, ${kind} id ${JSON.stringify(id)}`);
    }
    assert.equal(await guestAccepts(id), valid, `guest, container id ${JSON.stringify(id)}`);
  }
});

test("a refusal names the kind and what is allowed, and never echoes a long id in full", () => {
  assert.equal(validateId("exec", ""), "exec id is empty");
  assert.match(validateId("container", "a__b")!, /^container id "a__b" is invalid: use letters, digits and single/);
  const long = validateId("sandbox", `${"y".repeat(64 * 1024)}`)!;
  assert.match(long, /^sandbox id "y{76}…" is too long \(65536 characters\): containerd allows at most 76$/);
  const hostile = validateId("exec", "a\n[INFO] forged\x1b[2J")!;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  assert.ok(!/[\x00-\x1f]/.test(hostile), hostile);
});
