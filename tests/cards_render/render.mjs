// Renders Adaptive Cards in Debian's headless Chromium with the official JS renderer.
//
// One browser for the whole run. Reads one JSON request per line on stdin and answers one JSON
// line per request on stdout:
//   request:  {"id": 1, "card": {...}, "screenshot": "/abs/out.png" | null,
//              "steps": [{"click": "Not mine"}, {"fill": ["Who owns this service?", "Bob"]}]}
//   answer:   {"id": 1, "events": [...], "executed": [...], "links": [...], "embedded": [...],
//              "text": "...", "offsite": [...], "error": null}
// The page is loaded from file:// and every other request is aborted and reported in
// "offsite"; the resolver maps every host name to nothing, so Chromium cannot reach any address.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const page_url = pathToFileURL(join(here, "render.html")).href;
const executablePath = process.env.DMARCBOT_CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "cards-render-"));

const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  "--disable-dev-shm-usage", "--hide-scrollbars", "--allow-file-access-from-files",
  "--host-resolver-rules=MAP * ~NOTFOUND",
];

function write(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

let context;
try {
  // launchPersistentContext with a fresh temporary profile (= --user-data-dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath, headless: true, args, viewport: { width: 560, height: 800 },
    deviceScaleFactor: 1, offline: true, serviceWorkers: "block",
  });
} catch (err) {
  write({ id: null, fatal: `cannot start ${executablePath}: ${err.message.split("\n")[0]}` });
  rmSync(profile, { recursive: true, force: true });
  process.exit(2);
}

const offsite = [];
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith("file://")) return route.continue();
  offsite.push(url);
  return route.abort("blockedbyclient");
});

const page = context.pages()[0] || await context.newPage();
const pageErrors = [];
page.on("pageerror", (err) => pageErrors.push(String(err.message || err)));
page.on("console", (msg) => {
  if (msg.type() === "error") pageErrors.push(msg.text());
});
try {
  await page.goto(page_url);
  await page.waitForFunction(() => typeof window.renderCard === "function", null,
                             { timeout: 10000 });
} catch (err) {
  write({ id: null, fatal: `render.html did not load: ${pageErrors.join("; ") || err.message}` });
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(2);
}

async function handle(req) {
  offsite.length = 0;
  pageErrors.length = 0;
  await page.evaluate(() => { window.__executed = []; });
  const events = await page.evaluate((card) => window.renderCard(card), req.card);
  for (const step of req.steps || []) {
    if (step.click) {
      await page.getByRole("button", { name: step.click, exact: true }).click({ timeout: 2000 });
    } else if (step.fill) {
      await page.getByLabel(step.fill[0]).fill(step.fill[1], { timeout: 2000 });
    }
  }
  if (req.screenshot) {
    await page.locator("#frame").screenshot({ path: req.screenshot });
  }
  const seen = await page.evaluate(() => ({
    executed: window.__executed,
    links: [...document.querySelectorAll("#card a")].map((a) => a.getAttribute("href")),
    embedded: [...document.querySelectorAll("#card img, #card script, #card iframe, " +
                                            "#card object, #card embed")].map((e) => e.tagName),
    text: document.getElementById("card").innerText,
  }));
  for (const message of pageErrors) events.push({ phase: "page", event: "Error", message });
  return { events, ...seen, offsite: [...offsite] };
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let req;
  try {
    req = JSON.parse(line);
    write({ id: req.id, error: null, ...(await handle(req)) });
  } catch (err) {
    write({ id: req ? req.id : null, error: String(err.message || err).split("\n")[0] });
  }
}
await context.close();
rmSync(profile, { recursive: true, force: true });
