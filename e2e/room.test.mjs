// End-to-end: what a participant's canvas shows of the room, through
// ComfyUME's own frontend extension (served by the gateway, listed in
// /api/extensions; the frontend itself is unmodified), while an instructor
// steers the room through the admin API.
//
//   1. alice logs in; the panel shows her name and a way to log out.
//   2. the instructor broadcasts a message: it appears as a banner on her
//      canvas (screenshot alice-banner.png).
//   3. the instructor pauses the room: the canvas says so; a prompt alice
//      queues waits, and the canvas shows its place in the room's queue
//      (#1, next to start) (screenshot alice-paused-queued.png).
//   4. the instructor resumes the room: the prompt runs to its end, and the
//      pause notice and the queue line go away.
//   5. the instructor clears the broadcast: the banner goes.
//   6. alice shares her output from the panel ("Share to wall"), and bob's
//      /wall page shows it with her name (screenshot wall.png).
//   7. alice takes her work home: "Download my work" gives a zip holding
//      her output.
//   8. no page logged an unexpected error or failed request.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { USERS, ADMIN_TOKEN } from './harness.mjs';
import { WAIT_MS, workshopSuite, loginThroughForm, templatesDialog, painted, screenshot } from './support.mjs';

const S1 = '1. alice logs in and the panel shows her name';
const S2 = '2. a broadcast appears as a banner on her canvas';
const S3 = '3. a pause is shown, and a prompt queued meanwhile shows its place';
const S4 = '4. after resume the prompt runs and the notices go';

const MESSAGE = 'Eyes on the projector, please';

// A prompt that needs no model: an image, inverted, saved.
const PROMPT = {
  1: { class_type: 'EmptyImage', inputs: { width: 64, height: 64, batch_size: 1, color: 0 } },
  2: { class_type: 'ImageInvert', inputs: { image: ['1', 0] } },
  3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'room' } },
};

describe('the room on a participant\'s canvas', { concurrency: false }, () => {
  const suite = workshopSuite({ stepMs: 50 });
  const { step } = suite;
  let alice;
  let watcher;

  /** Calls the admin API as the instructor's tools do. */
  async function admin(method, path, body) {
    const r = await fetch(`${suite.ws.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    assert.equal(r.status, 200, `${method} ${path}: ${r.status} ${text}`);
    return JSON.parse(text);
  }

  const panel = () => alice.locator('#comfyume-room');

  step(S1, [], async () => {
    const s = await suite.newWatchedPage('alice');
    alice = s.page;
    watcher = s.watcher;
    await loginThroughForm(alice, suite.ws.url, USERS.alice);
    // A new participant's frontend opens the Templates dialog: closed, so
    // the canvas shows.
    await templatesDialog(alice).waitFor({ timeout: WAIT_MS });
    await alice.keyboard.press('Escape');
    await templatesDialog(alice).waitFor({ state: 'detached', timeout: WAIT_MS });
    const badge = alice.locator('#comfyume-user');
    await badge.getByText('alice', { exact: true }).waitFor({ timeout: WAIT_MS });
    const out = badge.locator('a', { hasText: 'Log out' });
    assert.equal(await out.getAttribute('href'), '/logout');
    return [watcher];
  });

  step(S2, [S1], async () => {
    await admin('POST', '/admin/api/room/broadcast', { message: MESSAGE });
    await panel().locator('.banner').getByText(MESSAGE, { exact: false }).waitFor({ timeout: WAIT_MS });
    await painted(alice);
    await screenshot(alice, 'alice-banner.png');
    return [watcher];
  });

  let promptId;
  step(S3, [S2], async () => {
    await admin('POST', '/admin/api/room/pause');
    await panel().locator('.paused').waitFor({ timeout: WAIT_MS });
    // Queued from her page, for her own socket, as the Run button does.
    promptId = await alice.evaluate(async (prompt) => {
      const r = await window.comfyAPI.api.api.fetchApi('/prompt', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, client_id: window.comfyAPI.api.api.clientId }),
      });
      return (await r.json()).prompt_id;
    }, PROMPT);
    assert.match(promptId ?? '', /^[0-9a-f-]{36}$/);
    await panel().locator('.queue').getByText("#1 in the room's queue (next to start)", { exact: false })
      .waitFor({ timeout: WAIT_MS });
    const jobs = await admin('GET', '/admin/api/jobs');
    assert.equal(jobs.paused, true);
    assert.deepEqual(jobs.jobs.map((j) => [j.id, j.state]), [[promptId, 'pending']]);
    await painted(alice);
    await screenshot(alice, 'alice-paused-queued.png');
    return [watcher];
  });

  step(S4, [S3], async () => {
    await admin('POST', '/admin/api/room/resume');
    await panel().locator('.paused').waitFor({ state: 'detached', timeout: WAIT_MS });
    await panel().locator('.queue').waitFor({ state: 'detached', timeout: WAIT_MS });
    await alice.waitForFunction(async (id) => {
      const r = await window.comfyAPI.api.api.fetchApi(`/jobs/${id}`);
      return r.ok && (await r.json()).status === 'completed';
    }, promptId, { timeout: WAIT_MS, polling: 250 });
    return [watcher];
  });

  step('5. clearing the broadcast takes the banner away', [S2], async () => {
    await admin('DELETE', '/admin/api/room/broadcast');
    await panel().locator('.banner').waitFor({ state: 'detached', timeout: WAIT_MS });
    return [watcher];
  });

  step('6. alice shares her output to the wall, and bob sees it there', [S4], async () => {
    const share = panel().locator('.share button', { hasText: 'Share to wall' });
    await share.waitFor({ timeout: WAIT_MS });
    await share.click();
    await panel().locator('.share', { hasText: 'is on the wall' }).waitFor({ timeout: WAIT_MS });
    const s = await suite.newWatchedPage('bob');
    const bob = s.page;
    // Straight to the wall, logging in on the way.
    await bob.goto(`${suite.ws.url}/wall`);
    assert.equal(new URL(bob.url()).pathname, '/login');
    await bob.locator('input[name=username]').fill(USERS.bob.name);
    await bob.locator('input[name=password]').fill(USERS.bob.password);
    await Promise.all([
      bob.waitForURL((u) => u.pathname === '/wall', { timeout: WAIT_MS }),
      bob.locator('button[type=submit]').click(),
    ]);
    const figure = bob.locator('#grid figure', { hasText: 'alice' });
    await figure.waitFor({ timeout: WAIT_MS });
    await bob.waitForFunction(() => {
      const img = document.querySelector('#grid figure img');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: WAIT_MS, polling: 250 });
    await painted(bob);
    await screenshot(bob, 'wall.png');
    return [watcher, s.watcher];
  });

  step('7. "Download my work" gives alice a zip of her output', [S4], async () => {
    const link = alice.locator('#comfyume-user a', { hasText: 'Download my work' });
    const [download] = await Promise.all([
      alice.waitForEvent('download', { timeout: WAIT_MS }),
      link.click(),
    ]);
    assert.equal(download.suggestedFilename(), 'comfyume-alice.zip');
    const path = await download.path();
    const bytes = await import('node:fs/promises').then((fs) => fs.readFile(path));
    // A zip (local file header) naming her saved image under outputs/.
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'PK\x03\x04');
    assert.ok(bytes.includes(Buffer.from('outputs/room_')), 'her output is in the zip');
    return [watcher];
  });

  suite.finalCheck('8. no page logged an unexpected error or failed request');
});
