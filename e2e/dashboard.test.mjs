// End-to-end: the instructor's dashboard (/admin) in a real browser, live
// while two participants run jobs on the simulator.
//
//   1. the teacher opens /admin, logs in on the way, and the dashboard
//      goes live: the backend and both participants are listed.
//   2. the teacher pauses the room from the dashboard; alice and bob queue
//      two prompts each (their own sessions, through the API): the queue
//      table shows the four, in the order they are expected to start
//      (screenshot dashboard-queue.png).
//   3. the teacher resumes from the dashboard: the jobs run, and the
//      dashboard shows each participant's two done and an empty queue,
//      with every action in the audit log (screenshot dashboard.png).
//   4. the teacher pushes a workshop template into everyone's Workflows
//      from the dashboard; the audit log shows it.
//   5. no page logged an unexpected error or failed request.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { USERS } from './harness.mjs';
import { WAIT_MS, workshopSuite, painted, screenshot } from './support.mjs';

const S1 = '1. the teacher opens the dashboard and it goes live';
const S2 = '2. paused from the dashboard, four queued prompts are listed in order';
const S3 = '3. resumed, the jobs run and the dashboard follows them';

const PROMPT = {
  1: { class_type: 'EmptyImage', inputs: { width: 64, height: 64, batch_size: 1, color: 0 } },
  2: { class_type: 'ImageInvert', inputs: { image: ['1', 0] } },
  3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'dash' } },
};

/** A participant's session outside the browser: log in, keep the cookie. */
async function session(base, user) {
  const r = await fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base },
    body: new URLSearchParams({ username: user.name, password: user.password, next: '/' }),
  });
  assert.equal(r.status, 303, `${user.name} logs in`);
  const cookie = r.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  return {
    async submit() {
      const s = await fetch(`${base}/api/prompt`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', cookie, origin: base },
        body: JSON.stringify({ prompt: PROMPT }),
      });
      const body = await s.json();
      assert.equal(s.status, 200, JSON.stringify(body));
      return body.prompt_id;
    },
  };
}

describe('the instructor\'s dashboard', { concurrency: false }, () => {
  const suite = workshopSuite({ stepMs: 50 });
  const { step } = suite;
  let page;
  let watcher;

  const cell = (table, text) => page.locator(`#${table} tbody tr`, { hasText: text });

  step(S1, [], async () => {
    const s = await suite.newWatchedPage('teacher');
    page = s.page;
    watcher = s.watcher;
    // Every confirmation the dashboard asks for is given.
    page.on('dialog', (d) => d.accept());
    await page.goto(`${suite.ws.url}/admin`);
    assert.equal(new URL(page.url()).pathname, '/login');
    await page.locator('input[name=username]').fill(USERS.teacher.name);
    await page.locator('input[name=password]').fill(USERS.teacher.password);
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/admin', { timeout: WAIT_MS }),
      page.locator('button[type=submit]').click(),
    ]);
    await page.locator('#connection', { hasText: 'live' }).waitFor({ timeout: WAIT_MS });
    await cell('backends', 'sim').waitFor({ timeout: WAIT_MS });
    for (const name of ['alice', 'bob']) await cell('participants', name).waitFor({ timeout: WAIT_MS });
    return [watcher];
  });

  step(S2, [S1], async () => {
    await page.locator('#pause').click();
    await page.locator('#room-state', { hasText: 'PAUSED' }).waitFor({ timeout: WAIT_MS });
    const alice = await session(suite.ws.url, USERS.alice);
    const bob = await session(suite.ws.url, USERS.bob);
    const ids = [await alice.submit(), await alice.submit(), await bob.submit(), await bob.submit()];
    await page.locator('#jobs-count', { hasText: '4 waiting or running' }).waitFor({ timeout: WAIT_MS });
    // Fair turns: alice, bob, alice, bob.
    const owners = await page.locator('#jobs tbody tr td:nth-child(2)').allTextContents();
    assert.deepEqual(owners, ['alice', 'bob', 'alice', 'bob']);
    const positions = await page.locator('#jobs tbody tr td:nth-child(1)').allTextContents();
    assert.deepEqual(positions, ['1', '2', '3', '4']);
    assert.equal(ids.length, 4);
    await painted(page);
    await screenshot(page, 'dashboard-queue.png');
    return [watcher];
  });

  step(S3, [S2], async () => {
    await page.locator('#pause', { hasText: 'Resume the room' }).click();
    await page.locator('#room-state', { hasText: 'running' }).waitFor({ timeout: WAIT_MS });
    await page.locator('#jobs-count', { hasText: '0 waiting or running' }).waitFor({ timeout: WAIT_MS });
    for (const name of ['alice', 'bob']) {
      // Last output, name, online, waiting, running, done: 2 done each,
      // and the last one's thumbnail.
      await page.waitForFunction((who) => {
        const row = [...document.querySelectorAll('#participants tbody tr')]
          .find((r) => r.cells[1].textContent === who);
        const img = row && row.cells[0].querySelector('img');
        return row && row.cells[5].textContent === '2' && img && img.complete && img.naturalWidth > 0;
      }, name, { timeout: WAIT_MS, polling: 250 });
    }
    for (const action of ['room.pause', 'room.resume']) {
      await cell('audit', action).waitFor({ timeout: WAIT_MS });
    }
    const updates = Number(await page.evaluate(() => document.body.dataset.updates));
    assert.ok(updates >= 3, `the dashboard was updated ${updates} times`);
    await painted(page);
    await screenshot(page, 'dashboard.png');
    return [watcher];
  });

  step('4. the teacher pushes a workshop template from the dashboard', [S1], async () => {
    const options = await page.locator('#template option').allTextContents();
    assert.ok(options.includes('text-to-image'), `templates offered: ${options}`);
    await page.locator('#template').selectOption('text-to-image');
    await page.locator('#push-template button').click();
    await cell('audit', 'room.push_workflow').waitFor({ timeout: WAIT_MS });
    return [watcher];
  });

  suite.finalCheck('5. no page logged an unexpected error or failed request');
});
