// SHA256SUMS in the format `sha256sum --check` reads: "<64 hex>  <path>" per line, sorted by path.

export interface SumEntry {
  path: string;
  sha256: string;
}

export function formatSums(entries: SumEntry[]): string {
  const seen = new Set<string>();
  for (const e of entries) {
    // sha256sum would read a newline or a backslash in a name as another line or an escape.
    if (!e.path || /[\n\\]/.test(e.path)) throw new Error(`SHA256SUMS cannot name the path ${JSON.stringify(e.path)}`);
    if (!/^[0-9a-f]{64}$/.test(e.sha256)) throw new Error(`${e.path}: '${e.sha256}' is not a sha256 in hex`);
    if (seen.has(e.path)) throw new Error(`SHA256SUMS would list ${e.path} twice`);
    seen.add(e.path);
  }
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return sorted.map((e) => `${e.sha256}  ${e.path}\n`).join("");
}

/** path -> sha256; a line that is not "<64 hex>  <path>" is an error naming it. */
export function parseSums(text: string, file = "SHA256SUMS"): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, line] of text.split("\n").entries()) {
    if (line === "") continue;
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) throw new Error(`${file} line ${i + 1} is not '<sha256>  <path>': ${JSON.stringify(line.slice(0, 100))}`);
    if (out.has(m[2]!)) throw new Error(`${file} lists ${m[2]} twice`);
    out.set(m[2]!, m[1]!);
  }
  return out;
}
