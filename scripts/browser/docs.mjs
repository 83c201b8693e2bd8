// The /docs page in headless Chromium (playwright-core driving Debian's
// chromium): it loads, lists the routes, and a search executed from it with
// an API key returns the memory written before. Usage:
//   node docs.mjs URL API_KEY TEXT
import { chromium } from "playwright-core";

const [url, key, text] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`docs page: ${msg}`);
  process.exit(1);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  // Nothing may come from anywhere but engram itself (no CDN).
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(url)) foreign.push(r.url());
  });
  // What the page itself reports, to say why it did not render if it does not.
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(`${url}/docs`, { waitUntil: "load" });
  try {
    await page.waitForSelector(".opblock", { timeout: 60000 });
  } catch (e) {
    const shown = (await page.locator("#swagger-ui").innerText().catch(() => "")).slice(0, 2000);
    fail(`no operation rendered (${e.message})\n${problems.join("\n")}\npage shows:\n${shown}`);
  }
  const paths = await page.$$eval(".opblock-summary-path", (els) =>
    els.map((e) => e.getAttribute("data-path") || e.textContent.trim()),
  );
  for (const want of ["/v1/memories", "/v1/search", "/v1/ask", "/v1/quarantine", "/healthz"]) {
    if (!paths.some((p) => p.replace(/\u200b/g, "") === want)) {
      fail(`route ${want} not listed (listed: ${paths.join(", ")})`);
    }
  }
  console.log(`docs page lists ${paths.length} operations`);

  // Authorize with the API key as a bearer token.
  await page.click("button.authorize");
  const modal = page.locator(".modal-ux");
  await modal.waitFor();
  const bearer = modal.locator(".auth-container").filter({ hasText: "bearer" }).first();
  await bearer.locator("input").first().fill(key);
  await bearer.locator("button.authorize").click();
  await modal.locator("button.btn-done").first().click();

  // Run POST /v1/search from the page.
  const op = page.locator("#operations-search-search");
  await op.locator(".opblock-summary").click();
  // Swagger UI may open the operation already in try-out mode (then it shows
  // "Cancel" and "Reset" buttons, both `.try-out__btn`), so look for the one
  // labelled "Try it out" only, and wait for the panel to settle first.
  await op.locator(".try-out__btn").first().waitFor({ timeout: 30000 });
  const tryOut = op.locator(".try-out__btn", { hasText: "Try it out" });
  if ((await tryOut.count()) > 0) {
    await tryOut.first().click();
  }
  await op.locator("textarea.body-param__text").fill(JSON.stringify({ query: text, k: 3 }));
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor({ timeout: 30000 });
  const code = (await status.innerText()).trim();
  const body = await op.locator(".live-responses-table tr.response .response-col_description pre").first().innerText();
  if (code !== "200") fail(`search answered ${code}: ${body}`);
  if (!body.includes(text)) fail(`search did not find the memory: ${body}`);
  if (foreign.length) fail(`requests outside engram: ${foreign.join(", ")}`);
  console.log("docs page: a search run from it with the API key found the memory");
} finally {
  await browser.close();
}
