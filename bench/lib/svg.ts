// A small line chart as SVG text: enough for a benchmark curve, with no dependency.

export interface Series {
  name: string;
  points: Array<[number, number]>;
  color: string;
  dashed?: boolean;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const W = 640;
const H = 400;
const M = { left: 64, right: 24, top: 40, bottom: 56 };

/** A "nice" tick step for a range: 1, 2 or 5 times a power of ten, about `count` ticks. */
function step(range: number, count: number): number {
  const raw = range / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

export function lineChart(c: Chart): string {
  const all = c.series.flatMap((s) => s.points);
  const xMax = Math.max(...all.map((p) => p[0]));
  const yStep = step(Math.max(...all.map((p) => p[1])), 6);
  const yMax = Math.ceil(Math.max(...all.map((p) => p[1])) / yStep) * yStep;
  const xStep = Math.max(1, step(xMax, 10));
  const px = (x: number) => M.left + (x / xMax) * (W - M.left - M.right);
  const py = (y: number) => H - M.bottom - (y / yMax) * (H - M.top - M.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(c.title)}</text>`,
  ];
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    out.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${M.left - 6}" y="${py(y) + 4}" text-anchor="end">${Number(y.toFixed(6))}</text>`,
    );
  }
  for (let x = 0; x <= xMax + 1e-9; x += xStep) {
    out.push(`<text x="${px(x)}" y="${H - M.bottom + 18}" text-anchor="middle">${Number(x.toFixed(6))}</text>`);
  }
  out.push(
    `<line x1="${M.left}" x2="${W - M.right}" y1="${py(0)}" y2="${py(0)}" stroke="#333"/>`,
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${py(0)}" stroke="#333"/>`,
    `<text x="${(M.left + W - M.right) / 2}" y="${H - 14}" text-anchor="middle">${esc(c.xLabel)}</text>`,
    `<text transform="translate(16 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`,
  );
  c.series.forEach((s, i) => {
    const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)} ${py(y).toFixed(1)}`).join(" ");
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : "";
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    if (!s.dashed) {
      for (const [x, y] of s.points) out.push(`<circle cx="${px(x)}" cy="${py(y)}" r="3.5" fill="${s.color}"/>`);
    }
    const ly = M.top + 8 + i * 18;
    out.push(
      `<line x1="${M.left + 12}" x2="${M.left + 36}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${M.left + 42}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
