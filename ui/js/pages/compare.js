// Two evaluations side by side (for example old -> new-task against old -> new-compat): each
// metric and its change, and the instances that stopped or started being negative flips.

import { getJson, query } from "../api.js";
import { h, fill, pct, num, signedPct, setTitle } from "../dom.js";

const PAGE = 50;
// Metrics where a rise is good (+1) or bad (-1).
const METRICS = [
  ["Accuracy old", (r) => r.old.accuracy, pct, 0],
  ["Accuracy new", (r) => r.new.accuracy, pct, 1],
  ["Change in accuracy", (r) => r.metrics.delta_accuracy, signedPct, 1],
  ["Negative flip rate", (r) => r.metrics.nfr, pct, -1],
  ["Negative flips", (r) => r.counts.negative_flips, String, -1],
  ["Positive flip rate", (r) => r.metrics.pfr, pct, 1],
  ["Positive flips", (r) => r.counts.positive_flips, String, 1],
  ["Backward trust compatibility", (r) => r.metrics.btc, pct, 1],
  ["Agreement", (r) => r.metrics.agreement, pct, 1],
  ["McNemar exact p", (r) => r.mcnemar.p_value, (x) => num(x, 4), 0],
  ["Instances", (r) => r.n, String, 0],
];

export function metricRows(a, b) {
  return METRICS.map(([label, get, format, good]) => {
    const x = get(a), y = get(b);
    const change = x === null || y === null || x === undefined || y === undefined ? null : y - x;
    const direction = change === null || change === 0 || good === 0 ? "" : (change > 0) === (good > 0) ? "good" : "bad";
    const shown = change === null ? "–" : format === pct || format === signedPct ? signedPct(change) : format === String ? `${change > 0 ? "+" : ""}${change}` : num(change, 4);
    return h("tr", { "data-metric": label },
      h("td", {}, label), h("td", { class: "num" }, format(x)), h("td", { class: "num" }, format(y)),
      h("td", { class: `num delta ${direction}` }, shown));
  });
}

async function negativeFlips(id) {
  const out = new Map();
  let cursor = "";
  for (let guard = 0; guard < 200; guard++) {
    const page = await getJson(`/v1/evaluations/${id}/instances${query({ flip: "negative", limit: 500, cursor })}`);
    for (const i of page.items) out.set(i.id, i);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return out;
}

async function chooser(view, params, ctx) {
  const page = await getJson(`/v1/evaluations${query({ status: "succeeded", limit: 100 })}`);
  const select = (name, value) => h("select", { id: `choose-${name}`, name },
    [h("option", { value: "" }, "choose…"), ...page.items.map((e) => h("option", { value: e.id, selected: e.id === value }, `${e.name || e.id.slice(0, 8)} (${e.id.slice(0, 8)})`))]);
  const a = select("a", params.a), b = select("b", params.b);
  fill(view, h("h1", {}, "Compare two evaluations"),
    h("p", { class: "muted" }, "For example old → new-task against old → new-compat, on the same dataset."),
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); if (a.value && b.value) ctx.go("compare", { a: a.value, b: b.value }); } },
      h("label", {}, "A (before)", a), h("label", {}, "B (after)", b), h("button", { type: "submit" }, "Compare")));
}

export async function comparePage(view, params, ctx) {
  setTitle("Compare");
  if (!params.a || !params.b) return chooser(view, params, ctx);
  const [a, b] = await Promise.all([params.a, params.b].map((id) => getJson(`/v1/evaluations/${encodeURIComponent(id)}`)));
  if (!a.report || !b.report) {
    fill(view, h("h1", {}, "Compare"), h("p", { class: "muted" }, "Both evaluations need a report; refreshing while they run."));
    ctx.refreshIn(2000);
    return;
  }
  const [nfA, nfB] = await Promise.all([negativeFlips(a.id), negativeFlips(b.id)]);
  const fixed = [...nfA.values()].filter((i) => !nfB.has(i.id));
  const introduced = [...nfB.values()].filter((i) => !nfA.has(i.id));
  const which = params.which === "introduced" ? "introduced" : "fixed";
  const list = which === "fixed" ? fixed : introduced;
  const offset = Math.max(0, Number(params.offset) || 0);
  const shown = list.slice(offset, offset + PAGE);
  const go = (p) => ctx.go("compare", { ...params, ...p });
  const title = (e) => h("a", { href: `#/evaluations/${e.id}` }, e.name || e.id.slice(0, 8));
  const sameData = JSON.stringify(a.spec.dataset) === JSON.stringify(b.spec.dataset);
  fill(view, 
    h("h1", {}, "Compare"),
    h("p", {}, h("strong", {}, "A: "), title(a), h("br"), h("strong", {}, "B: "), title(b),
      h("br"), h("a", { href: "#/compare", class: "small" }, "choose others")),
    sameData ? null : h("ul", { class: "warnings" }, h("li", {}, "The two evaluations name different datasets: instances are matched by id.")),
    h("div", { class: "table-wrap" }, h("table", { id: "compare-metrics" },
      h("thead", {}, h("tr", {}, h("th", {}, "Metric"), h("th", { class: "num" }, "A"), h("th", { class: "num" }, "B"), h("th", { class: "num" }, "Change B − A"))),
      h("tbody", {}, metricRows(a.report, b.report)))),
    h("h2", {}, "Negative flips that changed"),
    h("div", { class: "filters", role: "group", "aria-label": "Which instances" },
      h("button", { type: "button", id: "show-fixed", "aria-pressed": String(which === "fixed"), onclick: () => go({ which: "fixed", offset: 0 }) }, `No longer negative flips in B: ${fixed.length}`),
      h("button", { type: "button", id: "show-introduced", "aria-pressed": String(which === "introduced"), onclick: () => go({ which: "introduced", offset: 0 }) }, `New negative flips in B: ${introduced.length}`)),
    shown.length === 0 ? h("p", { class: "muted", id: "no-changes" }, "None.") :
      h("div", { class: "table-wrap" }, h("table", { id: "changed-flips" },
        h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Prompt"), h("th", {}, "Gold / reference"), h("th", {}, "Old model"), h("th", {}, which === "fixed" ? "New model in A (wrong)" : "New model in B (wrong)"))),
        h("tbody", {}, shown.map((i) => h("tr", { "data-id": i.id },
          h("td", {}, i.id), h("td", {}, h("pre", { class: "prompt" }, i.prompt ?? "")),
          h("td", {}, i.choices ? i.choices[i.gold] ?? "–" : (i.targets || []).join(" | ")),
          h("td", {}, i.choices ? i.choices[i.old.prediction] ?? "–" : h("div", { class: "out" }, i.old.output ?? "")),
          h("td", {}, i.choices ? i.choices[i.new.prediction] ?? "–" : h("div", { class: "out" }, i.new.output ?? ""))))))),
    h("div", { class: "pager" },
      h("button", { type: "button", disabled: offset === 0, onclick: () => go({ offset: Math.max(0, offset - PAGE) }) }, "← Previous"),
      h("span", { class: "small muted" }, list.length ? `${offset + 1}–${offset + shown.length} of ${list.length}` : ""),
      h("button", { type: "button", disabled: offset + PAGE >= list.length, onclick: () => go({ offset: offset + PAGE }) }, "Next →")));
}
