// The management web UI in a real browser: Debian's chromium, driven by playwright-core,
// against `actormq serve` on ephemeral ports. It logs in through the form, sees a queue
// the test declared (and filled) through the API with its depth, publishes a message
// through the queue page, gets one back, purges the queue, and checks each result
// through the API. Exits non-zero on any failure.
//
// Environment:
//   PLAYWRIGHT_DIR   where playwright-core is installed (npm --prefix); default
//                    $CARGO_TARGET_DIR/browser-test
//   ACTORMQ_BIN      the broker binary; default $CARGO_TARGET_DIR/debug/actormq
//   CHROMIUM         the browser; default /usr/bin/chromium
//   SCREENSHOTS      a directory to write the main pages' screenshots to (with some
//                    traffic from `actormq perf` first, so the plots have lines);
//                    `SCREENSHOTS=docs/screenshots` refreshes the documentation's

import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
// Relative paths (CI's default target dir is `target`) are taken from the repository.
const TARGET = resolve(ROOT, process.env.CARGO_TARGET_DIR || "target");
const BIN = resolve(ROOT, process.env.ACTORMQ_BIN || join(TARGET, "debug", "actormq"));
const PW_DIR = resolve(ROOT, process.env.PLAYWRIGHT_DIR || join(TARGET, "browser-test"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS ? resolve(process.env.SCREENSHOTS) : null;
const DEADLINE_MS = 20000;
const AUTH = "Basic " + Buffer.from("guest:guest").toString("base64");

const { chromium } = createRequire(join(PW_DIR, "package.json"))("playwright-core");

function fail(message) {
  throw new Error(message);
}

// Starts the broker; resolves with its addresses once it printed them.
function startBroker(dir) {
  const env = {
    ...process.env,
    ACTORMQ__SERVER__BIND: "127.0.0.1:0",
    ACTORMQ__AMQP__BIND: "127.0.0.1:0",
    ACTORMQ__HTTP__BIND: "127.0.0.1:0",
    ACTORMQ__BROKER__WORKERS: "2",
    ACTORMQ__STORAGE__DATA_DIR: join(dir, "data"),
    RUST_LOG: "warn",
  };
  const proc = spawn(BIN, ["serve"], { cwd: dir, env, stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((ok, ko) => {
    const found = {};
    const timer = setTimeout(() => ko(new Error("the broker did not print its addresses")), DEADLINE_MS);
    proc.on("exit", (code) => ko(new Error(`the broker exited (${code}) before listening`)));
    createInterface({ input: proc.stdout }).on("line", (line) => {
      let m;
      if ((m = line.match(/^actormq management API on (http:\/\/[^/]+)\//))) found.http = m[1];
      if ((m = line.match(/^actormq listening on (\S+)$/))) {
        found.native = m[1];
        clearTimeout(timer);
        if (!found.http) ko(new Error("no management API address printed"));
        else ok({ proc, ...found });
      }
    });
  });
}

async function api(base, method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: AUTH, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// Waits until the element's text is `want` (the page redraws after each action).
async function waitText(page, selector, want) {
  try {
    await page.waitForFunction(
      ([sel, w]) => {
        const el = document.querySelector(sel);
        return el !== null && el.textContent.trim() === w;
      },
      [selector, want],
      { timeout: DEADLINE_MS },
    );
  } catch (e) {
    const got = await page.locator(selector).first().textContent().catch(() => "(absent)");
    fail(`${selector}: wanted "${want}", found "${got}" (${e.message.split("\n")[0]})`);
  }
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, name + ".png"), fullPage: true });
}

// Some traffic for the screenshots' plots: `actormq perf` in the background.
function traffic(native, seconds) {
  return spawn(BIN, ["perf", "--server", native, "--rate", "300", "--duration", String(seconds), "--queues", "2", "--consumers", "2", "--prefix", "demo"], { stdio: "ignore" });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function main() {
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), "actormq-ui-"));
  const broker = await startBroker(dir);
  const base = broker.http;
  let browser;
  let perf;
  try {
    // The queue, declared and filled through the API.
    await api(base, "PUT", "/api/queues/%2F/ui-test", { durable: true });
    for (let i = 0; i < 3; i++) {
      const r = await api(base, "POST", "/api/exchanges/%2F/amq.default/publish", {
        routing_key: "ui-test", payload: `m${i}`, payload_encoding: "string", properties: {},
      });
      if (!r.routed) fail("a message published through the API was not routed");
    }

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("dialog", (d) => d.accept());
    page.setDefaultTimeout(DEADLINE_MS);

    // Log in.
    await page.goto(base + "/");
    await page.fill("#login-user", "guest");
    await page.fill("#login-password", "wrong");
    await page.click("#login-submit");
    await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0);
    await page.fill("#login-password", "guest");
    await page.click("#login-submit");
    await page.waitForSelector("#total-queues");
    await waitText(page, "#who", "guest (administrator)");
    if (SHOTS) {
      // The plots show what was sampled while someone looked: let the page poll
      // through some traffic first.
      mkdirSync(SHOTS, { recursive: true });
      perf = traffic(broker.native, 90);
      await sleep(45000);
      await shot(page, "overview");
    }

    // The queue with its depth.
    await page.click('#nav a[data-page="queues"]');
    await waitText(page, 'tr[data-queue="ui-test"] td.q-ready', "3");
    await shot(page, "queues");
    // The list is paged and filtered by the server.
    await page.fill("#queue-filter-name", "no-such-queue");
    await page.click('#queue-filter button[type="submit"]');
    await page.waitForSelector("#queues-table td >> text=No queues.");
    await page.fill("#queue-filter-name", "ui-");
    await page.click('#queue-filter button[type="submit"]');
    await waitText(page, 'tr[data-queue="ui-test"] td.q-ready', "3");

    // Publish through the page.
    await page.click('tr[data-queue="ui-test"] a.queue-link');
    await waitText(page, "#queue-name", "ui-test");
    await waitText(page, "#queue-ready", "3");
    await page.fill("#publish-payload", "from the browser");
    await page.click("#publish-submit");
    await waitText(page, "#notice", "Message published.");
    await waitText(page, "#queue-ready", "4");
    let q = await api(base, "GET", "/api/queues/%2F/ui-test");
    if (q.messages_ready !== 4) fail(`after publishing through the page: ${q.messages_ready} ready, not 4`);

    // Get one back (requeued: the depth stays).
    await page.click("#get-submit");
    await waitText(page, "#get-result .got-message pre", "m0");
    await shot(page, "queue");

    // Purge.
    await page.click("#purge-button");
    await waitText(page, "#notice", "Queue purged.");
    await waitText(page, "#queue-ready", "0");
    q = await api(base, "GET", "/api/queues/%2F/ui-test");
    if (q.messages !== 0) fail(`after purging through the page: ${q.messages} messages, not 0`);

    // The other pages draw what the API says.
    await page.click('#nav a[data-page="exchanges"]');
    await page.waitForSelector("#exchanges-table td >> text=amq.topic");
    await shot(page, "exchanges");
    await page.click('#nav a[data-page="connections"]');
    await page.waitForSelector("#connections-table");
    await shot(page, "connections");
    await page.click('#nav a[data-page="users"]');
    await page.waitForSelector("#users-table td >> text=guest");
    // Definitions: exported as a download, imported from a file (a new vhost in it).
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-definitions")]);
    if (!download.suggestedFilename().endsWith(".json")) fail("the export is not a JSON file");
    await page.setInputFiles("#import-file", {
      name: "defs.json", mimeType: "application/json",
      buffer: Buffer.from(JSON.stringify({ vhosts: [{ name: "imported-from-ui" }] })),
    });
    await page.click('#import-definitions button[type="submit"]');
    await waitText(page, "#notice", "Definitions imported.");
    const vhosts = await api(base, "GET", "/api/vhosts");
    if (!vhosts.some((v) => v.name === "imported-from-ui")) fail("the imported vhost is not there");
    await shot(page, "users");

    if (errors.length) fail("errors in the page: " + errors.join("; "));
    console.log(`browser test of the management UI passed in ${Date.now() - started} ms`);
  } finally {
    if (perf) perf.kill("SIGTERM");
    if (browser) await browser.close();
    const exited = new Promise((ok) => broker.proc.on("exit", ok));
    broker.proc.kill("SIGTERM");
    let timer;
    await Promise.race([exited, new Promise((ok) => (timer = setTimeout(ok, DEADLINE_MS)))]);
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("browser test of the management UI FAILED: " + e.message);
  process.exit(1);
});
