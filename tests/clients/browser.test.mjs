// CORS with a real browser: browser/app.mjs (Apollo Client + graphql-ws, bundled by
// esbuild) runs in Debian's Chromium, driven headless by playwright-core, from a page on an
// origin in JOBQL_CORS_ORIGINS and from one that is not.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { apiKey, assertSeqsFrom, httpUrl, wsUrl } from "./jobql.mjs";

const CHROMIUM = process.env.JOBQL_CHROMIUM ?? "/usr/bin/chromium";
const allowedPage = process.env.JOBQL_ALLOWED_PAGE; // served from an origin in the allowlist
const blockedPage = process.env.JOBQL_BLOCKED_PAGE; // served from one that is not

let browser;
let userDataDir;

before(async () => {
  await build({
    entryPoints: [fileURLToPath(new URL("./browser/app.mjs", import.meta.url))],
    outfile: fileURLToPath(new URL("./browser/dist/app.js", import.meta.url)),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "warning",
  });
  userDataDir = mkdtempSync(join(tmpdir(), "jobql-chromium-"));
  // A fresh profile each run; no network beyond the two local servers.
  const context = await chromium.launchPersistentContext(userDataDir, {
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
  browser = context;
});

after(async () => {
  await browser?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

/** Open the page, wait for its report; with what the console said meanwhile. */
async function openApp(pageUrl) {
  const page = await browser.newPage();
  const logged = [];
  page.on("console", (message) => logged.push(message.text()));
  try {
    const url = new URL(pageUrl);
    url.search = new URLSearchParams({ http: httpUrl, ws: wsUrl, key: apiKey }).toString();
    await page.goto(url.toString());
    await page.waitForFunction(() => window.jobqlResult !== undefined, null, { timeout: 20_000 });
    const result = await page.evaluate(() => window.jobqlResult);
    return { result, logged };
  } finally {
    await page.close();
  }
}

test("from an allowed origin: the preflight passes, the job streams to its end, the cache learns it", async () => {
  const { result, logged } = await openApp(allowedPage);
  assert.equal(result.crashed, undefined, result.crashed);
  assert.equal(result.submitError, undefined, `${result.submitError}\n${logged.join("\n")}`);
  assert.equal(result.origin, new URL(allowedPage).origin);
  assert.notEqual(result.origin, new URL(httpUrl).origin); // cross-origin for real
  assert.equal(result.submitted.__typename, "V1SubmitJobSuccess");
  const { id } = result.submitted.job;
  assert.equal(result.streamError, undefined, result.streamError);
  assertSeqsFrom(1, result.events.map((e) => ({ __typename: e.type, seq: e.seq })));
  assert.equal(result.terminal.__typename, "V1JobSucceeded");
  assert.deepEqual(result.terminal.job, { __typename: "V1Job", id, status: "SUCCEEDED", cancelRequested: false });
  assert.deepEqual(result.cached, { __typename: "V1Job", id, status: "SUCCEEDED", cancelRequested: false });
  assert.ok(!logged.some((line) => line.includes("CORS")), logged.join("\n"));
});

test("from an origin not in JOBQL_CORS_ORIGINS: the browser blocks the submit, the server refuses the socket", async () => {
  const before = await jobCount();
  const { result, logged } = await openApp(blockedPage);
  assert.equal(result.crashed, undefined, result.crashed);
  assert.equal(result.submitted, undefined);
  assert.equal(result.submitError, "Failed to fetch");
  assert.ok(
    logged.some((line) => line.includes("has been blocked by CORS policy")),
    logged.join("\n"),
  );
  // The handshake is refused (HTTP 403): graphql-ws sees an error event, not a close code.
  assert.equal(result.streamError, "Socket closed");
  assert.equal(await jobCount(), before); // the preflight failed: nothing was submitted
});

async function jobCount() {
  // Server to server: no browser, no CORS.
  const response = await fetch(httpUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ query: "{ jobs(first: 100) { edges { node { id } } } }" }),
  });
  const { data } = await response.json();
  return data.jobs.edges.length;
}
