// End-to-end with a stock ComfyUI as the GPU backend (COMFYUME_E2E_COMFYUI,
// which scripts/test.sh starts when ../shared/tools/comfyui-cpu is beside
// the repository, with the test custom node pack of
// crates/gateway/tests/stock/custom_nodes loaded): the pack's frontend lives
// on the backend, and the real frontend loads it through the gateway.
//
//   1. alice logs in; the ComfyUI app starts.
//   2. the pack's script, listed in /api/extensions and fetched from the
//      backend through the gateway, ran in her page; its translations came
//      in /api/i18n.
//   3. no page logged an unexpected error or failed request.
//
// Without COMFYUME_E2E_COMFYUI the suite says it was skipped.

import { describe } from 'node:test';
import assert from 'node:assert/strict';
import { USERS } from './harness.mjs';
import { WAIT_MS, workshopSuite, loginThroughForm } from './support.mjs';

const COMFYUI = process.env.COMFYUME_E2E_COMFYUI;
const SCRIPT = '/extensions/comfyume_test_nodes/comfyume_test.js';
const S1 = '1. alice logs in and ComfyUI loads';

if (!COMFYUI) {
  console.log('SKIPPED: custom node packs in the browser (COMFYUME_E2E_COMFYUI names no stock ComfyUI)');
}

describe('a custom node pack on the backend, in the real frontend', { concurrency: false, skip: !COMFYUI }, () => {
  const suite = workshopSuite({ comfyuiUrl: COMFYUI });
  const { step } = suite;
  let alice;
  let listed;
  let translated;

  step(S1, [], async () => {
    const s = await suite.newWatchedPage('alice');
    alice = s.page;
    listed = alice.waitForResponse((r) => new URL(r.url()).pathname === '/api/extensions', { timeout: WAIT_MS });
    translated = alice.waitForResponse((r) => new URL(r.url()).pathname === '/api/i18n', { timeout: WAIT_MS });
    await loginThroughForm(alice, suite.ws.url, USERS.alice);
    return [s.watcher];
  });

  step('2. the pack\'s script, served from the backend, ran in the page; its translations arrived', [S1], async () => {
    const extensions = await (await listed).json();
    assert.ok(extensions.includes(SCRIPT), `/api/extensions lists ${SCRIPT}: ${JSON.stringify(extensions)}`);
    await alice.waitForFunction(
      () => document.documentElement.dataset.comfyumeTestPack === 'loaded',
      null,
      { timeout: WAIT_MS, polling: 250 },
    );
    const i18n = await (await translated).json();
    assert.equal(i18n?.en?.nodeDefs?.ComfyumeSteps?.display_name, 'Steps (ComfyUME test)');
  });

  suite.finalCheck('3. no page logged an unexpected error or failed request');
});
