// The dashboard in headless Chromium, against the server tests/api/dashboard.rs set up. The
// config names the server, its token, and the API's own answers; every page is checked
// against them. Prints a line per check, "WAITING FOR PROGRESS" when the running
// evaluation's page is open (the Rust side then writes its remaining rows and answers on
// stdin), and "ALL CHECKS PASSED" last. Any console error, page error, failed request or
// request to another origin fails the run.

import { readFileSync, mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const origin = new URL(config.base).origin;
const problems = [];
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdin.once("line", resolve));

const pct = (x) => `${(x * 100).toFixed(1)}%`;
function check(condition, what) {
  if (!condition) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await puppeteer.launch({
  executablePath: config.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage();
page.setDefaultTimeout(15000);
// Chromium logs each HTTP error status as a console error too; the response handler below
// judges those, so that one expected 401 is not counted twice.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console error: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
page.on("request", (r) => {
  const url = r.url();
  if (!url.startsWith("data:") && new URL(url).origin !== origin) problems.push(`request to another origin: ${url}`);
});
page.on("response", (r) => {
  // The token form is reached through the one 401 the page expects before a token is set.
  if (r.status() >= 400 && !(r.status() === 401 && !tokenEntered)) problems.push(`HTTP ${r.status()} for ${r.url()}`);
});
let tokenEntered = false;

async function shot(name, fullPage = false) {
  if (!config.screenshots) return;
  mkdirSync(config.screenshots, { recursive: true });
  await page.screenshot({ path: `${config.screenshots}/${name}.png`, fullPage });
}

async function ready(section) {
  await page.waitForFunction((s) => document.body.dataset.ready === s, {}, section);
}

async function open(hash, section) {
  await page.evaluate(() => { delete document.body.dataset.ready; });
  await page.evaluate((h) => { location.hash = h; }, hash);
  await ready(section);
}

const renders = () => page.evaluate(() => Number(document.body.dataset.renders || 0));
/// Runs `action` and waits until the page has rendered again after it.
async function rerendered(action) {
  const before = await renders();
  await action();
  await page.waitForFunction((n) => Number(document.body.dataset.renders || 0) > n, {}, before);
}

/// Text whose WCAG contrast against what lies behind it is below AA (4.5:1, or 3:1 for large
/// text), on HTML text and on the quadrant's labels (SVG text over its cell).
async function lowContrast() {
  return page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const luminance = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    const large = (style) => parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    for (const el of document.querySelectorAll("body *")) {
      if (el.closest("svg") || !el.offsetParent) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      const style = getComputedStyle(el);
      const r = ratio(rgb(style.color).slice(0, 3), background(el));
      if (r < (large(style) ? 3 : 4.5)) bad.push(`${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}" ${r.toFixed(2)}:1`);
    }
    for (const g of document.querySelectorAll(".quadrant g.cell-group")) {
      const cell = rgb(getComputedStyle(g.querySelector("rect")).fill);
      for (const t of g.querySelectorAll("text")) {
        const style = getComputedStyle(t);
        const r = ratio(rgb(style.fill).slice(0, 3), cell);
        if (r < (large(style) ? 3 : 4.5)) bad.push(`quadrant "${t.textContent}" ${r.toFixed(2)}:1`);
      }
    }
    return bad;
  });
}

const text = (selector) => page.$eval(selector, (el) => el.textContent.trim());
const all = (selector, fn) => page.$$eval(selector, fn);

try {
  await page.setViewport({ width: 1600, height: 1000 });
  // "/" redirects to the dashboard, which asks for the token once.
  await page.goto(`${config.base}/`);
  check(new URL(page.url()).pathname === "/ui/", `"/" redirects to /ui/ (${page.url()})`);
  await page.waitForSelector("#token");
  tokenEntered = true;
  await page.type("#token", config.token);
  await page.keyboard.press("Enter");
  await ready("evaluations");
  check(await page.evaluate(() => !!sessionStorage.getItem("muscle.token")), "the token is kept in session storage");

  // Evaluations list.
  const rows = await all("#evaluations tbody tr", (trs) => trs.map((tr) => ({
    id: tr.dataset.id, status: tr.dataset.status,
    verdict: tr.querySelector(".verdict-cell [data-verdict]")?.dataset.verdict ?? null,
    nfr: tr.querySelector(".nfr-cell").firstChild?.textContent ?? "",
  })));
  check((await lowContrast()).length === 0, "evaluations list: AA contrast");
  check(rows.length === config.evaluations.length, `the list shows all ${config.evaluations.length} evaluations`);
  for (const e of config.evaluations) {
    const row = rows.find((r) => r.id === e.id);
    check(row && row.status === e.status, `list: ${e.name} is ${e.status}`);
    if (e.summary) {
      check(row.verdict === e.summary.verdict, `list: ${e.name} verdict ${e.summary.verdict}`);
      check(row.nfr === pct(e.summary.nfr), `list: ${e.name} nfr ${pct(e.summary.nfr)}`);
    }
  }
  await rerendered(() => page.select("#filter-status", "running"));
  check(await page.$eval("#evaluations tbody tr", (tr) => tr.dataset.status) === "running", "the status filter keeps the running evaluation alone");

  // One finished evaluation.
  const f = config.finished, r = f.report;
  await open(`#/evaluations/${f.id}`, "evaluations");
  await shot("evaluation");
  const verdict = await page.$eval("#verdict", (el) => el.dataset.verdict);
  check(verdict === (r.gate.passed ? "pass" : "fail"), `verdict ${verdict} as the gate says`);
  const checks = await all("#gate-checks li", (lis) => lis.map((li) => li.dataset.passed));
  check(JSON.stringify(checks) === JSON.stringify(r.gate.checks.map((c) => String(c.passed))), "each gate check with its outcome");
  check((await text("#metric-nfr .value")) === pct(r.metrics.nfr), `headline nfr ${pct(r.metrics.nfr)}`);
  check((await text("#metric-nfr .ci")) === `[${pct(r.intervals.nfr.lower)}, ${pct(r.intervals.nfr.upper)}]`, "nfr interval");
  check((await text("#metric-acc-old .value")) === pct(r.old.accuracy) && (await text("#metric-acc-new .value")) === pct(r.new.accuracy), "accuracy old and new");
  const cells = await all(".quadrant [data-flip]", (gs) => Object.fromEntries(gs.map((g) => [g.dataset.flip, Number(g.dataset.count)])));
  check(cells.negative === r.counts.negative_flips && cells.positive === r.counts.positive_flips
    && cells.both_correct === r.counts.both_correct && cells.both_wrong === r.counts.both_wrong, `quadrant counts ${JSON.stringify(cells)}`);
  const slices = await all(".slices [data-slice]", (gs) => gs.map((g) => g.dataset.slice));
  check(JSON.stringify(slices) === JSON.stringify(r.slices.slice(0, 40).map((s) => s.slice)), `slices worst first (${slices.length})`);
  check((await all(".slices .ci", (gs) => gs.length)) === r.slices.filter((s) => s.nfr_interval).slice(0, 40).length, "slice intervals drawn");
  const regressed = await all(".slices .regressed", (gs) => gs.map((g) => g.dataset.slice));
  check(JSON.stringify(regressed) === JSON.stringify(r.slices.slice(0, 40).filter((s) => s.regressed).map((s) => s.slice)), `regressed slices flagged (${regressed.length})`);
  check((await page.$eval("#slices-regressed", (p) => p.textContent)).startsWith(`${r.slices.filter((s) => s.regressed).length} regressed`), "the count of regressed slices is said");
  const contrast = await lowContrast();
  check(contrast.length === 0, `every text has AA contrast${contrast.length ? `: ${contrast.slice(0, 8).join("; ")}` : ""}`);
  const allRows = await all("#instances tbody tr", (trs) => trs.length);
  check(allRows === Math.min(50, r.n), `the instance table pages by 50 (${allRows})`);
  const firstIds = () => all("#instances tbody tr td:first-child > div:first-child", (ds) => ds.map((d) => d.textContent));
  const page1 = await firstIds();
  await rerendered(() => page.click("#instances-next"));
  const page2 = await firstIds();
  check(page2.length === Math.min(50, r.n - 50) && !page2.some((id) => page1.includes(id)), "the next page lists the next instances");
  await rerendered(() => page.click("#instances-previous"));
  check(JSON.stringify(await firstIds()) === JSON.stringify(page1), "the previous page lists the first instances again");

  // A quadrant cell filters the table: by click, and by keyboard.
  await rerendered(() => page.click('.quadrant [data-flip="negative"]'));
  check(!!(await page.$('.quadrant [data-flip="negative"][aria-pressed="true"]')), "the negative cell shows as pressed");
  let flips = await all("#instances tbody tr", (trs) => trs.map((tr) => tr.dataset.flip));
  check(flips.length === Math.min(50, r.counts.negative_flips) && flips.every((x) => x === "negative"), `negative cell: ${flips.length} negative flips listed`);
  const first = await page.$eval("#instances tbody tr", (tr) => ({ prompt: tr.querySelector(".prompt")?.textContent, picks: tr.querySelectorAll(".choices .picked").length }));
  check(first.prompt && first.prompt.length > 0 && first.picks === 2, "a flip row shows the prompt and both models' choices");
  await page.$eval('.quadrant [data-flip="positive"]', (g) => g.focus());
  await rerendered(() => page.keyboard.press("Enter"));
  flips = await all("#instances tbody tr", (trs) => trs.map((tr) => tr.dataset.flip));
  check(flips.length === Math.min(50, r.counts.positive_flips) && flips.every((x) => x === "positive"), "positive cell by keyboard: positive flips listed");
  const worst = r.slices[0];
  await rerendered(() => page.click('.quadrant [data-flip="negative"]'));
  await rerendered(() => page.select("#filter-slice", worst.slice));
  const inSlice = await all("#instances tbody tr", (trs) => trs.map((tr) => ({ flip: tr.dataset.flip, tags: tr.querySelector("td .small")?.textContent ?? "" })));
  check(inSlice.length === Math.min(50, worst.counts.negative_flips) && inSlice.every((x) => x.flip === "negative" && x.tags.includes(worst.slice)),
    `slice filter ${worst.slice} with the negative cell: ${inSlice.length} rows (the slice has ${worst.counts.negative_flips})`);

  // A generation evaluation: both outputs side by side, the words that differ marked.
  const g = config.generation;
  await open(`#/evaluations/${g.id}`, "evaluations");
  const shown = await all("#instances tbody tr", (trs) => trs.map((tr) => {
    const cells = tr.querySelectorAll("td");
    return { old: cells[3].querySelector(".out").textContent, new: cells[4].querySelector(".out").textContent,
      marked: tr.querySelectorAll("ins, del").length };
  }));
  check(shown.length === config.generation_instances.length, `generation: ${shown.length} instances listed`);
  config.generation_instances.forEach((i, k) => {
    check(shown[k].old === (i.old.output ?? "") && shown[k].new === (i.new.output ?? ""), `generation ${i.id}: both outputs shown whole`);
    check((shown[k].marked > 0) === ((i.old.output ?? "") !== (i.new.output ?? "")), `generation ${i.id}: differences marked only where the outputs differ`);
  });
  const served = g.report.provenance.new;
  const provenance = await text("#provenance-new");
  check(served.kind === "endpoint" && provenance.includes(`server: ${served.server}`) && provenance.includes(`system_fingerprint: ${served.system_fingerprint}`),
    `generation: the served side's provenance shown (${provenance})`);
  check((await text(".kv")).includes(`${g.spec.new.endpoint.model} served at ${g.spec.new.endpoint.url}`), "generation: the served side named in the header");
  await shot("generation", true);

  // A sampled evaluation: the expected rates, the verdict counts, each row's draws, the filter.
  const sm = config.sampled, sr = sm.report.sampled;
  await open(`#/evaluations/${sm.id}`, "evaluations");
  await shot("sampled", true);
  check((await text("#metric-sampled-expected-nfr .value")) === pct(sr.expected_nfr), `sampled: expected nfr ${pct(sr.expected_nfr)}`);
  check((await text("#metric-sampled-expected-nfr .ci")) === `[${pct(sr.intervals.expected_nfr.lower)}, ${pct(sr.intervals.expected_nfr.upper)}]`, "sampled: its interval");
  check((await text("#metric-sampled-expected-pfr .value")) === pct(sr.expected_pfr), "sampled: expected pfr");
  check((await text("#metric-sampled-worse .value")) === String(sr.reliably_worse)
    && (await text("#metric-sampled-better .value")) === String(sr.reliably_better)
    && (await text("#metric-sampled-none .value")) === String(sr.no_reliable_change),
  `sampled: ${sr.reliably_worse} worse, ${sr.reliably_better} better, ${sr.no_reliable_change} unchanged`);
  check((await text("#metric-sampled-greedy-reliable .value")) === `${sr.greedy_flips_reliable} of ${sr.greedy_flips}`
    && (await text("#metric-sampled-missed .value")) === String(sr.reliable_missed_by_greedy), "sampled: greedy flips against the verdicts");
  check((await lowContrast()).length === 0, "sampled: AA contrast");
  check((await all("#sampled-legend .draw", (ds) => ds.map((d) => d.className))).join() === "draw right,draw partial,draw wrong", "sampled: the strip's legend");
  const strips = () => all("#instances tbody tr", (trs) => trs.map((tr) => {
    const side = (name) => {
      const strip = tr.querySelector(`.draws[data-side="${name}"]`);
      return {
        p: strip?.querySelector(".p")?.textContent.trim(),
        draws: [...(strip?.querySelectorAll(".draw") || [])].map((d) => ({
          title: d.title, shade: d.classList.contains("right") ? "right" : d.classList.contains("wrong") ? "wrong" : "partial",
          background: getComputedStyle(d).backgroundColor,
        })),
      };
    };
    const verdict = tr.querySelector("[data-verdict]");
    return { id: tr.dataset.id, verdict: verdict?.dataset.verdict, verdictText: verdict?.textContent.trim(), old: side("old"), new: side("new") };
  }));
  const sampledRows = await strips();
  const word = { worse: "reliably worse", better: "reliably better", none: "no reliable change" };
  const q = (x) => (x === null || x === undefined ? "–" : x.toPrecision(2));
  check(sampledRows.length === config.sampled_first.length, `sampled: ${sampledRows.length} rows`);
  config.sampled_first.forEach((i, k) => {
    const row = sampledRows[k];
    const drawn = (side) => row[side].draws.length === sr.samples && i[side].samples.length === sr.samples
      && i[side].samples.every((d, n) => row[side].draws[n].title === `draw ${n + 1}, score ${d.score.toFixed(3)}: ${d.output}`
        && row[side].draws[n].shade === (d.score >= 1 ? "right" : d.score <= 0 ? "wrong" : "partial"))
      && row[side].p === `p(${side}) = ${i[side].p.toFixed(2)}`;
    check(row.id === i.id && row.verdict === i.sampled.verdict && row.verdictText === `${word[i.sampled.verdict]} (q = ${q(i.sampled.q_value)})`
      && drawn("old") && drawn("new"),
    `sampled ${i.id}: ${sr.samples} draws a side with their outputs and shades, p ${i.old.p.toFixed(2)} -> ${i.new.p.toFixed(2)}, verdict ${i.sampled.verdict} q ${q(i.sampled.q_value)}`);
  });
  // Right and wrong draws are told apart by colour, not only by class.
  const backgrounds = (shade) => new Set(sampledRows.flatMap((r) => [...r.old.draws, ...r.new.draws]).filter((d) => d.shade === shade).map((d) => d.background));
  const [rightBg, wrongBg] = [backgrounds("right"), backgrounds("wrong")];
  check(rightBg.size === 1 && wrongBg.size === 1 && [...rightBg][0] !== [...wrongBg][0], `sampled: right draws ${[...rightBg]}, wrong draws ${[...wrongBg]}`);
  // The verdict filter, across both pages of reliably better instances.
  await rerendered(() => page.select("#filter-verdict", "better"));
  check((await page.evaluate(() => new URLSearchParams(location.hash.split("?")[1] || "").get("verdict"))) === "better", "sampled: the filter is in the address");
  let better = (await strips()).map((r) => ({ id: r.id, verdict: r.verdict }));
  await rerendered(() => page.click("#instances-next"));
  better = better.concat((await strips()).map((r) => ({ id: r.id, verdict: r.verdict })));
  check(await page.$eval("#instances-next", (b) => b.disabled), "sampled: the better instances end on the second page");
  check(JSON.stringify(better.map((b) => b.id)) === JSON.stringify(config.sampled_better.map((i) => i.id)) && better.every((b) => b.verdict === "better")
    && better.length === sr.reliably_better,
  `sampled: the verdict filter lists the ${better.length} reliably better instances the API lists`);
  await rerendered(() => page.select("#filter-verdict", "worse"));
  if (sr.reliably_worse === 0) check(!!(await page.$("#no-instances")), "sampled: no instance is reliably worse, and none is listed");
  else check((await strips()).every((r) => r.verdict === "worse"), "sampled: the worse filter lists worse instances");
  await rerendered(() => page.click(".filters button"));
  check((await strips()).length === config.sampled_first.length && (await page.$eval("#filter-verdict", (s) => s.value)) === "", "sampled: clearing the filters lists every instance again");
  await open(`#/evaluations/${g.id}`, "evaluations");
  check(!(await page.$("#sampled")) && !(await page.$("#filter-verdict")) && !(await page.$("#instances .draws")) && !(await page.$("#instances [data-verdict]")),
    "without sampling: no sampled section, no verdict filter, no draws or verdicts in the rows");

  // The running evaluation updates itself.
  const run = config.running;
  await open(`#/evaluations/${run.id}`, "evaluations");
  check((await text("#status")).includes(`${run.progress.done} / ${run.progress.total}`), `running: ${run.progress.done} / ${run.progress.total} shown`);
  check(await page.$eval("#verdict", (el) => el.dataset.verdict) === "pending", "running: the verdict is pending");
  console.log("WAITING FOR PROGRESS");
  await nextLine();
  await page.waitForFunction((n) => document.querySelector("#status")?.textContent.includes(`${n} / ${n}`), { timeout: 20000 }, config.items);
  check(true, "running: the page showed the new progress without a reload");

  // Phone width: nothing wider than the window but the tables' own scrolling.
  await page.setViewport({ width: 390, height: 844 });
  await open(`#/evaluations/${f.id}`, "evaluations");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `phone width: no sideways scrolling (${overflow} px)`);
  await shot("evaluation-phone");
  await page.setViewport({ width: 1600, height: 1000 });

  // Trainings list and one training.
  await open("#/trainings", "trainings");
  const trainingRows = await all("#trainings tbody tr", (trs) => trs.map((tr) => tr.dataset.id));
  check(trainingRows.length === config.trainings.length && trainingRows.includes(config.training.id), "the trainings list");
  const t = config.training;
  await open(`#/trainings/${t.id}`, "trainings");
  await shot("training");
  check((await lowContrast()).length === 0, "training: AA contrast");
  const steps = t.history.filter((x) => x.kind === "train").length;
  const points = await page.$eval("#train-chart polyline", (p) => p.getAttribute("points").trim().split(/\s+/).length);
  check(points === steps, `train loss curve: ${points} points for ${steps} steps`);
  const epochs = t.history.filter((x) => x.kind === "validation").length;
  check((await all("#validation-chart circle:not(.mark)", (c) => c.length)) === epochs, `validation curve: ${epochs} epochs`);
  check((await text("#best-epoch")) === String(t.best_epoch) && !!(await page.$("#validation-chart .mark")), `best epoch ${t.best_epoch} marked`);
  check((await text("#adapter")).startsWith(t.adapter), `written adapter ${t.adapter}`);
  const nfrRow = await page.$$eval("#before-after-table tr[data-metric='Negative flip rate'] td", (tds) => tds.map((td) => td.textContent));
  const b = config.training_before.report.metrics.nfr, a = config.training_after.report.metrics.nfr;
  check(nfrRow[1] === pct(b) && nfrRow[2] === pct(a), `before/after nfr ${pct(b)} -> ${pct(a)}`);

  // Two evaluations side by side.
  await open(`#/compare?a=${f.id}&b=${config.compat.id}`, "compare");
  await shot("compare");
  check((await lowContrast()).length === 0, "compare: AA contrast");
  const nfrCompare = await page.$$eval("#compare-metrics tr[data-metric='Negative flip rate'] td", (tds) => tds.map((td) => td.textContent));
  check(nfrCompare[1] === pct(r.metrics.nfr) && nfrCompare[2] === pct(config.compat.report.metrics.nfr), "compare: nfr of A and B");
  check((await text("#show-fixed")).endsWith(`: ${config.fixed}`), `compare: ${config.fixed} no longer negative flips`);
  check((await text("#show-introduced")).endsWith(`: ${config.introduced}`), `compare: ${config.introduced} new negative flips`);
  await rerendered(() => page.click("#show-introduced"));
  const introducedRows = await all("#changed-flips tbody tr", (trs) => trs.length);
  check(introducedRows === Math.min(50, config.introduced), "compare: the new negative flips listed");

  check(problems.length === 0, `no console error and no request outside ${origin}${problems.length ? `:\n  ${problems.join("\n  ")}` : ""}`);
  console.log("ALL CHECKS PASSED");
} catch (error) {
  console.log(error.message);
  for (const p of problems) console.log(`  ${p}`);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
