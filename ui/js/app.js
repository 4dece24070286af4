// The dashboard's router: `#/evaluations`, `#/evaluations/ID`, `#/trainings`, `#/trainings/ID`
// and `#/compare?a=ID&b=ID`, each rendered from the public API into <main>.

import { ApiError, setToken, token } from "./api.js";
import { h, errorBox } from "./dom.js";
import { evaluationsPage, trainingsPage } from "./pages/lists.js";
import { evaluationPage } from "./pages/evaluation.js";
import { trainingPage } from "./pages/training.js";
import { comparePage } from "./pages/compare.js";

const view = document.getElementById("main");
let timer = null;
let generation = 0;

function parse() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(search));
  return { parts, params };
}

function route({ parts, params }) {
  const [section = "evaluations", id] = parts;
  if (section === "evaluations" && id) return { section, page: evaluationPage, params: { ...params, id } };
  if (section === "trainings" && id) return { section, page: trainingPage, params: { ...params, id } };
  if (section === "trainings") return { section, page: trainingsPage, params };
  if (section === "compare") return { section, page: comparePage, params };
  return { section: "evaluations", page: evaluationsPage, params };
}

const ctx = {
  go(path, params = {}) {
    const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
    const s = q.toString();
    location.hash = `#/${path}${s ? `?${s}` : ""}`;
  },
  refreshIn(ms) {
    const mine = generation;
    clearTimeout(timer);
    timer = setTimeout(() => { if (mine === generation) render(true); }, ms);
  },
};

function tokenForm(message) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  view.replaceChildren(h("h1", {}, "API token"),
    h("form", { class: "token-form", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); render(); } },
      h("p", { id: "token-help" }, message, " It is the server's MUSCLE_API_TOKEN; it stays in this tab only (session storage)."),
      h("label", { for: "token" }, "Bearer token"), input, h("button", { type: "submit" }, "Use this token")));
  input.focus();
}

async function render(refresh = false) {
  const mine = ++generation;
  clearTimeout(timer);
  const r = route(parse());
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.section === r.section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.getElementById("token-button").hidden = !token();
  const scroll = window.scrollY;
  try {
    const staging = document.createElement("div");
    await r.page(staging, r.params, ctx);
    if (mine !== generation) return;
    view.replaceChildren(...staging.childNodes);
    document.body.dataset.ready = r.section;
    // Counts finished renders, so that a test (or a user script) can wait for the next one.
    document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
    if (refresh) window.scrollTo(0, scroll);
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) {
      tokenForm(token() ? "The server refused this token." : "This server asks for a token.");
    } else {
      view.replaceChildren(errorBox(error));
    }
    document.body.dataset.ready = "error";
  }
}

document.getElementById("token-button").addEventListener("click", () => { setToken(""); tokenForm("Enter another token."); });
window.addEventListener("hashchange", () => { render(); view.focus({ preventScroll: true }); });
render();
