// One training: loss curves (train per step, validation per epoch with the best epoch marked),
// its hyperparameters, the adapter it wrote, and the before/after evaluations it queued.

import { getJson } from "../api.js";
import { h, fill, when, statusBadge, progressBar, setTitle } from "../dom.js";
import { lineChart } from "../charts.js";
import { metricRows } from "./compare.js";

export async function trainingPage(view, params, ctx) {
  const t = await getJson(`/v1/trainings/${encodeURIComponent(params.id)}`);
  setTitle(t.name || "Training");
  const p = t.progress || {};
  const train = t.history.filter((r) => r.kind === "train");
  const validation = t.history.filter((r) => r.kind === "validation");
  const best = validation.find((r) => r.epoch === t.best_epoch);
  const side = (x) => `${x.model}${x.adapter ? ` + ${x.adapter}` : ""}`;
  const running = t.status === "queued" || t.status === "running";
  const evaluations = t.evaluations ? await beforeAfter(t.evaluations) : null;
  fill(view, 
    h("p", { class: "small" }, h("a", { href: "#/trainings" }, "← Trainings")),
    h("h1", {}, t.name || t.id),
    h("dl", { class: "kv" },
      h("dt", {}, "Status"), h("dd", { id: "status" }, statusBadge(t.status), " ",
        p.total_steps ? [progressBar(p.step || 0, p.total_steps), ` step ${p.step} / ${p.total_steps}, epoch ${p.epoch ?? "–"}`] : ""),
      h("dt", {}, "Objective"), h("dd", {}, t.spec.objective),
      t.spec.old ? [h("dt", {}, "Old (teacher)"), h("dd", {}, side(t.spec.old))] : null,
      h("dt", {}, "New"), h("dd", {}, side(t.spec.new)),
      h("dt", {}, "Adapter"), h("dd", { id: "adapter" }, t.adapter ? `${t.adapter} (under MUSCLE_MODEL_DIR)` : `${t.spec.output} (not written yet)`),
      h("dt", {}, "Best epoch"), h("dd", { id: "best-epoch" }, t.best_epoch ?? "–"),
      h("dt", {}, "Created"), h("dd", {}, when(t.created_at), t.finished_at ? ` · finished ${when(t.finished_at)}` : ""),
      t.error ? [h("dt", {}, "Error"), h("dd", { class: "error-box" }, t.error)] : null),
    h("h2", {}, "Training loss per step"),
    h("div", { id: "train-chart" }, lineChart([{ id: "train", label: "train loss", color: "var(--positive)", points: train.map((r) => ({ x: r.step, y: r.loss })) }], { xLabel: "step", yLabel: "loss" })),
    h("h2", {}, "Validation cross-entropy per epoch"),
    h("div", { id: "validation-chart" }, lineChart([{ id: "validation", label: "validation cross-entropy", color: "var(--negative)",
      points: validation.map((r) => ({ x: r.epoch, y: r.validation_ce })),
      marks: best ? [{ x: best.epoch, y: best.validation_ce, label: `best: epoch ${best.epoch}` }] : [] }], { xLabel: "epoch", yLabel: "cross-entropy" })),
    h("h2", {}, "Hyperparameters"),
    h("dl", { class: "kv", id: "hyperparameters" }, Object.entries(t.spec.hyperparameters).flatMap(([k, v]) =>
      [h("dt", {}, k), h("dd", {}, v === null ? "default" : Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v))])),
    evaluations);
  if (running || (evaluations && evaluations.dataset.pending === "true")) ctx.refreshIn(2000);
}

async function beforeAfter(pair) {
  const [before, after] = await Promise.all([pair.old_vs_new, pair.old_vs_compat].map((e) => (e ? getJson(`/v1/evaluations/${e.id}`) : null)));
  const pending = [before, after].some((e) => !e || !e.report || e.report.partial);
  return h("section", { id: "before-after", "data-pending": String(pending) },
    h("h2", {}, "Before and after, against the old model"),
    h("p", { class: "small" },
      before ? h("a", { href: `#/evaluations/${before.id}` }, "old → new") : "old → new", " · ",
      after ? h("a", { href: `#/evaluations/${after.id}` }, "old → new + this adapter") : "old → new + this adapter", " · ",
      before && after ? h("a", { href: `#/compare?a=${before.id}&b=${after.id}` }, "side by side, with the instances that changed") : null),
    before && after && before.report && after.report
      ? h("div", { class: "table-wrap" }, h("table", { id: "before-after-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Metric"), h("th", { class: "num" }, "Before (new)"), h("th", { class: "num" }, "After (new + adapter)"), h("th", { class: "num" }, "Change"))),
        h("tbody", {}, metricRows(before.report, after.report))))
      : h("p", { class: "muted" }, "The evaluations have not finished yet."));
}

