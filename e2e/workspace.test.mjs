// End-to-end: the real, unmodified ComfyUI frontend (1.48.7) in headless
// Chromium against a real `comfyume serve` with the GPU simulator.
//
// The steps share one server and one browser and run in order:
//   1. alice logs in through the login form; the ComfyUI app starts.
//   2. the Templates dialog a new user gets shows the workshop template;
//      clicking it loads its graph onto the canvas (screenshot saved).
//   3. alice's page logged no console error and no request failed, except
//      the ones ComfyUI itself tolerates (listed below, by URL).
//   4. alice saves the workflow as "mine"; after a reload it is listed in
//      the Workflows sidebar.
//   5. bob, in a fresh context, does not see alice's "mine".
//   6. an anonymous visitor of / ends on /login; alice logs out and is sent
//      to /login too.
//   7. no page logged an unexpected error or failed request at any time.
//
// Run: cd e2e && npm ci && node --test   (or `node --test e2e/` from the
// repository root). COMFYUME_BIN overrides the binary (default
// target/debug/comfyume); CHROMIUM_PATH the browser (default /usr/bin/chromium).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { startWorkshop, launchBrowser, USERS, RESULTS_DIR } from './harness.mjs';

// The machine is slow (2 cores, maybe compiling): generous limits, which
// only bound waits for events, never a sleep.
const WAIT_MS = 180_000;
const STEP_TIMEOUT_MS = 600_000;

const TEMPLATE = 'invert-an-image';
const TEMPLATE_NODE_TYPES = ['EmptyImage', 'ImageBlur', 'ImageInvert', 'SaveImage', 'PreviewImage'];

// Step names that later steps depend on.
const S1 = '1. alice logs in through the login form and ComfyUI loads';
const S2 = '2. the Templates dialog offers the workshop template and loads it onto the canvas';
const S4 = '4. alice saves the workflow as "mine" and finds it in the Workflows sidebar after a reload';

const APP_READY = () =>
  Boolean(window.app && window.app.vueAppReady && window.app.graph && !document.getElementById('splash-loader'));

// ---------------------------------------------------------------------------
// What the frontend is allowed to see fail (docs comfyui-api.md §3.5 and the
// frontend study §3). Everything else is a failure.

/** 404s that stock ComfyUI answers too and the frontend handles silently. */
function isTolerated404(url, origin) {
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
    p === '/api/jobs' || p.startsWith('/api/jobs/') || // the queue API lands later
    p === '/api/experiment/models' || p.startsWith('/api/experiment/models/')
  );
}

/** console.error lines the unmodified frontend prints against stock ComfyUI. */
const INTRINSIC_CONSOLE_ERRORS = ['ComfyApp graph accessed before initialization'];

/**
 * What the frontend itself logs when /api/jobs answers 404 (fetchJobs.ts).
 * Tolerated only in a page that did get such a 404, i.e. as a consequence of
 * the tolerated one. Remove together with the /api/jobs entry above once
 * the queue API lands.
 */
const JOBS_404_CONSOLE_ERROR = '[Jobs API] Failed to fetch jobs: 404';

const isJobsUrl = (url) => {
  try {
    const p = new URL(url).pathname;
    return p === '/api/jobs' || p.startsWith('/api/jobs/');
  } catch {
    return false;
  }
};

/**
 * Collects everything that went wrong in a page: console errors, uncaught
 * exceptions, failed requests and HTTP error responses. Each entry is
 * classified as tolerated (with the reason) or not.
 */
class PageWatcher {
  constructor(page, who, origin) {
    this.page = page;
    this.who = who;
    this.origin = origin;
    this.entries = [];
    this.pending = [];
    this.generation = 0; // bumped by each navigation the test itself makes
    this.requestGeneration = new WeakMap();
    this.probes = []; // URLs the test itself requests expecting an error
    this.sawJobs404 = false;
    this.seq = 0;

    page.on('request', (req) => this.requestGeneration.set(req, this.generation));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      const where = msg.location()?.url || '';
      let tolerated = null;
      if (INTRINSIC_CONSOLE_ERRORS.some((t) => text === t || text.startsWith(t))) {
        tolerated = 'intrinsic frontend message';
      } else if (text === JOBS_404_CONSOLE_ERROR && this.sawJobs404) {
        tolerated = 'frontend log line of a tolerated /api/jobs 404';
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
      if (status === 404 && isJobsUrl(url)) this.sawJobs404 = true;
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

function formatEntries(entries) {
  return entries.map((e) => `  [${e.who}] ${e.kind}: ${e.text}${e.tolerated ? `   -- tolerated: ${e.tolerated}` : ''}`).join('\n');
}

/**
 * Fails with the list of unexpected entries of `watchers`; `since` maps a
 * watcher to the number of its entries to skip (those already checked).
 */
async function assertClean(watchers, when, since = new Map()) {
  const bad = [];
  for (const w of watchers) bad.push(...(await w.unexpected()).filter((e) => e.seq >= (since.get(w) || 0)));
  if (bad.length) {
    assert.fail(`${bad.length} unexpected console error(s)/failed request(s) ${when}:\n${formatEntries(bad)}`);
  }
}

// ---------------------------------------------------------------------------

async function loginThroughForm(page, base, user) {
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

function waitForApp(page) {
  return page.waitForFunction(APP_READY, null, { timeout: WAIT_MS, polling: 250 });
}

/** The Templates dialog the frontend opens by itself for a brand-new user. */
function templatesDialog(page) {
  return page.locator('[role=dialog][aria-labelledby="global-workflow-template-selector"]');
}

async function nodeTypes(page) {
  return page.evaluate(() => window.app.graph.nodes.map((n) => n.type));
}

/** Opens the Workflows sidebar and waits for its panel. */
async function openWorkflowsSidebar(page) {
  await page.locator('.workflows-tab-button').first().click();
  await page.locator('[data-testid="workflows-sidebar"]').waitFor({ state: 'visible', timeout: WAIT_MS });
}

const MINE_IN_BROWSE = '.comfyui-workflows-browse [data-testid="tree-node-root/mine.json"]';
const MINE_ANYWHERE = '[data-testid="tree-node-root/mine.json"], li[role=treeitem][aria-label="mine"]';
const WORKFLOWS_LISTING = (u) => {
  const url = new URL(u);
  return url.pathname === '/api/userdata' && url.searchParams.get('dir') === 'workflows';
};

// ---------------------------------------------------------------------------

describe('a participant workspace in the real ComfyUI frontend', { concurrency: false }, () => {
  let ws; // the running workshop
  let browser;
  const contexts = [];
  const watchers = [];
  const pages = {}; // label -> page, for failure screenshots
  let alice; // alice's page
  let aliceWatcher;
  const done = new Set();

  async function newWatchedPage(label) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    contexts.push(context);
    const page = await context.newPage();
    const watcher = new PageWatcher(page, label, ws.url);
    watchers.push(watcher);
    pages[label] = page;
    return { context, page, watcher };
  }

  /**
   * Runs one step; on failure adds screenshots, collected errors and the
   * server's log tail. A step whose `needs` did not all succeed is skipped.
   */
  function step(name, needs, fn) {
    it(name, { timeout: STEP_TIMEOUT_MS }, async (t) => {
      const missing = needs.filter((n) => !done.has(n));
      if (!ws) {
        assert.fail('the workshop did not start (see the before hook)');
      }
      if (missing.length) {
        t.skip(`needs the earlier step(s) ${missing.join(', ')}, which failed`);
        return;
      }
      const since = new Map(watchers.map((w) => [w, w.seq]));
      try {
        // A step returns the watchers of the pages it drove; it counts as
        // done (for later steps) before those are checked for errors, so
        // an unexpected console error fails this step without hiding the
        // later steps' results.
        const check = (await fn()) || [];
        done.add(name);
        await assertClean(check, `during step ${name.split('.')[0]}`, since);
      } catch (err) {
        const shots = [];
        await mkdir(RESULTS_DIR, { recursive: true });
        for (const [label, page] of Object.entries(pages)) {
          if (page.isClosed()) continue;
          const file = path.join(RESULTS_DIR, `failure-${name.replace(/\W+/g, '_').slice(0, 40)}-${label}.png`);
          try {
            await page.screenshot({ path: file, timeout: 30_000 });
            shots.push(`${file} (${page.url()})`);
          } catch { /* the page may be unusable */ }
        }
        const entries = [];
        for (const w of watchers) entries.push(...(await w.settled()));
        err.message +=
          `\n\n=== step "${name}" failed ===` +
          `\nscreenshots:\n  ${shots.join('\n  ') || '(none)'}` +
          `\nall collected console errors / failed requests (tolerated ones marked):\n${formatEntries(entries) || '  (none)'}` +
          `\n${ws.diagnostics()}`;
        throw err;
      }
    });
  }

  before(async () => {
    ws = await startWorkshop();
    browser = await launchBrowser();
  }, { timeout: STEP_TIMEOUT_MS });

  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    if (browser) await browser.close().catch(() => {});
    if (ws) await ws.stop();
  }, { timeout: STEP_TIMEOUT_MS });

  // 1 ------------------------------------------------------------------------
  step(S1, [], async () => {
    const s = await newWatchedPage('alice');
    alice = s.page;
    aliceWatcher = s.watcher;
    await loginThroughForm(alice, ws.url, USERS.alice);
    assert.equal(await alice.locator('#graph-canvas').count(), 1, 'the page has no #graph-canvas');
  });

  // 2 ------------------------------------------------------------------------
  step(S2, [S1], async () => {
    const dialog = templatesDialog(alice);
    await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
    const card = alice.locator(`[data-testid="template-workflow-${TEMPLATE}"]`);
    await card.waitFor({ state: 'visible', timeout: WAIT_MS });
    await card.click();
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
    await alice.waitForFunction(
      (wanted) => {
        const types = (window.app.graph?.nodes || []).map((n) => n.type);
        return wanted.every((t) => types.includes(t));
      },
      TEMPLATE_NODE_TYPES,
      { timeout: WAIT_MS, polling: 250 },
    );
    const types = await nodeTypes(alice);
    assert.deepEqual([...types].sort(), [...TEMPLATE_NODE_TYPES].sort(), `unexpected nodes on the canvas: ${JSON.stringify(types)}`);
    const wf = await alice.evaluate(() => {
      const w = window.app.extensionManager.workflow.activeWorkflow;
      return { path: w?.path };
    });
    assert.equal(wf.path, `workflows/${TEMPLATE}.json`, 'the template should open as its own (unsaved) workflow');
    // Let the canvas draw the loaded graph before the picture.
    await alice.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await mkdir(RESULTS_DIR, { recursive: true });
    await alice.screenshot({ path: path.join(RESULTS_DIR, 'alice-template-loaded.png') });
  });

  // 3 ------------------------------------------------------------------------
  step('3. no console errors and no failed requests in alice\'s page so far', [S1], async () => {
    await assertClean([aliceWatcher], 'while alice logged in and loaded the template');
  });

  // 4 ------------------------------------------------------------------------
  step(S4, [S2], async () => {
    const canvas = alice.locator('#graph-canvas');
    const box = await canvas.boundingBox();
    assert.ok(box, '#graph-canvas has no box');
    // Focus the canvas (not an input) so the keybinding reaches the app; an
    // empty spot well below the template's nodes.
    await canvas.click({ position: { x: Math.round(box.width / 2), y: Math.round(box.height * 0.85) } });
    await alice.keyboard.press('Control+s');
    const dialog = alice.getByRole('dialog', { name: 'Save workflow' });
    await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
    const input = dialog.getByRole('textbox');
    await input.fill('mine');
    const saved = alice.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/userdata/workflows%2Fmine.json',
      { timeout: WAIT_MS },
    );
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    const resp = await saved;
    assert.equal(resp.status(), 200, `saving answered ${resp.status()}: ${await resp.text().catch(() => '')}`);
    await alice.waitForFunction(() => document.title === 'mine - ComfyUI', null, { timeout: WAIT_MS, polling: 250 });
    const wf = await alice.evaluate(() => {
      const w = window.app.extensionManager.workflow.activeWorkflow;
      return { path: w.path, persisted: w.isPersisted, modified: w.isModified };
    });
    assert.deepEqual(wf, { path: 'workflows/mine.json', persisted: true, modified: false });

    // The file is on the server, with the template's graph.
    const stored = await alice.evaluate(async () => {
      const r = await fetch('/api/userdata/workflows%2Fmine.json', { cache: 'no-store' });
      return { status: r.status, body: r.ok ? await r.json() : await r.text() };
    });
    assert.equal(stored.status, 200, `GET /api/userdata/workflows%2Fmine.json answered ${stored.status}`);
    assert.deepEqual(
      stored.body.nodes.map((n) => n.type).sort(),
      [...TEMPLATE_NODE_TYPES].sort(),
      'the saved workflow does not hold the template graph',
    );

    aliceWatcher.beginNavigation();
    await alice.reload();
    await waitForApp(alice);
    // The frontend reopens the saved workflow from browser storage.
    await alice.waitForFunction(
      () => window.app.extensionManager.workflow.activeWorkflow?.path === 'workflows/mine.json',
      null,
      { timeout: WAIT_MS, polling: 250 },
    );
    assert.deepEqual((await nodeTypes(alice)).sort(), [...TEMPLATE_NODE_TYPES].sort(), 'after the reload the canvas lost the graph');
    await openWorkflowsSidebar(alice);
    const item = alice.locator(MINE_IN_BROWSE);
    await item.waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.equal((await item.innerText()).trim().split('\n')[0].trim(), 'mine', 'the saved workflow is not labelled "mine"');
    await mkdir(RESULTS_DIR, { recursive: true });
    await alice.screenshot({ path: path.join(RESULTS_DIR, 'alice-workflows-sidebar.png') });
    return [aliceWatcher];
  });

  // 5 ------------------------------------------------------------------------
  step('5. bob, in his own context, does not see alice\'s "mine"', [S4], async () => {
    const { page: bob, watcher } = await newWatchedPage('bob');
    await loginThroughForm(bob, ws.url, USERS.bob);
    // bob is new too: the Templates dialog opens by itself and is modal.
    const dialog = templatesDialog(bob);
    await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
    await bob.locator(`[data-testid="template-workflow-${TEMPLATE}"]`).waitFor({ state: 'visible', timeout: WAIT_MS });
    await bob.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });

    await openWorkflowsSidebar(bob);
    // Make the sidebar list settle on a fresh listing before asserting absence.
    const refresh = bob.locator('[data-testid="workflows-refresh-button"]');
    const listed = bob.waitForResponse((r) => WORKFLOWS_LISTING(r.url()), { timeout: WAIT_MS });
    await refresh.click();
    const listing = await listed;
    assert.ok([200, 404].includes(listing.status()), `bob's workflow listing answered ${listing.status()}`);
    await bob.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    assert.equal(await bob.locator(MINE_ANYWHERE).count(), 0, 'bob\'s Workflows sidebar lists alice\'s "mine"');
    await mkdir(RESULTS_DIR, { recursive: true });
    await bob.screenshot({ path: path.join(RESULTS_DIR, 'bob-workflows-sidebar.png') });

    // And the API agrees, with bob's session.
    const mineUrl = `${ws.url}/api/userdata/workflows%2Fmine.json`;
    watcher.probes.push(mineUrl);
    const api = await bob.evaluate(async () => {
      const l = await fetch('/api/userdata?dir=workflows&recurse=true&split=false&full_info=true', { cache: 'no-store' });
      const listText = await l.text();
      const f = await fetch('/api/userdata/workflows%2Fmine.json', { cache: 'no-store' });
      return { listStatus: l.status, listText, fileStatus: f.status };
    });
    if (api.listStatus === 200) {
      const list = JSON.parse(api.listText);
      assert.ok(Array.isArray(list), `bob's listing is not a JSON list: ${api.listText}`);
      const paths = list.map((e) => (typeof e === 'string' ? e : e.path));
      assert.ok(!paths.some((p) => /(^|\/)mine\.json$/.test(p)), `bob's listing includes mine.json: ${api.listText}`);
    } else {
      assert.equal(api.listStatus, 404, `bob's listing answered ${api.listStatus}: ${api.listText}`);
    }
    assert.equal(api.fileStatus, 404, `bob can read alice's workflows/mine.json (status ${api.fileStatus})`);
    return [watcher];
  });

  // 6 ------------------------------------------------------------------------
  step('6. an anonymous visitor of / ends on /login, and so does alice after logging out', [], async () => {
    const { page: anon, watcher } = await newWatchedPage('anonymous');
    await anon.goto(`${ws.url}/`);
    const u = new URL(anon.url());
    assert.equal(u.pathname, '/login', `anonymous GET / ended on ${anon.url()}`);
    assert.equal(u.searchParams.get('next'), '/', `the login redirect should carry next=/: ${anon.url()}`);
    await anon.locator('input[name=username]').waitFor({ state: 'visible' });
    assert.equal(await anon.evaluate(() => typeof window.app), 'undefined', 'the anonymous page runs the ComfyUI app');
    const check = [watcher];

    if (done.has(S1)) {
      aliceWatcher.beginNavigation();
      await alice.goto(`${ws.url}/logout`);
      assert.equal(new URL(alice.url()).pathname, '/login', `after /logout alice ended on ${alice.url()}`);
      aliceWatcher.beginNavigation();
      await alice.goto(`${ws.url}/`);
      assert.equal(new URL(alice.url()).pathname, '/login', `after logging out, GET / ended on ${alice.url()}`);
      check.push(aliceWatcher);
    }
    return check;
  });

  // 7 ------------------------------------------------------------------------
  it('7. no page logged an unexpected console error or failed request', { timeout: STEP_TIMEOUT_MS }, async () => {
    assert.ok(ws && watchers.length, 'nothing ran');
    const all = [];
    for (const w of watchers) all.push(...(await w.settled()));
    const tolerated = all.filter((e) => e.tolerated);
    if (tolerated.length) {
      console.log(`tolerated console errors / failed requests (${tolerated.length}):\n${formatEntries(tolerated)}`);
    }
    try {
      await assertClean(watchers, 'over the whole run');
    } catch (err) {
      err.message += `\n${ws.diagnostics()}`;
      throw err;
    }
  });
});
