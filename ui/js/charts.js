// Charts as plain SVG: the flip quadrant, slices as bars with intervals, loss curves.

import { h, pct, num } from "./dom.js";

const QUADRANT = [
  { flip: "both_correct", label: "Both correct", key: "both_correct", color: "var(--both-correct)" },
  { flip: "negative", label: "Negative flips", key: "negative_flips", color: "var(--negative)", dark: true },
  { flip: "positive", label: "Positive flips", key: "positive_flips", color: "var(--positive)", dark: true },
  { flip: "both_wrong", label: "Both wrong", key: "both_wrong", color: "var(--both-wrong)" },
];

/// The 2x2 of old correct/wrong against new correct/wrong. Rows: old right, old wrong; columns:
/// new right, new wrong. Each cell is a button that calls onSelect(flip), or onSelect(null)
/// when the selected cell is pressed again.
export function flipQuadrant(counts, selected, onSelect) {
  const size = 150, pad = 70, top = 30;
  const total = QUADRANT.reduce((s, q) => s + (counts[q.key] || 0), 0) + (counts.ties || 0);
  const svg = h("svg", { class: "quadrant", viewBox: `0 0 ${pad + 2 * size + 4} ${top + 2 * size + 4}`, role: "group", "aria-label": "Flip quadrant: old model (rows) against new model (columns)", width: "100%" });
  svg.append(h("text", { x: pad + size / 2, y: 18, "text-anchor": "middle" }, "new correct"));
  svg.append(h("text", { x: pad + 1.5 * size, y: 18, "text-anchor": "middle" }, "new wrong"));
  svg.append(h("text", { x: pad - 8, y: top + size / 2, "text-anchor": "end" }, "old"));
  svg.append(h("text", { x: pad - 8, y: top + size / 2 + 15, "text-anchor": "end" }, "correct"));
  svg.append(h("text", { x: pad - 8, y: top + 1.5 * size, "text-anchor": "end" }, "old"));
  svg.append(h("text", { x: pad - 8, y: top + 1.5 * size + 15, "text-anchor": "end" }, "wrong"));
  // Reading order: both correct, negative (old right, new wrong), positive, both wrong.
  const cells = [QUADRANT[0], QUADRANT[1], QUADRANT[2], QUADRANT[3]];
  cells.forEach((q, i) => {
    const x = pad + (i % 2) * size, y = top + Math.floor(i / 2) * size;
    const count = counts[q.key] || 0;
    const pressed = selected === q.flip;
    const choose = () => onSelect(pressed ? null : q.flip);
    const g = h("g", {
      class: `cell-group${q.dark ? " dark" : ""}`, tabindex: 0, role: "button",
      "aria-pressed": pressed ? "true" : "false", "data-flip": q.flip, "data-count": count,
      "aria-label": `${q.label}: ${count}. Show these instances`,
      onclick: choose,
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } },
    },
    h("rect", { class: "cell", x, y, width: size, height: size, rx: 6, fill: q.color }),
    h("text", { class: "count", x: x + size / 2, y: y + size / 2, "text-anchor": "middle" }, String(count)),
    h("text", { x: x + size / 2, y: y + size / 2 + 22, "text-anchor": "middle" }, q.label),
    h("text", { x: x + size / 2, y: y + size / 2 + 38, "text-anchor": "middle" }, total ? pct(count / total) : ""));
    svg.append(g);
  });
  return svg;
}

/// One horizontal bar per slice: its nfr, the whole dataset's nfr as a line, small slices hatched,
/// and "regressed" where the slice's flips exceed the rest's beyond chance (BH q < 0.05).
export function sliceBars(slices, overall, onSelect) {
  const rowH = 26, labelW = 210, barW = 420, right = 150;
  const max = Math.min(1, Math.max(0.05, overall || 0, ...slices.map((s) => Math.max(s.metrics.nfr || 0, s.nfr_interval?.upper || 0))) * 1.1);
  const x = (v) => labelW + (v / max) * barW;
  const height = slices.length * rowH + 30;
  const svg = h("svg", { class: "slices", viewBox: `0 0 ${labelW + barW + right} ${height}`, width: "100%", role: "img", "aria-label": "Negative flip rate per slice, worst first" });
  for (let t = 0; t <= 4; t++) {
    const v = (max / 4) * t;
    svg.append(h("line", { class: "grid", x1: x(v), x2: x(v), y1: 0, y2: height - 22 }));
    svg.append(h("text", { x: x(v), y: height - 6, "text-anchor": "middle" }, pct(v, 0)));
  }
  slices.forEach((s, i) => {
    const y = i * rowH + 4;
    const nfr = s.metrics.nfr || 0;
    const label = s.slice.length > 30 ? `${s.slice.slice(0, 29)}…` : s.slice;
    const verdict = s.regressed ? ", regressed beyond chance" : "";
    const g = h("g", { class: s.regressed ? "slice-row regressed" : "slice-row", "data-slice": s.slice, tabindex: onSelect ? 0 : null, role: onSelect ? "button" : null,
      "aria-label": `${s.slice}: nfr ${pct(nfr)} of ${s.n}${s.small ? ", small slice" : ""}${verdict}`,
      onclick: onSelect ? () => onSelect(s.slice) : null,
      onkeydown: onSelect ? (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(s.slice); } } : null },
    h("title", {}, `${s.slice}: nfr ${pct(nfr)}, ${s.counts.negative_flips} of ${s.n}${s.nfr_interval ? `, 95% CI [${pct(s.nfr_interval.lower)}, ${pct(s.nfr_interval.upper)}]` : ""}${s.q_value != null ? `; against the rest q = ${s.q_value.toPrecision(2)}${s.regressed ? " (regressed)" : " (within chance)"}` : ""}`),
    h("text", { x: labelW - 8, y: y + 14, "text-anchor": "end" }, label),
    h("rect", { x: labelW, y: y + 3, width: Math.max(1, x(nfr) - labelW), height: rowH - 10, rx: 3,
      fill: s.small ? "var(--both-wrong)" : "var(--negative)", opacity: s.small ? 1 : 0.85 }),
    s.nfr_interval ? h("g", { class: "ci" },
      h("line", { x1: x(s.nfr_interval.lower), x2: x(s.nfr_interval.upper), y1: y + 8, y2: y + 8, stroke: "var(--fg)", "stroke-width": 1.5 }),
      h("line", { x1: x(s.nfr_interval.lower), x2: x(s.nfr_interval.lower), y1: y + 4, y2: y + 12, stroke: "var(--fg)", "stroke-width": 1.5 }),
      h("line", { x1: x(s.nfr_interval.upper), x2: x(s.nfr_interval.upper), y1: y + 4, y2: y + 12, stroke: "var(--fg)", "stroke-width": 1.5 })) : null,
    h("text", { x: labelW + barW + 8, y: y + 14, "font-weight": s.regressed ? "bold" : null }, `${pct(nfr)} · ${s.counts.negative_flips}/${s.n}${s.small ? " · small" : ""}${s.regressed ? " · regressed" : ""}`));
    svg.append(g);
  });
  if (overall !== null && overall !== undefined) {
    svg.append(h("line", { x1: x(overall), x2: x(overall), y1: 0, y2: height - 22, stroke: "var(--fg)", "stroke-dasharray": "4 3" },
      h("title", {}, `whole dataset: ${pct(overall)}`)));
  }
  return svg;
}

/// Lines over steps: each series {label, color, points: [{x, y}], marks?: [{x, y, label}]}.
export function lineChart(series, { xLabel = "step", yLabel = "loss" } = {}) {
  const W = 720, H = 280, L = 56, R = 16, T = 14, B = 40;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return h("p", { class: "muted" }, "No points yet.");
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y).filter(Number.isFinite);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const svg = h("svg", { class: "line-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": `${yLabel} by ${xLabel}` });
  for (let t = 0; t <= 4; t++) {
    const v = y0 + ((y1 - y0) / 4) * t;
    svg.append(h("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    svg.append(h("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, num(v, 3)));
  }
  svg.append(h("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(h("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, xLabel));
  for (const t of [x0, Math.round((x0 + x1) / 2), x1]) {
    svg.append(h("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, String(t)));
  }
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (pts.length > 1) {
      svg.append(h("polyline", { fill: "none", stroke: s.color, "stroke-width": 2, points: pts.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" "), class: `series-${s.id}` }));
    }
    for (const p of pts.length <= 60 ? pts : []) {
      svg.append(h("circle", { cx: sx(p.x), cy: sy(p.y), r: 3, fill: s.color }, h("title", {}, `${s.label} at ${xLabel} ${p.x}: ${num(p.y, 4)}`)));
    }
    for (const m of s.marks || []) {
      svg.append(h("circle", { class: "mark", cx: sx(m.x), cy: sy(m.y), r: 7, fill: "none", stroke: "var(--fg)", "stroke-width": 2 }, h("title", {}, m.label)));
      svg.append(h("text", { x: sx(m.x), y: sy(m.y) - 12, "text-anchor": "middle" }, m.label));
    }
  }
  return svg;
}
