// A browser's EventSource on a job's eventsUrl: browser/events.html, from another origin, in
// Debian's Chromium driven headless by playwright-core. The server cuts the first response
// after 3 events (dropping.py); EventSource reconnects by itself with Last-Event-ID.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";
import { apiKey, httpUrl } from "./jobql.mjs";

const CHROMIUM = process.env.JOBQL_CHROMIUM ?? "/usr/bin/chromium";
const eventsPage = process.env.JOBQL_EVENTS_PAGE; // served from an origin in the allowlist

let browser;
let userDataDir;

before(async () => {
  userDataDir = mkdtempSync(join(tmpdir(), "jobql-chromium-"));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
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
});

after(async () => {
  await browser?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

test("EventSource follows a job through a dropped response: every event once, then complete", async () => {
  const page = await browser.newPage();
  const logged = [];
  page.on("console", (message) => logged.push(message.text()));
  try {
    const url = new URL(eventsPage);
    url.search = new URLSearchParams({ http: httpUrl, key: apiKey, dropAfter: "3" }).toString();
    await page.goto(url.toString());
    await page.waitForFunction(() => window.jobqlResult !== undefined, null, { timeout: 30_000 });
    const result = await page.evaluate(() => window.jobqlResult);
    assert.equal(result.crashed, undefined, `${result.crashed}\n${logged.join("\n")}`);
    assert.notEqual(new URL(eventsPage).origin, new URL(httpUrl).origin); // cross-origin for real
    assert.equal(result.completed, true, JSON.stringify(result));
    // Two connections: the first, cut after seq 3, and EventSource's own reconnect.
    assert.equal(result.opens, 2, JSON.stringify(result));
    assert.equal(result.errors, 1);
    const stored = result.events.filter((e) => e.seq !== null);
    assert.deepEqual(stored.map((e) => e.seq), stored.map((_, i) => i + 1)); // no gap, no repeat
    assert.ok(stored.length > 3, `only ${stored.length} events: the cut came after the end`);
    assert.deepEqual(stored.map((e) => e.lastEventId), stored.map((e) => String(e.seq)));
    assert.equal(stored[0].type, "V1JobQueued");
    assert.equal(stored.at(-1).type, "V1JobSucceeded");
    assert.equal(stored.filter((e) => e.type.startsWith("V1Job") && /Succeeded|Failed|Cancelled/.test(e.type)).length, 1);
    assert.ok(!logged.some((line) => line.includes("CORS")), logged.join("\n"));
  } finally {
    await page.close();
  }
});
