// One evaluation: the verdict and its gate checks first, headline numbers with intervals and
// the noise floor, the flip quadrant, slices worst first, and the instance table with both
// models' answers. Updates itself while the job runs.

import { getJson, download, query } from "../api.js";
import { h, fill, cursorPager, pct, num, signedPct, interval, when, statusBadge, progressBar, setTitle } from "../dom.js";
import { flipQuadrant, sliceBars } from "../charts.js";
import { wordDiff } from "../diff.js";

const PAGE = 50;
const VERDICTS = [
  ["", "any verdict"], ["worse", "reliably worse"], ["better", "reliably better"], ["none", "no reliable change"],
];
const FLIPS = [
  ["", "every instance"], ["negative", "negative flips"], ["positive", "positive flips"],
  ["both_correct", "both correct"], ["both_wrong", "both wrong"], ["tie", "ties"],
];

export async function evaluationPage(view, params, ctx) {
  const evaluation = await getJson(`/v1/evaluations/${encodeURIComponent(params.id)}`);
  const report = evaluation.report;
  setTitle(evaluation.name || "Evaluation");
  const running = evaluation.status === "queued" || evaluation.status === "running";
  const table = report ? await instanceTable(evaluation, params, ctx) : null;
  fill(view, 
    header(evaluation),
    verdict(evaluation),
    report ? headline(report, evaluation.spec.task.type !== "multiple_choice") : null,
    report && report.sampled ? sampledSection(report.sampled) : null,
    report && report.warnings.length ? h("ul", { class: "warnings", id: "warnings" }, report.warnings.map((w) => h("li", {}, w))) : null,
    report ? h("div", { class: "grid2" },
      h("section", { "aria-labelledby": "quadrant-title" }, h("h2", { id: "quadrant-title" }, "Flips"),
        flipQuadrant(report.counts, params.flip || null, (flip) => ctx.go(`evaluations/${evaluation.id}`, { ...params, flip, cursor: "", trail: "" })),
        report.counts.ties ? h("p", { class: "small muted" }, `${report.counts.ties} ties (equal scores) are in no cell.`) : null),
      h("section", { "aria-labelledby": "slices-title" }, h("h2", { id: "slices-title" }, "Slices, worst negative flip rate first"),
        report.slices.length
          ? sliceBars(report.slices.slice(0, 40), report.metrics.nfr, (slice) => ctx.go(`evaluations/${evaluation.id}`, { ...params, slice, cursor: "", trail: "" }))
          : h("p", { class: "muted" }, "No slices: the rows carry no tags."),
        report.slices.length
          ? h("p", { class: "small muted", id: "slices-regressed" }, `${report.slices.filter((s) => s.regressed).length} regressed: negative flips above the rest's beyond chance (Fisher's exact test, Benjamini-Hochberg q < 0.05 across slices). The others' rank may be noise.`)
          : null,
        report.slices.length > 40 || report.slices_omitted
          ? h("p", { class: "small muted" }, `The ${Math.min(40, report.slices.length)} worst of ${report.slices.length + (report.slices_omitted || 0)} slices.`)
          : null)) : null,
    table);
  if (running) ctx.refreshIn(2000);
}

function header(e) {
  const s = e.spec;
  const side = (x) => x.endpoint
    ? `${x.endpoint.model} served at ${x.endpoint.url}`
    : x.model ? `${x.model}${x.adapter ? ` + ${x.adapter}` : ""}` : `recorded run ${x.predictions}`;
  const provenance = e.report && e.report.provenance;
  const served = (name) => {
    const p = provenance && provenance[name];
    if (!p || p.kind !== "endpoint") return null;
    const parts = [p.server ? `server: ${p.server}` : "server: not named",
      p.system_fingerprint ? `system_fingerprint: ${p.system_fingerprint}` : null,
      p.listed && p.listed.parent ? `LoRA module on ${p.listed.parent}` : null,
      p.listed && p.listed.max_model_len ? `context ${p.listed.max_model_len}` : null,
      p.unavailable ? `not reachable when the report was made: ${p.unavailable}` : null].filter(Boolean);
    return h("div", { class: "small muted", id: `provenance-${name}` }, parts.join(" · "));
  };
  return h("div", {},
    h("p", { class: "small" }, h("a", { href: "#/evaluations" }, "← Evaluations")),
    h("h1", {}, e.name || e.id),
    h("dl", { class: "kv" },
      h("dt", {}, "Status"), h("dd", { id: "status" }, statusBadge(e.status), " ",
        e.status === "running" || e.status === "queued" ? [progressBar(e.progress.done, e.progress.total), ` ${e.progress.done} / ${e.progress.total} instances`] : `${e.progress.done} / ${e.progress.total} instances`),
      h("dt", {}, "Old"), h("dd", {}, side(s.old), served("old")),
      h("dt", {}, "New"), h("dd", {}, side(s.new), served("new")),
      h("dt", {}, "Task"), h("dd", {}, s.task.type),
      h("dt", {}, "Created"), h("dd", {}, when(e.created_at), e.finished_at ? ` · finished ${when(e.finished_at)}` : ""),
      e.error ? [h("dt", {}, "Error"), h("dd", { class: "error-box" }, e.error)] : null),
    h("p", { class: "pager" },
      h("button", { type: "button", onclick: () => download(`/v1/evaluations/${e.id}/report.md`, `${e.id}-report.md`) }, "report.md"),
      h("button", { type: "button", onclick: () => download(`/v1/evaluations/${e.id}/instances.csv`, `${e.id}-instances.csv`) }, "instances.csv"),
      h("a", { href: `#/compare?a=${e.id}` }, "Compare with another evaluation…")));
}

function verdict(e) {
  const r = e.report;
  if (!r) {
    const word = e.status === "failed" || e.status === "cancelled" ? e.status : "pending";
    return h("section", { class: `verdict ${word === "pending" ? "pending" : "fail"}`, id: "verdict", "data-verdict": word },
      h("span", { class: "word" }, word === "pending" ? "Pending" : word), h("span", {}, "no report yet"));
  }
  const checks = r.gate.checks;
  const word = r.partial ? "pending" : checks.length === 0 ? "none" : r.gate.passed ? "pass" : "fail";
  const text = { pending: "Partial: still running", none: "No gate", pass: "Pass", fail: "Fail" }[word];
  return h("section", { class: `verdict ${word === "none" ? "" : word}`, id: "verdict", "data-verdict": word, "aria-label": "Release verdict" },
    h("span", { class: "word" }, text),
    checks.length
      ? h("ul", { class: "checks", id: "gate-checks" }, checks.map((c) => h("li", { "data-passed": String(c.passed) },
        c.passed ? "✓ " : "✗ ", h("strong", {}, c.metric), ` = ${num(c.value, 4)} `,
        c.max !== null && c.max !== undefined ? `(max ${c.max})` : "", c.min !== null && c.min !== undefined ? `(min ${c.min})` : "")))
      : h("span", { class: "muted" }, "The evaluation has no gate: add \"gate\" to the spec for a verdict."));
}

function card(id, label, value, ci, title) {
  return h("div", { class: "card", id: `metric-${id}`, title: title || null },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), ci ? h("div", { class: "ci" }, ci) : null);
}

function headline(r, generation) {
  const m = r.metrics, i = r.intervals, nf = r.noise_floor, g = r.generative;
  const score = generation ? "Mean score" : "Accuracy";
  const cards = [
    card("n", "Instances", String(r.n), r.partial ? "so far" : ""),
    card("acc-old", `${score} old`, pct(r.old.accuracy), interval(i.acc_old)),
    card("acc-new", `${score} new`, pct(r.new.accuracy), interval(i.acc_new)),
    card("delta", `Change in ${score.toLowerCase()}`, signedPct(m.delta_accuracy), interval(i.delta_accuracy, signedPct)),
    card("nfr", "Negative flip rate", pct(m.nfr), interval(i.nfr), "instances the old model got right and the new one gets wrong, over all instances"),
    card("pfr", "Positive flip rate", pct(m.pfr), interval(i.pfr)),
    card("btc", "Backward trust compatibility", pct(m.btc), interval(i.btc), "of the old model's correct instances, the share the new one keeps"),
    card("agreement", "Agreement", pct(m.agreement), interval(i.agreement)),
    card("mcnemar", "McNemar exact p", num(r.mcnemar.p_value, 4), `${r.mcnemar.discordant} discordant`),
  ];
  if (nf) {
    cards.push(card("noise", "Noise floor (self-flip rate)", pct(nf.self_flip_rate),
      nf.nfr_exceeds_noise === null ? "" : nf.nfr_exceeds_noise ? "nfr is above the noise" : "nfr is within the noise"));
  }
  if (g && g.output_similarity !== null) {
    cards.push(card("similarity", "Output similarity (ROUGE-L)", num(g.output_similarity, 3)));
    cards.push(card("identical", "Identical outputs", pct(g.identical_outputs)));
    if (g.m_r !== null) cards.push(card("mr", "Mean loss on negative flips", num(g.m_r, 3)));
    if (g.m_g !== null) cards.push(card("mg", "Mean gain on positive flips", num(g.m_g, 3)));
  }
  return h("section", { "aria-label": "Headline metrics" }, h("div", { class: "cards" }, cards),
    nf ? null : h("p", { class: "small muted" }, "No noise floor: set options.noise_floor to rerun the old model and measure run-to-run flips."));
}

// What users meet at the deployment's temperature: the expected flip rates over users who each
// get one draw of each model, the instances that changed beyond chance, and the greedy flips
// held against them.
function sampledSection(s) {
  const settings = [`${s.samples} draws per instance and side`, `temperature ${s.temperature}`, `top-p ${s.top_p}`,
    s.top_k ? `top-k ${s.top_k}` : null, `${s.n} instances`].filter(Boolean).join(" · ");
  return h("section", { id: "sampled", "aria-labelledby": "sampled-title" },
    h("h2", { id: "sampled-title" }, "Sampled outputs"),
    h("p", { class: "small muted" }, settings),
    h("div", { class: "cards" },
      card("sampled-expected-nfr", "Expected negative flip rate", pct(s.expected_nfr), interval(s.intervals.expected_nfr),
        "the chance that a user who gets one draw of each model meets a negative flip"),
      card("sampled-expected-pfr", "Expected positive flip rate", pct(s.expected_pfr), interval(s.intervals.expected_pfr)),
      card("sampled-worse", "Reliably worse", String(s.reliably_worse), "q < 0.05", "Fisher's exact test (0/1 scores) or Welch's t per instance, Benjamini-Hochberg across instances"),
      card("sampled-better", "Reliably better", String(s.reliably_better), "q < 0.05"),
      card("sampled-none", "No reliable change", String(s.no_reliable_change)),
      card("sampled-greedy-reliable", "Greedy flips that are reliable", `${s.greedy_flips_reliable} of ${s.greedy_flips}`),
      card("sampled-missed", "Reliable changes greedy missed", String(s.reliable_missed_by_greedy))),
    h("p", { class: "small muted legend-draws", id: "sampled-legend" },
      h("span", { class: "draw right" }), " right ", h("span", { class: "draw partial" }), " partly right ",
      h("span", { class: "draw wrong" }), ` wrong: each instance's ${s.samples} draws per side in the table below, with p, the mean draw score; hover a draw for its output.`));
}

async function instanceTable(e, params, ctx) {
  const sampled = Boolean(e.report.sampled);
  const page = await getJson(`/v1/evaluations/${e.id}/instances${query({ flip: params.flip, slice: params.slice, verdict: sampled ? params.verdict : "", limit: PAGE, cursor: params.cursor })}`);
  const go = (p) => ctx.go(`evaluations/${e.id}`, { ...params, ...p });
  const flip = h("select", { id: "filter-flip" }, FLIPS.map(([v, l]) => h("option", { value: v, selected: v === (params.flip || "") }, l)));
  flip.addEventListener("change", () => go({ flip: flip.value, cursor: "", trail: "" }));
  const slices = (e.report.slices || []).map((s) => s.slice).sort();
  const slice = h("select", { id: "filter-slice" }, [h("option", { value: "" }, "every slice"),
    ...slices.map((s) => h("option", { value: s, selected: s === params.slice }, s))]);
  slice.addEventListener("change", () => go({ slice: slice.value, cursor: "", trail: "" }));
  const verdict = sampled ? h("select", { id: "filter-verdict" }, VERDICTS.map(([v, l]) => h("option", { value: v, selected: v === (params.verdict || "") }, l))) : null;
  if (verdict) verdict.addEventListener("change", () => go({ verdict: verdict.value, cursor: "", trail: "" }));
  const generation = e.spec.task.type !== "multiple_choice";
  return h("section", { "aria-labelledby": "instances-title" },
    h("h2", { id: "instances-title" }, "Instances"),
    h("div", { class: "filters" }, h("label", {}, "Flip", flip), h("label", {}, "Slice", slice),
      verdict ? h("label", {}, "Sampled verdict", verdict) : null,
      params.flip || params.slice || params.verdict ? h("button", { type: "button", onclick: () => go({ flip: "", slice: "", verdict: "", cursor: "", trail: "" }) }, "Clear filters") : null),
    page.items.length === 0 ? h("p", { class: "muted", id: "no-instances" }, "No instance matches.") :
      h("div", { class: "table-wrap" }, h("table", { id: "instances" },
        h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Prompt"),
          h("th", {}, generation ? "Reference" : "Gold"), h("th", {}, "Old"), h("th", {}, "New"))),
        h("tbody", {}, page.items.map((i) => generation ? generationRow(i) : choiceRow(i))))),
    cursorPager(params, page.next_cursor, go, {
      previous: "← Previous", next: "Next →", previousId: "instances-previous", nextId: "instances-next",
      note: (n) => `${page.items.length} shown${n > 1 ? `, page ${n}` : ""}`,
    }));
}

function idCell(i, extra = null) {
  const tags = Object.entries(i.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return h("td", {}, h("div", {}, i.id), h("span", { class: `badge ${i.flip === "negative" ? "fail" : i.flip === "positive" ? "pass" : "none"}` }, i.flip.replace("_", " ")),
    tags ? h("div", { class: "small muted" }, tags) : null, extra);
}

function prompt(i) {
  return h("td", {}, i.prompt === null ? h("span", { class: "muted" }, "(dataset no longer stored)") : h("pre", { class: "prompt" }, i.prompt));
}

function choiceList(i, side) {
  const choices = i.choices || [];
  return h("ul", { class: "choices" }, choices.map((c, k) => h("li", { class: [k === i.gold ? "gold" : "", k === side.prediction ? "picked" : ""].join(" ") },
    h("span", {}, c), h("span", { class: "small muted" }, side.scores ? num(side.scores[k], 2) : ""))));
}

function choiceRow(i) {
  const side = (s) => h("td", {}, h("div", {}, s.correct ? "✓ " : "✗ ", (i.choices || [])[s.prediction] ?? "–"), choiceList(i, s));
  return h("tr", { "data-flip": i.flip }, idCell(i), prompt(i), h("td", {}, (i.choices || [])[i.gold] ?? "–"), side(i.old), side(i.new));
}

// One cell per sampled draw, shaded from the wrong colour (score 0) to the right one (score 1);
// the draw's output and score in its title (and its accessible name), the side's p before them.
function drawStrip(s, name) {
  if (!s.samples || !s.samples.length) return null;
  const right = s.samples.filter((d) => d.score >= 1).length;
  return h("div", { class: "draws", "data-side": name, role: "group",
    "aria-label": `${name} model's ${s.samples.length} sampled draws: ${right} fully right, mean score p = ${num(s.p, 2)}` },
  h("span", { class: "small muted p" }, `p(${name}) = ${num(s.p, 2)} `),
  s.samples.map((d, k) => {
    const shade = d.score >= 1 ? "right" : d.score <= 0 ? "wrong" : "partial";
    const title = `draw ${k + 1}, score ${num(d.score, 3)}: ${d.output}`;
    return h("span", {
      class: `draw ${shade}`, role: "img", title, "aria-label": title, "data-score": d.score,
      // Through the CSSOM (the policy refuses inline style attributes): in between, mixed by score.
      style: shade === "partial" ? `background: color-mix(in srgb, var(--good) ${(d.score * 100).toFixed(0)}%, var(--bad-bg))` : null,
    });
  }));
}

/// A q-value as the slices show theirs: two significant digits.
function qValue(q) {
  return q === null || q === undefined || Number.isNaN(q) ? "–" : Number(q).toPrecision(2);
}

function verdictLine(i) {
  if (!i.sampled) return null;
  const word = { worse: "reliably worse", better: "reliably better", none: "no reliable change" }[i.sampled.verdict];
  return h("div", { class: `small verdict-${i.sampled.verdict}`, "data-verdict": i.sampled.verdict }, `${word} (q = ${qValue(i.sampled.q_value)})`);
}

function generationRow(i) {
  const d = wordDiff(i.old.output || "", i.new.output || "");
  const text = (parts, tag) => h("div", { class: "out" }, parts.map((p) => (p.changed ? h(tag, {}, p.text) : p.text)));
  const side = (s, parts, tag, name) => h("td", {}, h("div", { class: "small muted" }, `score ${num(s.score, 3)}${s.answer !== undefined ? ` · answer ${JSON.stringify(s.answer)}` : ""}`), text(parts, tag), drawStrip(s, name));
  return h("tr", { "data-flip": i.flip, "data-id": i.id }, idCell(i, verdictLine(i)), prompt(i),
    h("td", {}, (i.targets || []).map((t) => h("div", { class: "out" }, t))), side(i.old, d.old, "del", "old"), side(i.new, d.new, "ins", "new"));
}

