// End-to-end: the real, unmodified ComfyUI frontend (1.48.7) in headless
// Chromium against a real `comfyume serve` with the GPU simulator.
//
// The steps share one server and one browser and run in order:
//   1. alice logs in through the login form; the ComfyUI app starts.
//   2. the Templates dialog a new user gets shows the workshop template;
//      clicking it loads its graph onto the canvas (screenshot saved).
//  2b. opened again, the dialog lists ComfyUI's official gallery after the
//      workshop's templates: its Image category shows its first template
//      with its thumbnail (screenshot saved).
//   3. alice's page logged no console error and no request failed, except
//      the ones ComfyUI itself tolerates (listed in support.mjs, by URL).
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

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { USERS } from './harness.mjs';
import {
  WAIT_MS,
  workshopSuite,
  assertClean,
  loginThroughForm,
  waitForApp,
  templatesDialog,
  nodeTypes,
  painted,
  screenshot,
} from './support.mjs';

const TEMPLATE = 'invert-an-image';
const TEMPLATE_NODE_TYPES = ['EmptyImage', 'ImageBlur', 'ImageInvert', 'SaveImage', 'PreviewImage'];
/** The first template of the official gallery's Image category (0.11.41). */
const OFFICIAL_CATEGORY = 'Image';
const OFFICIAL_TEMPLATE = 'image_z_image_turbo';

// Step names that later steps depend on.
const S1 = '1. alice logs in through the login form and ComfyUI loads';
const S2 = '2. the Templates dialog offers the workshop template and loads it onto the canvas';
const S4 = '4. alice saves the workflow as "mine" and finds it in the Workflows sidebar after a reload';

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
  const suite = workshopSuite();
  const { step, newWatchedPage, done } = suite;
  let alice; // alice's page
  let aliceWatcher;

  // 1 ------------------------------------------------------------------------
  step(S1, [], async () => {
    const s = await newWatchedPage('alice');
    alice = s.page;
    aliceWatcher = s.watcher;
    await loginThroughForm(alice, suite.ws.url, USERS.alice);
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
    // The graph is drawn a moment before the workflow store switches its
    // active tab to the template: wait for the switch, then check it.
    const expectedPath = `workflows/${TEMPLATE}.json`;
    await alice
      .waitForFunction(
        (wanted) => window.app.extensionManager.workflow.activeWorkflow?.path === wanted,
        expectedPath,
        { timeout: WAIT_MS, polling: 100 },
      )
      .catch(() => {});
    const wf = await alice.evaluate(() => {
      const w = window.app.extensionManager.workflow.activeWorkflow;
      return { path: w?.path };
    });
    assert.equal(wf.path, expectedPath, 'the template should open as its own (unsaved) workflow');
    // Let the canvas draw the loaded graph before the picture.
    await painted(alice);
    await screenshot(alice, 'alice-template-loaded.png');
  });

  // 2b -----------------------------------------------------------------------
  step('2b. the official template gallery follows, with its thumbnails', [S2], async () => {
    await alice.evaluate(() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates'));
    const dialog = templatesDialog(alice);
    await dialog.waitFor({ state: 'visible', timeout: WAIT_MS });
    // A category of ComfyUI's own gallery (comfyui-workflow-templates),
    // listed after the workshop's, with its first template's card.
    await dialog.getByText(OFFICIAL_CATEGORY, { exact: true }).click();
    const card = dialog.locator(`[data-testid="template-workflow-${OFFICIAL_TEMPLATE}"]`);
    await card.waitFor({ state: 'visible', timeout: WAIT_MS });
    await alice.waitForFunction(
      (name) => [...document.querySelectorAll(`[data-testid="template-workflow-${name}"] img`)]
        .some((img) => img.complete && img.naturalWidth > 0),
      OFFICIAL_TEMPLATE,
      { timeout: WAIT_MS, polling: 250 },
    );
    await painted(alice);
    await screenshot(alice, 'alice-official-templates.png');
    await alice.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden', timeout: WAIT_MS });
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
    await screenshot(alice, 'alice-workflows-sidebar.png');
    return [aliceWatcher];
  });

  // 5 ------------------------------------------------------------------------
  step('5. bob, in his own context, does not see alice\'s "mine"', [S4], async () => {
    const { page: bob, watcher } = await newWatchedPage('bob');
    await loginThroughForm(bob, suite.ws.url, USERS.bob);
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
    await painted(bob);
    assert.equal(await bob.locator(MINE_ANYWHERE).count(), 0, 'bob\'s Workflows sidebar lists alice\'s "mine"');
    await screenshot(bob, 'bob-workflows-sidebar.png');

    // And the API agrees, with bob's session.
    const mineUrl = `${suite.ws.url}/api/userdata/workflows%2Fmine.json`;
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
    await anon.goto(`${suite.ws.url}/`);
    const u = new URL(anon.url());
    assert.equal(u.pathname, '/login', `anonymous GET / ended on ${anon.url()}`);
    assert.equal(u.searchParams.get('next'), '/', `the login redirect should carry next=/: ${anon.url()}`);
    await anon.locator('input[name=username]').waitFor({ state: 'visible' });
    assert.equal(await anon.evaluate(() => typeof window.app), 'undefined', 'the anonymous page runs the ComfyUI app');
    const check = [watcher];

    if (done.has(S1)) {
      aliceWatcher.beginNavigation();
      await alice.goto(`${suite.ws.url}/logout`);
      await alice.getByRole('button', { name: 'Log out' }).click();
      await alice.waitForURL((url) => url.pathname === '/login');
      assert.equal(new URL(alice.url()).pathname, '/login', `after /logout alice ended on ${alice.url()}`);
      aliceWatcher.beginNavigation();
      await alice.goto(`${suite.ws.url}/`);
      assert.equal(new URL(alice.url()).pathname, '/login', `after logging out, GET / ended on ${alice.url()}`);
      check.push(aliceWatcher);
    }
    return check;
  });

  // 7 ------------------------------------------------------------------------
  suite.finalCheck('7. no page logged an unexpected console error or failed request');
});
