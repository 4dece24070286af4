// Swagger UI at /docs in headless Chromium, under the content security policy the server sends:
// it shows the API's operations and runs "Try it out" on /healthz, with no policy violation,
// console error, page error or request to another origin. Prints "ALL CHECKS PASSED" last.
// Usage: node docs.mjs CHROMIUM BASE_URL

import puppeteer from "puppeteer-core";

const [chromium, base] = process.argv.slice(2);
const origin = new URL(base).origin;
const problems = [];
function check(condition, what) {
  if (!condition) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", (m) => {
    if (m.type() === "error" || m.text().includes("Content Security Policy")) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith("data:") && new URL(url).origin !== origin) problems.push(`request to another origin: ${url}`);
  });
  await page.evaluateOnNewDocument(() => {
    window.violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.violations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
  });

  const response = await page.goto(`${base}/docs/`, { waitUntil: "networkidle0" });
  const policy = response.headers()["content-security-policy"] || "";
  check(policy.includes("script-src 'self'"), `/docs is sent with a policy: ${policy}`);
  await page.waitForSelector(".swagger-ui .info .title");
  const title = await page.$eval(".swagger-ui .info .title", (e) => e.textContent);
  check(title.includes("muscle"), `the document's title shows: ${title}`);
  const operations = await page.$$eval(".opblock", (l) => l.length);
  check(operations >= 10, `${operations} operations listed`);

  // "Try it out" on /healthz: a request from the page to its own origin (connect-src).
  await page.click("#operations-operations-healthz .opblock-summary");
  await page.waitForSelector("#operations-operations-healthz .try-out__btn");
  await page.click("#operations-operations-healthz .try-out__btn");
  await page.click("#operations-operations-healthz .execute");
  await page.waitForSelector("#operations-operations-healthz .live-responses-table tbody .response-col_status");
  const status = await page.$eval("#operations-operations-healthz .live-responses-table tbody .response-col_status", (e) => e.textContent.trim());
  check(status.startsWith("200"), `Try it out on /healthz answered ${status}`);

  const violations = await page.evaluate(() => window.violations);
  check(violations.length === 0, `no policy violation ${JSON.stringify(violations)}`);
  check(problems.length === 0, `no console error or foreign request ${JSON.stringify(problems)}`);
  console.log("ALL CHECKS PASSED");
} finally {
  await browser.close();
}
