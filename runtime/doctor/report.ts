/** What one doctor check found. */
export type Status = "ok" | "warn" | "fail" | "skip";

export interface CheckResult {
  /** Stable name, for --json consumers and for finding the check in the docs (e.g. "containerd-config"). */
  id: string;
  status: Status;
  /** One line: what was found. */
  verdict: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

export interface Report {
  /** No check failed (warnings allowed). */
  ok: boolean;
  failed: number;
  warnings: number;
  checks: CheckResult[];
}

export function summarize(checks: CheckResult[]): Report {
  const failed = checks.filter((c) => c.status === "fail").length;
  const warnings = checks.filter((c) => c.status === "warn").length;
  return { ok: failed === 0, failed, warnings, checks };
}

/** 0 when nothing failed, 1 otherwise (warnings do not fail: they name degraded but working setups). */
export function exitCode(report: Report): number {
  return report.ok ? 0 : 1;
}

const LABEL: Record<Status, string> = { ok: "ok", warn: "warn", fail: "FAIL", skip: "skip" };

/** One verdict line per check, a fix line under each warning or failure, then a one-line summary. */
export function formatText(report: Report): string {
  const width = Math.max(...report.checks.map((c) => c.id.length));
  const lines: string[] = [];
  for (const c of report.checks) {
    lines.push(`${LABEL[c.status].padEnd(4)}  ${c.id.padEnd(width)}  ${c.verdict}`);
    if (c.fix && (c.status === "warn" || c.status === "fail")) lines.push(`${" ".repeat(width + 6)}fix: ${c.fix}`);
  }
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  if (report.failed > 0) {
    lines.push(
      `${plural(report.failed, "check")} failed, ${plural(report.warnings, "warning")}: sandboxes will not run until the failures are fixed`,
    );
  } else if (report.warnings > 0) {
    lines.push(`no failures, ${plural(report.warnings, "warning")}: sandboxes can run (see the warnings)`);
  } else {
    lines.push("all checks passed");
  }
  return `${lines.join("\n")}\n`;
}
