// Calls to the public API (the same routes pipelines use), with the bearer token kept in this
// tab's session storage once entered.

const TOKEN_KEY = "muscle.token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function request(path, accept) {
  const response = await fetch(path, { headers: { Accept: accept, ...headers() } });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path, "application/json")).json();
}

export async function getText(path) {
  return (await request(path, "text/plain, text/markdown, text/csv")).text();
}

/// A file the API serves (CSV, report.md) saved through a blob, so the token goes with it.
export async function download(path, filename) {
  const blob = await (await request(path, "*/*")).blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
