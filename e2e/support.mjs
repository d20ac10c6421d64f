// Shared pieces of the browser end-to-end tests: what the frontend is
// allowed to see fail, a watcher that collects console errors and failed
// requests per page, the login flow, and a small step runner that adds
// screenshots and diagnostics to a failing step.
//
// Everything waits on events (page functions, locators, responses); the
// timeouts only turn a hang into a readable failure.

import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { startWorkshop, launchBrowser, RESULTS_DIR } from './harness.mjs';

// The machine is slow (2 cores, maybe compiling): generous limits, which
// only bound waits for events, never a sleep.
export const WAIT_MS = 180_000;
export const STEP_TIMEOUT_MS = 600_000;

export const APP_READY = () =>
  Boolean(window.app && window.app.vueAppReady && window.app.graph && !document.getElementById('splash-loader'));

// ---------------------------------------------------------------------------
// What the frontend is allowed to see fail (docs comfyui-api.md §3.5 and the
// frontend study §3). Everything else is a failure.

/** 404s that stock ComfyUI answers too and the frontend handles silently. */
export function isTolerated404(url, origin) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.origin !== origin) return false;
  const p = u.pathname; // still percent-encoded: %2F stays %2F
  return (
    p === '/user.css' ||
    p === '/api/userdata/user.css' ||
    (p === '/api/userdata' && u.searchParams.has('dir')) ||
    p === '/api/userdata/comfy.templates.json' ||
    p === '/api/userdata/workflows%2F.index.json' ||
    p === '/api/experiment/models' || p.startsWith('/api/experiment/models/')
  );
}

/** console.error lines the unmodified frontend prints against stock ComfyUI. */
export const INTRINSIC_CONSOLE_ERRORS = ['ComfyApp graph accessed before initialization'];

/**
 * Collects everything that went wrong in a page: console errors, uncaught
 * exceptions, failed requests and HTTP error responses. Each entry is
 * classified as tolerated (with the reason) or not.
 */
export class PageWatcher {
  constructor(page, who, origin) {
    this.page = page;
    this.who = who;
    this.origin = origin;
    this.entries = [];
    this.pending = [];
    this.generation = 0; // bumped by each navigation the test itself makes
    this.requestGeneration = new WeakMap();
    this.probes = []; // URLs the test itself requests expecting an error
    this.seq = 0;

    page.on('request', (req) => this.requestGeneration.set(req, this.generation));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      const where = msg.location()?.url || '';
      let tolerated = null;
      if (INTRINSIC_CONSOLE_ERRORS.some((t) => text === t || text.startsWith(t))) {
        tolerated = 'intrinsic frontend message';
      } else if (/^Failed to load resource: the server responded with a status of 404\b/.test(text)) {
        if (isTolerated404(where, origin)) tolerated = 'browser log line of a tolerated 404';
        else if (this.isProbe(where)) tolerated = "browser log line of the test's own probe";
      }
      this.add('console.error', `${text}${where ? `  (at ${where})` : ''}  [page: ${page.url()}]`, tolerated);
    });
    page.on('pageerror', (err) => {
      this.add('pageerror', `${err.name}: ${err.message}\n      ${(err.stack || '').split('\n').slice(1, 4).join('\n      ')}`, null);
    });
    page.on('response', (resp) => {
      const status = resp.status();
      if (status < 400) return;
      const req = resp.request();
      const url = resp.url();
      let tolerated = null;
      if (status === 404 && isTolerated404(url, origin)) tolerated = 'tolerated 404';
      else if (this.isProbe(url)) tolerated = "the test's own probe";
      this.add('response', `${status} ${req.method()} ${url}`, tolerated);
    });
    page.on('requestfailed', (req) => {
      const errorText = req.failure()?.errorText || '?';
      const gen = this.requestGeneration.get(req);
      const label = `${req.method()} ${req.url()}: ${errorText}`;
      this.pending.push(
        (async () => {
          let tolerated = null;
          if (errorText === 'net::ERR_ABORTED') {
            const resp = await req.response().catch(() => null);
            if (resp && resp.ok()) tolerated = `aborted after a ${resp.status()} response (empty-body oddity)`;
            // Blink cancels the body of any stylesheet answered with an HTTP
            // error, so a tolerated 404 of /user.css always comes with this.
            else if (resp && resp.status() === 404 && req.resourceType() === 'stylesheet' && isTolerated404(req.url(), this.origin)) {
              tolerated = 'Chromium cancels a stylesheet answered 404 (the 404 itself is tolerated)';
            }
            else if (gen !== undefined && gen < this.generation) tolerated = "aborted by the test's own navigation";
          }
          this.add('requestfailed', label, tolerated);
        })(),
      );
    });
  }

  add(kind, text, tolerated) {
    this.entries.push({ kind, text, tolerated, who: this.who, seq: this.seq++ });
  }

  isProbe(url) {
    return this.probes.includes(url);
  }

  /** Call right before the test navigates the page itself (reload, goto). */
  beginNavigation() {
    this.generation += 1;
  }

  async settled() {
    // requestfailed handlers may add entries while we wait.
    while (this.pending.length) await Promise.all(this.pending.splice(0));
    return this.entries;
  }

  async unexpected() {
    return (await this.settled()).filter((e) => !e.tolerated);
  }
}

export function formatEntries(entries) {
  return entries.map((e) => `  [${e.who}] ${e.kind}: ${e.text}${e.tolerated ? `   -- tolerated: ${e.tolerated}` : ''}`).join('\n');
}

/**
 * Fails with the list of unexpected entries of `watchers`; `since` maps a
 * watcher to the number of its entries to skip (those already checked).
 */
export async function assertClean(watchers, when, since = new Map()) {
  const bad = [];
  for (const w of watchers) bad.push(...(await w.unexpected()).filter((e) => e.seq >= (since.get(w) || 0)));
  if (bad.length) {
    assert.fail(`${bad.length} unexpected console error(s)/failed request(s) ${when}:\n${formatEntries(bad)}`);
  }
}

// ---------------------------------------------------------------------------
// The frontend.

export async function loginThroughForm(page, base, user) {
  const resp = await page.goto(`${base}/`);
  assert.ok(resp, 'no response for /');
  const landed = new URL(page.url());
  assert.equal(landed.pathname, '/login', `an anonymous GET / should end on /login, ended on ${page.url()}`);
  await page.locator('input[name=username]').fill(user.name);
  await page.locator('input[name=password]').fill(user.password);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/', { timeout: WAIT_MS }),
    page.locator('button[type=submit]').click(),
  ]);
  await waitForApp(page);
}

export function waitForApp(page) {
  return page.waitForFunction(APP_READY, null, { timeout: WAIT_MS, polling: 250 });
}

/** The Templates dialog the frontend opens by itself for a brand-new user. */
export function templatesDialog(page) {
  return page.locator('[role=dialog][aria-labelledby="global-workflow-template-selector"]');
}

export async function nodeTypes(page) {
  return page.evaluate(() => window.app.graph.nodes.map((n) => n.type));
}

/** Resolves after the page has painted twice (e.g. before a screenshot). */
export function painted(page) {
  return page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

export async function screenshot(page, name) {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, name);
  await page.screenshot({ path: file });
  return file;
}

// ---------------------------------------------------------------------------
// The step runner.

/**
 * Registers the before/after hooks of a suite (one workshop, one browser)
 * and returns the shared state plus `step`, `newWatchedPage` and
 * `finalCheck`. Call it inside `describe`.
 */
export function workshopSuite(workshopOptions = {}) {
  const s = {
    ws: undefined, // the running workshop
    browser: undefined,
    contexts: [],
    watchers: [],
    pages: {}, // label -> page, for failure screenshots
    done: new Set(), // names of the steps that succeeded
  };

  before(async () => {
    s.ws = await startWorkshop(workshopOptions);
    s.browser = await launchBrowser();
  }, { timeout: STEP_TIMEOUT_MS });

  after(async () => {
    for (const c of s.contexts) await c.close().catch(() => {});
    if (s.browser) await s.browser.close().catch(() => {});
    if (s.ws) await s.ws.stop();
  }, { timeout: STEP_TIMEOUT_MS });

  /**
   * A fresh browser context (its own cookies: one participant) with one
   * watched page. `onPage` runs before anything loads in the page, e.g. to
   * listen to its WebSockets from the start.
   */
  s.newWatchedPage = async (label, onPage) => {
    const context = await s.browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    s.contexts.push(context);
    const page = await context.newPage();
    if (onPage) onPage(page);
    const watcher = new PageWatcher(page, label, s.ws.url);
    s.watchers.push(watcher);
    s.pages[label] = page;
    return { context, page, watcher };
  };

  /**
   * Runs one step; on failure adds screenshots, collected errors and the
   * server's log tail. A step whose `needs` did not all succeed is skipped.
   * A step returns the watchers of the pages it drove; it counts as done
   * (for later steps) before those are checked for errors, so an
   * unexpected console error fails this step without hiding the later
   * steps' results.
   */
  s.step = (name, needs, fn) => {
    it(name, { timeout: STEP_TIMEOUT_MS }, async (t) => {
      const missing = needs.filter((n) => !s.done.has(n));
      if (!s.ws) {
        assert.fail('the workshop did not start (see the before hook)');
      }
      if (missing.length) {
        t.skip(`needs the earlier step(s) ${missing.join(', ')}, which failed`);
        return;
      }
      const since = new Map(s.watchers.map((w) => [w, w.seq]));
      try {
        const check = (await fn()) || [];
        s.done.add(name);
        await assertClean(check, `during step ${name.split('.')[0]}`, since);
      } catch (err) {
        const shots = [];
        await mkdir(RESULTS_DIR, { recursive: true });
        for (const [label, page] of Object.entries(s.pages)) {
          if (page.isClosed()) continue;
          const file = path.join(RESULTS_DIR, `failure-${name.replace(/\W+/g, '_').slice(0, 40)}-${label}.png`);
          try {
            await page.screenshot({ path: file, timeout: 30_000 });
            shots.push(`${file} (${page.url()})`);
          } catch { /* the page may be unusable */ }
        }
        const entries = [];
        for (const w of s.watchers) entries.push(...(await w.settled()));
        err.message +=
          `\n\n=== step "${name}" failed ===` +
          `\nscreenshots:\n  ${shots.join('\n  ') || '(none)'}` +
          `\nall collected console errors / failed requests (tolerated ones marked):\n${formatEntries(entries) || '  (none)'}` +
          `\n${s.ws.diagnostics()}`;
        throw err;
      }
    });
  };

  /** The last test of a file: no page logged anything unexpected, ever. */
  s.finalCheck = (name) => {
    it(name, { timeout: STEP_TIMEOUT_MS }, async () => {
      assert.ok(s.ws && s.watchers.length, 'nothing ran');
      const all = [];
      for (const w of s.watchers) all.push(...(await w.settled()));
      const tolerated = all.filter((e) => e.tolerated);
      if (tolerated.length) {
        console.log(`tolerated console errors / failed requests (${tolerated.length}):\n${formatEntries(tolerated)}`);
      }
      try {
        await assertClean(s.watchers, 'over the whole run');
      } catch (err) {
        err.message += `\n${s.ws.diagnostics()}`;
        throw err;
      }
    });
  };

  return s;
}
