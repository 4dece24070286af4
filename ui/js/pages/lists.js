// The evaluations and trainings lists: newest first, filters by status and name, paging by
// the API's cursors, live while anything on the page is queued or running.

import { getJson, query } from "../api.js";
import { h, fill, cursorPager, pct, interval, when, statusBadge, verdictBadge, progressBar, setTitle } from "../dom.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const PAGE = 25;

function filters(params, go) {
  const status = h("select", { id: "filter-status", name: "status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (params.status || "") }, s || "any")));
  const name = h("input", { id: "filter-name", name: "name", type: "search", value: params.name || "", placeholder: "exact name" });
  const apply = () => go({ status: status.value, name: name.value.trim() });
  status.addEventListener("change", apply);
  name.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
  return h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("label", {}, "Status", status), h("label", {}, "Name", name), h("button", { type: "submit" }, "Filter"));
}

function pager(params, page, go) {
  return cursorPager(params, page.next_cursor, (p) => go({ ...params, ...p }),
    { previous: "← Newer", next: "Older →", previousId: "previous-page", nextId: "next-page" });
}

function live(page) {
  return page.items.some((j) => j.status === "queued" || j.status === "running");
}

export async function evaluationsPage(view, params, ctx) {
  setTitle("Evaluations");
  const page = await getJson(`/v1/evaluations${query({ status: params.status, name: params.name, limit: PAGE, cursor: params.cursor })}`);
  const rows = page.items.map((e) => {
    const r = e.summary;
    return h("tr", { "data-id": e.id, "data-status": e.status },
      h("td", {}, h("a", { href: `#/evaluations/${e.id}` }, e.name || e.id.slice(0, 8))),
      h("td", {}, statusBadge(e.status), " ", e.status === "running" || e.status === "queued" ? progressBar(e.progress.done, e.progress.total) : null,
        e.status === "running" ? h("span", { class: "small muted" }, ` ${e.progress.done}/${e.progress.total}`) : null),
      h("td", { class: "verdict-cell" }, verdictBadge(r)),
      h("td", { class: "num nfr-cell" }, r ? pct(r.nfr) : "–", h("div", { class: "small muted" }, r ? interval(r.nfr_interval) : "")),
      h("td", { class: "num" }, r ? `${pct(r.accuracy_old)} → ${pct(r.accuracy_new)}` : "–"),
      h("td", { class: "small hide-narrow" }, when(e.created_at)));
  });
  fill(view, 
    h("h1", {}, "Evaluations"),
    filters(params, (p) => ctx.go("evaluations", p)),
    page.items.length === 0
      ? h("p", { class: "muted", id: "empty" }, "No evaluations match. Pipelines create them with POST /v1/evaluations.")
      : h("div", { class: "table-wrap" }, h("table", { id: "evaluations" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Verdict"),
          h("th", { class: "num" }, "NFR (95% CI)"), h("th", { class: "num" }, "Accuracy old → new"), h("th", { class: "hide-narrow" }, "Created"))),
        h("tbody", {}, rows))),
    pager(params, page, (p) => ctx.go("evaluations", p)));
  if (live(page)) ctx.refreshIn(2000);
}

export async function trainingsPage(view, params, ctx) {
  setTitle("Trainings");
  const page = await getJson(`/v1/trainings${query({ status: params.status, name: params.name, limit: PAGE, cursor: params.cursor })}`);
  const rows = page.items.map((t) => {
    const p = t.progress || {};
    return h("tr", { "data-id": t.id },
      h("td", {}, h("a", { href: `#/trainings/${t.id}` }, t.name || t.id.slice(0, 8))),
      h("td", {}, statusBadge(t.status), " ", t.status === "running" ? progressBar(p.step || 0, p.total_steps || 0) : null),
      h("td", {}, t.spec.objective),
      h("td", { class: "num" }, p.total_steps ? `${p.step}/${p.total_steps}` : "–"),
      h("td", {}, t.adapter || "–"),
      h("td", { class: "small hide-narrow" }, when(t.created_at)));
  });
  fill(view, 
    h("h1", {}, "Trainings"),
    filters(params, (p) => ctx.go("trainings", p)),
    page.items.length === 0
      ? h("p", { class: "muted", id: "empty" }, "No trainings match. They start with POST /v1/trainings.")
      : h("div", { class: "table-wrap" }, h("table", { id: "trainings" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Objective"),
          h("th", { class: "num" }, "Steps"), h("th", {}, "Adapter"), h("th", { class: "hide-narrow" }, "Created"))),
        h("tbody", {}, rows))),
    pager(params, page, (p) => ctx.go("trainings", p)));
  if (live(page)) ctx.refreshIn(2000);
}

