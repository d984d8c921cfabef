// Drives Debian's Chromium (headless, through playwright-core) for
// tests/live_view.rs. One JSON command per stdin line, one JSON answer per
// stdout line:
//   {"cmd":"open","url":U}            load U, wait until the page is ready
//   {"cmd":"state"}                   what the page shows now
//   {"cmd":"wait","js":EXPR,"timeout_ms":N}  wait until EXPR is true in the page
//   {"cmd":"type","selector":S,"text":T}     fill an input
//   {"cmd":"screenshot","path":P}     full-page PNG
//   {"cmd":"quit"}
// Every answer carries the requests the page made to any other host than
// the server's, and its console errors: the test expects none.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
const page = await context.newPage();
let origin = null;
const offHost = [];
const consoleErrors = [];
page.on("request", (r) => {
  const u = new URL(r.url());
  if (origin && u.origin !== origin && u.protocol !== "data:") offHost.push(r.url());
});
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

async function pageState() {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent ?? null;
    return {
      timeOrigin: performance.timeOrigin,
      navigations: performance.getEntriesByType("navigation").length,
      ready: document.body.dataset.ready === "1",
      commitEvents: Number(document.body.dataset.commitEvents),
      refreshes: Number(document.body.dataset.refreshes),
      cards: {
        products: text("card-products"), low: text("card-low"), units: text("card-units"),
        revenue: text("card-revenue"), rejected: text("card-rejected"), lag: text("card-lag"),
        lowAlarm: document.getElementById("card-low-box").classList.contains("alarm"),
      },
      rows: [...document.querySelectorAll("#stock-body tr")].map((tr) => ({
        product_id: tr.dataset.product, quantity_on_hand: Number(tr.dataset.quantity),
        reorder_level: Number(tr.dataset.reorderLevel), low: tr.dataset.low === "true",
        marked: tr.classList.contains("low") && tr.querySelector(".tag-low") !== null,
      })),
      stockFoot: text("stock-foot"),
      alerts: [...document.querySelectorAll("#alert-feed li")].map((li) => ({
        alert_id: li.dataset.alertId, product_id: li.dataset.product, kind: li.dataset.kind,
      })),
      rejections: [...document.querySelectorAll("#rejections li")].map((li) => ({
        code: li.dataset.code, count: Number(li.querySelector(".num").textContent.replace(/,/g, "")),
      })),
      bars: [...document.querySelectorAll("#sales-chart rect")].map((r) => ({ hour: Number(r.dataset.hour), source: r.dataset.source })),
      health: document.getElementById("health-pill").dataset.status ?? null,
      lastCommit: text("last-commit"),
    };
  });
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case "open":
      origin = new URL(cmd.url).origin;
      await page.goto(cmd.url, { waitUntil: "load" });
      await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 20000 });
      return pageState();
    case "state":
      return pageState();
    case "wait":
      await page.waitForFunction(cmd.js, null, { timeout: cmd.timeout_ms ?? 20000, polling: 100 });
      return pageState();
    case "type":
      await page.fill(cmd.selector, cmd.text);
      return pageState();
    case "screenshot":
      await page.screenshot({ path: cmd.path, fullPage: true });
      return pageState();
    case "quit":
      await browser.close();
      return { bye: true };
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    const cmd = JSON.parse(line);
    answer = { ok: true, state: await handle(cmd), offHost: [...offHost], consoleErrors: [...consoleErrors] };
  } catch (e) {
    answer = { ok: false, error: String(e && e.stack || e), offHost: [...offHost], consoleErrors: [...consoleErrors] };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (answer.state && answer.state.bye) break;
}
await browser.close().catch(() => {});
