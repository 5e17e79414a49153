import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { nativeArtifacts } from "./artifacts.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const agent = path.join(repo, "test/unit/native/fixtures/agent.ts");
let init: string;

before(async () => {
  init = (await nativeArtifacts()).init;
});

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

// A hung child is killed so the test fails with its output instead of hanging the run.
function start(argv: string[], file = init, deadlineMs = 120_000): { child: ChildProcess; done: Promise<Outcome> } {
  const child = spawn(file, argv, { cwd: repo, stdio: ["ignore", "pipe", "pipe"] });
  const timer = setTimeout(() => child.kill("SIGKILL"), deadlineMs);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const done = once(child, "close").then(([code, signal]) => {
    clearTimeout(timer);
    return { code, signal, stdout, stderr } as Outcome;
  });
  return { child, done };
}

function runAgent(...args: string[]): Promise<Outcome> {
  return start(["--", process.execPath, "--import", "tsx", agent, ...args]).done;
}

describe("init (host mode: child subreaper)", () => {
  test("1000 orphaned processes: every exit status reaches the agent through fd 3 and no zombie remains", async () => {
    const out = await runAgent("orphans", "1000");
    assert.equal(out.code, 0, out.stderr);
    const result = JSON.parse(out.stdout.trim()) as {
      collected: number;
      mismatches: string[];
      zombies: unknown[];
      unclaimed: number;
    };
    assert.deepEqual(result.mismatches, []);
    assert.equal(result.collected, 1000);
    assert.deepEqual(result.zombies, []);
    assert.equal(result.unclaimed, 0);
  });

  test("forwards SIGTERM to the agent and exits with the agent's status", async () => {
    const { child, done } = start(["--", process.execPath, "--import", "tsx", agent, "signal"]);
    await new Promise<void>((resolve) => {
      child.stdout?.on("data", (c: Buffer) => {
        if (c.toString().includes("ready")) resolve();
      });
    });
    child.kill("SIGTERM");
    const out = await done;
    assert.equal(out.stdout, "ready\ngot SIGTERM\n");
    assert.equal(out.code, 42);
  });

  test("an agent killed by a signal makes init die of the same signal", async () => {
    const out = await runAgent("kill", "SIGKILL");
    assert.equal(out.signal, "SIGKILL");
  });

  test("exit codes propagate", async () => {
    assert.equal((await runAgent("exit", "7")).code, 7);
    assert.equal((await runAgent("exit", "0")).code, 0);
  });

  test("the agent gets the report pipe; a plain process is told clearly that there is no init", async () => {
    assert.equal((await runAgent("monitor")).stdout, "ok\n");
    const direct = execFileSync(process.execPath, ["--import", "tsx", agent, "monitor"], {
      cwd: repo,
      encoding: "utf8",
      env: { ...process.env, KUASAR_INIT_EXIT_FD: undefined },
    });
    assert.match(direct, /KUASAR_INIT_EXIT_FD is not set.*run the agent under runtime\/native\/init/);
  });

  test("a command that cannot be executed exits 127 with its name; no command is a usage error", async () => {
    const missing = await start(["--", "/nonexistent/agent"]).done;
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /cannot execute \/nonexistent\/agent: No such file or directory/);
    const usage = await start([]).done;
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /usage: .* -- <command>/);
  });
});

describe("init as PID 1 (in a new PID namespace)", () => {
  test("reports how the agent ended, then powers off (in a child namespace: init is killed with SIGINT)", async () => {
    const out = await start(
      [
        "--pid",
        "--fork",
        "--mount",
        "--mount-proc",
        init,
        "--",
        process.execPath,
        "--import",
        "tsx",
        agent,
        "exit",
        "3",
      ],
      "unshare",
    ).done;
    if (out.code !== null && /unshare failed|Operation not permitted/.test(out.stderr)) {
      assert.fail(`this test needs root and util-linux's unshare (apt-get install -y util-linux): ${out.stderr}`);
    }
    assert.match(out.stderr, /init: vmm-task exited with status 3; powering off/);
    assert.equal(out.signal, "SIGINT", JSON.stringify(out));
  });
});
