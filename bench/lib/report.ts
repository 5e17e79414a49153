// What every benchmark records about the run, and how its figures reach bench/results/<name>.json and its section
// of BENCHMARKS.md (regenerated from the result on every run, so the file always shows each script's latest run).

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const benchDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const repo = path.dirname(benchDir);
export const resultsDir = path.join(benchDir, "results");
const BENCHMARKS_MD = path.join(repo, "BENCHMARKS.md");

/** Section order in BENCHMARKS.md. */
const SECTIONS = ["sandbox-start", "cri-start", "density", "controller", "ttrpc", "pipeline", "kernel-profiles"];

const HEADER = `# Benchmarks

Figures from the scripts under \`bench/\`: \`npm run bench\` runs them all in sequence, \`node --import tsx
bench/<name>.ts\` runs one. Each writes \`bench/results/<name>.json\` and regenerates its own section below from that
result, so every section is the latest run of its script. Goals are reported as measured vs goal with a pass/miss
verdict; no test asserts a timing.

| script | measures | options |
| --- | --- | --- |
| \`sandbox-start.ts\` | bare QEMU floor vs Controller Create+Start, with phases | \`--runs N\` (8) |
| \`cri-start.ts\` | pod + container start through containerd's CRI, serial and in parallel | \`--runs N\` (3), \`--parallel N\` (4) |
| \`density.ts\` | daemon memory by running sandboxes, vmm-task memory in the guest, kernel start to first Check | \`--sandboxes N\` (10), \`--batch N\` (2), \`--containers N\` (10) |
| \`controller.ts\` | gRPC Controller Status calls/s | |
| \`ttrpc.ts\` | ttrpc vs raw unix-socket echo, streaming throughput | |
| \`pipeline.ts\` | cold and warm build times per stage, artifact sizes, reproducibility | \`--cold-kernel\` (adds 9-13 min idle, up to 35 busy) |
| \`kernel-profiles.ts\` | micro vs mini kernel: build time, sizes, boot to /init; the VM tests on mini | \`--boots N\` (3); builds mini once (20-40 min) |

The machine has 2 cores and no KVM: every guest runs under QEMU's TCG (software emulation), which makes boots
10-20x slower than under KVM and puts the figures at the mercy of whatever else runs. Other engineers share it,
so each section gives the load average (1, 5, 15 min) at the start and the end of its run.
`;

export interface RunInfo {
  when: string;
  /** Commit the tree was at, with "+dirty" when it had uncommitted changes (the tree is shared). */
  commit: string;
  node: string;
  cpus: number;
  cpuModel: string;
  loadavgStart: number[];
  loadavgEnd: number[];
  seconds: number;
}

const round1 = (v: number) => Math.round(v * 10) / 10;

function commitOf(): string {
  try {
    const head = execFileSync("git", ["-C", repo, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["-C", repo, "status", "--porcelain", "--untracked-files=no"], {
      encoding: "utf8",
    }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return "unknown";
  }
}

/** Starts the run's record; finish() stamps the end load average and duration. */
export function startRun(): { finish: () => RunInfo } {
  const t0 = performance.now();
  const start = {
    when: new Date().toISOString(),
    commit: commitOf(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    loadavgStart: os.loadavg().map(round1),
  };
  return {
    finish: () => ({
      ...start,
      loadavgEnd: os.loadavg().map(round1),
      seconds: Math.round((performance.now() - t0) / 1000),
    }),
  };
}

/** One line about the run for the markdown section. */
export function runLine(r: RunInfo, extra = ""): string {
  return (
    `Run ${r.when.slice(0, 16).replace("T", " ")} UTC at commit ${r.commit}, ${r.cpus} × ${r.cpuModel}, ` +
    `node ${r.node}${extra}; load average ${r.loadavgStart.join(" / ")} at the start, ` +
    `${r.loadavgEnd.join(" / ")} at the end; ${r.seconds} s.`
  );
}

export function writeResult(name: string, result: unknown): string {
  const out = path.join(resultsDir, `${name}.json`);
  mkdirSync(resultsDir, { recursive: true });
  // Paths inside the checkout are kept relative to it: the results describe the run, not this machine's layout.
  const text = JSON.stringify(result, null, 2).replaceAll(`${repo}/`, "");
  writeFileSync(out, `${text}\n`);
  return out;
}

/**
 * Replaces (or inserts, in SECTIONS order) the section between this benchmark's markers in BENCHMARKS.md; the text
 * before the first section is rewritten from HEADER.
 */
export function updateBenchmarksMd(name: string, markdown: string): void {
  const begin = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  const block = `${begin}\n${markdown.trim()}\n${end}`;
  const old = existsSync(BENCHMARKS_MD) ? readFileSync(BENCHMARKS_MD, "utf8") : "";
  const first = old.indexOf("<!-- bench:");
  let text = first < 0 ? HEADER : `${HEADER}\n${old.slice(first)}`;
  const at = text.indexOf(begin);
  if (at >= 0) {
    const stop = text.indexOf(end, at);
    if (stop < 0) throw new Error(`BENCHMARKS.md: ${begin} has no ${end}; fix the file by hand`);
    text = text.slice(0, at) + block + text.slice(stop + end.length);
  } else {
    const later = SECTIONS.slice(SECTIONS.indexOf(name) + 1)
      .map((s) => text.indexOf(`<!-- bench:${s} -->`))
      .find((i) => i >= 0);
    text =
      later === undefined
        ? `${text.trimEnd()}\n\n${block}\n`
        : `${text.slice(0, later)}${block}\n\n${text.slice(later)}`;
  }
  writeFileSync(BENCHMARKS_MD, text);
}

/** Writes the JSON result and the markdown section; returns the JSON path relative to the working directory. */
export function publish(name: string, result: unknown, markdown: string): string {
  const out = writeResult(name, result);
  updateBenchmarksMd(name, markdown);
  return path.relative(process.cwd(), out);
}

/** Nearest-rank percentile of unsorted values (q in 0..1). */
export function percentile(values: number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export interface Goal {
  goal: number;
  measured: number;
  /** "max": pass when measured <= goal; "min": pass when measured >= goal. */
  kind: "max" | "min";
  pass: boolean;
}

export function goal(measured: number, target: number, kind: "max" | "min"): Goal {
  return { goal: target, measured, kind, pass: kind === "max" ? measured <= target : measured >= target };
}

export function verdict(g: Goal, unit = ""): string {
  return `${g.measured}${unit} vs goal ${g.kind === "max" ? "<=" : ">="} ${g.goal}${unit}: ${g.pass ? "pass" : "MISS"}`;
}

export function mdTable(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.map(String).join(" | ")} |`;
  return [line(headers), line(headers.map(() => "---")), ...rows.map(line)].join("\n");
}

/** The phase table both start benchmarks end their section with. */
export function phasesSection(headers: string[], rows: Array<Array<string | number>>): string[] {
  return ["Phases, p50 of each (ms; the phases' p50s need not add up to the total's):", "", mdTable(headers, rows), ""];
}

export const ms = (v: number) => Math.round(v);
export const sec = (v: number) => (v / 1000).toFixed(2);
export const mib = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
