// A small element builder and the number formats every page shares.

export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "line", "path", "text", "circle", "polyline", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    else if (k === "style") el.style.cssText = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

/// Replaces an element's children, skipping null/false ones (replaceChildren would print them).
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function pct(x, digits = 1) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : `${(x * 100).toFixed(digits)}%`;
}

export function num(x, digits = 3) {
  return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
}

export function signedPct(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const s = (x * 100).toFixed(digits);
  return `${x > 0 ? "+" : x < 0 ? "" : "±"}${s} pt`;
}

export function interval(i, format = pct) {
  return i ? `[${format(i.lower)}, ${format(i.upper)}]` : "";
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function statusBadge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

/// The verdict of an evaluation's `summary` (null until it succeeded).
export function verdictBadge(summary) {
  if (!summary) return h("span", { class: "badge none" }, "–");
  const text = { pass: "pass", fail: "fail", none: "no gate" }[summary.verdict];
  return h("span", { class: `badge ${summary.verdict}`, "data-verdict": summary.verdict }, text);
}

export function progressBar(done, total) {
  const share = total > 0 ? Math.min(1, done / total) : 0;
  return h("span", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": done, title: `${done} / ${total}` },
    h("span", { style: `width:${(share * 100).toFixed(1)}%` }));
}

export function errorBox(error) {
  const fields = error?.problem?.errors || [];
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, error?.status ? `${error.status}: ` : ""), error?.message || String(error),
    fields.length ? h("ul", {}, fields.slice(0, 20).map((f) => h("li", {}, `${f.line ? `line ${f.line}, ` : ""}${f.field}: ${f.message}`))) : null);
}

export function setTitle(text) {
  document.title = `${text} · muscle`;
}

/// Previous/next buttons over the API's cursors. The cursors of the pages seen so far are kept
/// in the `trail` parameter, so that "previous" can go back; `go({cursor, trail})` navigates.
export function cursorPager(params, nextCursor, go, { previous, next, previousId, nextId, note }) {
  const trail = (params.trail || "").split(",").filter(Boolean);
  return h("div", { class: "pager" },
    h("button", { type: "button", id: previousId, disabled: trail.length === 0, onclick: () => {
      const back = trail.slice(0, -1);
      go({ cursor: back[back.length - 1] || "", trail: back.join(",") });
    } }, previous),
    note ? h("span", { class: "small muted" }, note(trail.length + 1)) : null,
    h("button", { type: "button", id: nextId, disabled: !nextCursor, onclick: () =>
      go({ cursor: nextCursor, trail: [...trail, nextCursor].join(",") }) }, next));
}
