import { existsSync } from "node:fs";
import { copyFile, mkdir, rename, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { Listr, PRESET_TIMER, PRESET_TIMESTAMP } from "listr2";
import type { Cache } from "./cache.ts";
import { toolShell } from "./shell.ts";
import {
  type BuildContext,
  type BuildOptions,
  DigestMemo,
  type KeyContext,
  keyContext,
  type Stage,
  stageKey,
} from "./stage.ts";
import { StageError } from "./stage-error.ts";

export interface RunRequest {
  repo: string;
  stages: Stage[];
  /** Stage names to produce (their deps are resolved as needed). */
  targets: string[];
  options: BuildOptions;
  cache: Cache;
  /** Where published artifacts go (bin/ of the repo). */
  binDir: string;
  /** Where a stage with publishTo "dist" publishes (default: dist/ of the repo). */
  distDir?: string;
  /** Plain, timestamped progress lines (CI logs) even on a terminal; a non-terminal stdout always gets them. */
  plain?: boolean;
  /** Called as each stage finishes, so a caller knows what was done when a later stage fails. */
  onOutcome?: (outcome: StageOutcome) => void;
}

export interface PublishedFile {
  /** The name under bin/ or dist/ */
  name: string;
  file: string;
  size: number;
  sha256: string;
}

export interface StageOutcome {
  stage: string;
  key: string;
  dir: string;
  cached: boolean;
  seconds: number;
  published: PublishedFile[];
}

/** Orders the targets and their dependencies so every stage comes after what it reads. */
export function resolveOrder(stages: Map<string, Stage>, targets: string[]): Stage[] {
  const order: Stage[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string, from?: string) => {
    const st = stages.get(name);
    if (!st) {
      const known = [...stages.keys()].join(", ");
      throw new Error(`unknown stage '${name}'${from ? ` (a dependency of ${from})` : ""}; stages are: ${known}`);
    }
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") throw new Error(`stage dependency cycle through '${name}'`);
    state.set(name, "visiting");
    for (const d of st.deps) visit(d, name);
    state.set(name, "done");
    order.push(st);
  };
  for (const t of targets) visit(t);
  return order;
}

/**
 * Plans keys for every stage first (cheap: inputs are digests), then materialises only what is needed:
 * a target whose entry is cached never forces its dependencies to be built or verified.
 */
export async function runStages(req: RunRequest): Promise<StageOutcome[]> {
  const byName = new Map(req.stages.map((s) => [s.name, s]));
  const order = resolveOrder(byName, req.targets);
  await mkdir(req.cache.root, { recursive: true });
  const memo = new DigestMemo(path.join(req.cache.root, "input-digests.json"));
  await memo.load();
  const kctx: KeyContext = keyContext(req.repo, req.options, memo);

  const keys = new Map<string, string>();
  for (const st of order) {
    const depKeys = Object.fromEntries(st.deps.map((d) => [d, keys.get(d)!]));
    let inputs: Record<string, unknown>;
    try {
      // The stage's own code is an input too: changing how it builds must rebuild it.
      const code = path.join(req.repo, "pipeline", "stages", `${st.name}.ts`);
      inputs = { ...(await st.inputs(kctx)), stageCode: existsSync(code) ? await kctx.fileDigest(code) : null };
    } catch (err) {
      throw new StageError(st.name, (err as Error).message);
    }
    keys.set(st.name, stageKey(st, inputs, depKeys));
  }
  await memo.save();

  const dirs = new Map<string, string>();
  const outcomes: StageOutcome[] = [];
  // Which stages must be materialised: targets, plus deps of any stage that is not cached.
  const needed = new Set(req.targets);
  const lookups = new Map<string, Awaited<ReturnType<Cache["lookup"]>>>();
  for (const st of [...order].reverse()) {
    if (!needed.has(st.name)) continue;
    const found = await req.cache.lookup(st.name, keys.get(st.name)!);
    lookups.set(st.name, found);
    if (!found.hit) for (const d of st.deps) needed.add(d);
  }

  const renderer = process.stdout.isTTY && !req.options.verbose && !req.plain ? "default" : "simple";
  const showToolOutput = renderer === "default" || req.options.verbose;
  const distDir = req.distDir ?? path.join(req.repo, "dist");
  // Plain lines carry the time of day and each stage's duration, for CI logs.
  const plainLines = { timestamp: PRESET_TIMESTAMP, timer: PRESET_TIMER };
  const tasks = new Listr(
    order
      .filter((st) => needed.has(st.name))
      .map((st) => ({
        title: st.title,
        task: async (_: unknown, task: { title: string; output: string }) => {
          try {
            await runOne(st, task);
          } catch (err) {
            // Every failure names its stage, whatever threw it (a tool, the file system, the stage's own code).
            if (err instanceof StageError) throw err;
            throw new StageError(st.name, (err as Error).message ?? String(err));
          }
        },
      })),
    {
      renderer,
      fallbackRenderer: "simple",
      rendererOptions: renderer === "default" ? { collapseErrors: false } : plainLines,
      fallbackRendererOptions: plainLines,
      exitOnError: true,
      concurrent: false,
    },
  );
  await tasks.run();
  return outcomes;

  async function runOne(st: Stage, task: { title: string; output: string }): Promise<void> {
    const t0 = performance.now();
    const key = keys.get(st.name)!;
    const found = lookups.get(st.name) ?? (await req.cache.lookup(st.name, key));
    let dir: string;
    if (found.hit) {
      dir = found.dir;
      task.title = `${st.title} (cached)`;
    } else {
      task.output = `building: ${found.reason}`;
      const log = (line: string) => {
        task.output = line;
      };
      // Tool output scrolls by in a terminal or with --verbose; plain CI logs keep only the stages' own
      // progress lines (a failing tool's last lines are in the error either way).
      const toolLog = showToolOutput ? log : () => {};
      dir = await req.cache.store(st.name, key, async (out) => {
        const bctx: BuildContext = {
          ...kctx,
          out,
          keepDir: path.join(req.cache.root, "keep", st.name),
          dep: (name) => {
            const d = dirs.get(name);
            if (!d || !st.deps.includes(name)) throw new StageError(st.name, `reads undeclared stage '${name}'`);
            return d;
          },
          log,
          $: toolShell(st.name, toolLog),
        };
        await st.build(bctx);
      });
    }
    dirs.set(st.name, dir);
    const target = st.publishTo === "dist" ? distDir : req.binDir;
    await publish(st, dir, target);
    const recorded = await req.cache.files(dir);
    // publish() read every one of them, so the entry recorded each.
    const published = Object.entries(st.publish).map(([rel, name]) => ({
      name,
      file: path.join(target, name),
      size: recorded[rel]!.size,
      sha256: recorded[rel]!.sha256,
    }));
    const seconds = (performance.now() - t0) / 1000;
    const outcome = { stage: st.name, key, dir, cached: found.hit, seconds, published };
    outcomes.push(outcome);
    req.onOutcome?.(outcome);
    if (!found.hit) task.title = `${st.title} (built in ${seconds.toFixed(1)} s)`;
  }
}

/** Copies published outputs to bin/ (or dist/), skipping files whose size and mtime already match. */
async function publish(st: Stage, dir: string, binDir: string): Promise<void> {
  await mkdir(binDir, { recursive: true });
  for (const [rel, name] of Object.entries(st.publish)) {
    const src = path.join(dir, rel);
    const dst = path.join(binDir, name);
    const [s, d] = await Promise.all([stat(src), stat(dst).catch(() => undefined)]);
    if (d && d.size === s.size && d.mtimeMs === s.mtimeMs) continue;
    // A new file renamed over the old one: a VM booting from the old image keeps reading it whole.
    const tmp = `${dst}.${process.pid}.tmp`;
    await copyFile(src, tmp);
    await utimes(tmp, s.atime, s.mtime);
    await rename(tmp, dst);
  }
}
