// What every browser scenario shares: Debian's chromium driven by
// playwright-core, pages whose console errors, uncaught exceptions, failed
// requests and 5xx answers fail the run, and screenshots at desktop and
// phone width written under the artifacts directory.
//
// A scenario is `node tests/browser/<name>.mjs` with its input as JSON in
// the environment variable BROWSER_ARGS (at least `base_url` and
// `artifacts`); it prints one JSON line (its findings) and exits 0, or
// prints what went wrong and exits 1.
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

export const args = JSON.parse(process.env.BROWSER_ARGS ?? "{}");
export const base = args.base_url;
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

const problems = [];
const pages = new Map();
/** 4xx answers the pages received (handled by the page; reported, not failed). */
export const clientErrors = [];
let browser;

export async function launch() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  return browser;
}

/** A fresh browser context (its own storage) with one watched page. */
export async function newPage(name, { viewport = DESKTOP, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
  watch(page, name);
  pages.set(name, page);
  return page;
}

export function watch(page, name) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    // The browser's own line for an HTTP error answer the page handled;
    // the answer itself is checked below.
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    problems.push(`${name}: console error: ${text}`);
  });
  page.on("pageerror", (error) => problems.push(`${name}: uncaught: ${error.message}`));
  page.on("requestfailed", (request) => {
    const failure = request.failure()?.errorText ?? "";
    // A page leaving (navigation, reload, closing) aborts its open requests.
    if (failure === "net::ERR_ABORTED") return;
    problems.push(`${name}: request failed: ${request.method()} ${request.url()} ${failure}`);
  });
  page.on("response", (response) => {
    const status = response.status();
    const url = new URL(response.url());
    if (status >= 500) problems.push(`${name}: ${status} from ${response.request().method()} ${url.pathname}`);
    else if (status >= 400) clientErrors.push({ page: name, status, method: response.request().method(), path: url.pathname });
  });
}

/** Writes `<name>-desktop.png` and `<name>-phone.png`; leaves the page at desktop width. */
export async function screenshots(page, name) {
  mkdirSync(args.artifacts, { recursive: true });
  const original = page.viewportSize() ?? DESKTOP;
  for (const [label, size] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(100);
    await page.screenshot({ path: `${args.artifacts}/${name}-${label}.png`, fullPage: true });
  }
  await page.setViewportSize(original);
}

/** Runs a scenario: prints its findings, or what failed, and exits. */
export async function scenario(body) {
  let result;
  try {
    await launch();
    result = await body();
  } catch (error) {
    problems.push(`scenario failed: ${error.stack ?? error}`);
    // What each page showed when it failed.
    mkdirSync(args.artifacts, { recursive: true });
    for (const [name, page] of pages) {
      await page.screenshot({ path: `${args.artifacts}/failed-${name}.png`, fullPage: true }).catch(() => {});
    }
  } finally {
    await browser?.close().catch(() => {});
  }
  if (problems.length) {
    console.log(JSON.stringify({ ok: false, problems, clientErrors }));
    process.exit(1);
  }
  console.log(JSON.stringify({ ok: true, result: result ?? null, clientErrors }));
  process.exit(0);
}
