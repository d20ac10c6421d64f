// End-to-end: running a workflow in the real, unmodified ComfyUI frontend
// (1.48.7) against `comfyume serve` and the GPU simulator, whose KSampler
// takes STEP_MS per step so that its 20 steps are visibly in progress.
//
// The steps share one server and one browser and run in order:
//   1. alice logs in and loads the text-to-image template from the
//      Templates dialog: the canvas holds its 7 node types.
//   2. bob logs in, in his own browser context, before alice runs anything;
//      his page's WebSocket frames are recorded from the start.
//   3. alice presses the Run button: POST /api/prompt answers 200 with a
//      prompt_id, for her own WebSocket's client id.
//   4. she sees the run progress: `progress` frames rising to 20 of 20 and binary
//      latent previews (type 4) for her prompt arrive; the tab title, the
//      queue overlay ("Current node: KSampler NN%") and the "1 active"
//      button show it while it runs; the KSampler node shows a preview.
//   5. the job finishes: `executed` (SaveImage), `execution_success`, then
//      `executing` with node null; the queue panel lists the job with its
//      thumbnail, an /api/view?…type=output image that loads (200, image/*);
//      clicking it opens the lightbox with the full image (and the Media
//      Assets sidebar on it); the SaveImage node on the canvas shows the
//      same output.
//   6. bob sees none of it: an empty queue panel and Media Assets sidebar,
//      no jobs from /api/jobs, a 404 for alice's job and image, and no
//      WebSocket frame about her prompt (only his own status, and his own
//      standing in the room, with nothing of his waiting).
//   7. no page logged an unexpected console error or failed request.
//
// Screenshots (e2e/test-results/): alice-running.png, alice-finished.png,
// alice-queue-panel.png, alice-lightbox.png, bob-queue-panel.png, bob-assets.png.
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
  loginThroughForm,
  templatesDialog,
  nodeTypes,
  painted,
  screenshot,
} from './support.mjs';

/** The simulator's time per KSampler step: 20 steps take ~2 s. */
const STEP_MS = 100;

const TEMPLATE = 'text-to-image';
const TEMPLATE_NODE_TYPES = [
  'CheckpointLoaderSimple',
  'CLIPTextEncode',
  'CLIPTextEncode',
  'EmptyLatentImage',
  'KSampler',
  'VAEDecode',
  'SaveImage',
];
const STEPS = 20; // the template's KSampler steps

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// Step names that later steps depend on.
const S1 = '1. alice logs in and loads the text-to-image template from the Templates dialog';
const S2 = '2. bob logs in in his own context, before alice runs anything';
const S3 = '3. alice presses Run and POST /api/prompt answers 200 with a prompt_id';
const S4 = '4. alice sees the run progress: progress and preview frames, title, queue overlay, KSampler preview';
const S5 = '5. the job finishes and its image is in the queue panel, the lightbox and the SaveImage node';

// ---------------------------------------------------------------------------
// WebSocket frames.

/**
 * Records every WebSocket frame a page receives, from the page's creation
 * on (across reconnects and reloads), and lets a test wait for one.
 * Text frames are parsed as JSON (`msg`); binary ones keep their bytes,
 * their big-endian event type and, for type 4, the preview's metadata.
 */
class FrameLog {
  constructor(page, who) {
    this.who = who;
    this.frames = [];
    this.sockets = [];
    this.waiters = [];
    this.open = 0; // sockets currently open
    page.on('websocket', (socket) => {
      this.sockets.push(socket.url());
      this.open += 1;
      socket.on('close', () => { this.open -= 1; });
      socket.on('framereceived', ({ payload }) => this.onFrame(socket.url(), payload));
    });
  }

  onFrame(url, payload) {
    const f = { index: this.frames.length, url };
    if (typeof payload === 'string') {
      f.kind = 'text';
      f.raw = payload;
      try {
        f.msg = JSON.parse(payload);
      } catch {
        f.msg = null;
      }
    } else {
      const buf = Buffer.from(payload);
      f.kind = 'binary';
      f.buf = buf;
      f.eventType = buf.length >= 4 ? buf.readUInt32BE(0) : null;
      if (f.eventType === 4 && buf.length >= 8) {
        const len = buf.readUInt32BE(4);
        try {
          f.meta = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
        } catch {
          f.meta = null;
        }
        f.image = buf.subarray(8 + len);
      }
    }
    this.frames.push(f);
    for (const w of [...this.waiters]) {
      if (w.pred(f)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(f);
      }
    }
  }

  /** The JSON messages of type `type` (all, or those matching `pred`). */
  messages(type, pred = () => true) {
    return this.frames.filter((f) => f.kind === 'text' && f.msg?.type === type && pred(f.msg.data || {}, f));
  }

  /** Resolves with the first frame (recorded or future) matching `pred`. */
  waitFor(pred, what, timeoutMs = WAIT_MS) {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: undefined };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.who}'s page received no WebSocket frame ${what} within ${timeoutMs} ms; ` +
          `it got ${this.frames.length} frame(s):\n${this.summary()}`));
      }, timeoutMs);
      w.resolve = (f) => { clearTimeout(timer); resolve(f); };
      this.waiters.push(w);
    });
  }

  waitForMessage(type, pred, what) {
    return this.waitFor((f) => f.kind === 'text' && f.msg?.type === type && pred(f.msg.data || {}), what);
  }

  /** Frames that contain `needle` anywhere (text, or bytes of a binary frame). */
  mentioning(needle) {
    return this.frames.filter((f) => (f.kind === 'text' ? f.raw.includes(needle) : f.buf.includes(Buffer.from(needle))));
  }

  describe(f) {
    if (f.kind === 'text') return f.raw.length > 300 ? `${f.raw.slice(0, 300)}…` : f.raw;
    return `<binary type ${f.eventType}, ${f.buf.length} bytes${f.meta ? `, meta ${JSON.stringify(f.meta)}` : ''}>`;
  }

  summary(frames = this.frames, max = 80) {
    const shown = frames.length > max ? [...frames.slice(0, max / 2), null, ...frames.slice(-max / 2)] : frames;
    return shown.map((f) => (f ? `  #${f.index} ${this.describe(f)}` : '  …')).join('\n');
  }
}

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_MAGIC = Buffer.from([0xff, 0xd8, 0xff]);

// ---------------------------------------------------------------------------
// What the page shows while it runs.

/**
 * Installs, in the page, a recorder of what the user sees change: the tab
 * title, the queue overlay's text (only while it is visible) and the label
 * of the queue button ("N active"). A MutationObserver records each
 * distinct value as the DOM changes, so the test can later check what was
 * shown during the run without racing it.
 */
function installProgressRecorder(page) {
  return page.evaluate(() => {
    const seen = { titles: [], overlay: [], toggle: [] };
    const push = (list, value) => {
      if (value != null && list[list.length - 1] !== value) list.push(value);
    };
    const text = (el) => (el ? el.textContent.replace(/\s+/g, ' ').trim() : null);
    const record = () => {
      push(seen.titles, document.title);
      const overlay = document.querySelector('[data-testid="queue-progress-overlay"]');
      push(seen.overlay, overlay && overlay.checkVisibility() ? text(overlay) : null);
      const toggle = document.querySelector('[data-testid="queue-overlay-toggle"]');
      push(seen.toggle, toggle && toggle.checkVisibility() ? text(toggle.querySelector('span')) : null);
    };
    new MutationObserver(record).observe(document, { subtree: true, childList: true, characterData: true });
    record();
    window.__e2eSeen = seen;
  });
}

// The tab title while KSampler runs: "[<total>%][<node>%] KSampler"
// (useBrowserTabTitle.ts: nodeExecutionTitle).
const RUNNING_TITLE_RE = /^\[(\d+)%\]\[(\d+)%\] KSampler$/;
// The queue overlay while a job runs: "… Current node: KSampler 45% … 1 running …".
const OVERLAY_RUNNING_RE = /Current node:\s*KSampler\s*(\d+)%\s*1\s*running/;

const strictlyBetween = (p, lo, hi) => p > lo && p < hi;

// ---------------------------------------------------------------------------

describe('running a workflow in the real ComfyUI frontend', { concurrency: false }, () => {
  const suite = workshopSuite({ stepMs: STEP_MS });
  const { step, newWatchedPage } = suite;
  let alice;
  let aliceWatcher;
  let aliceFrames;
  let aliceSid;
  let bob;
  let bobWatcher;
  let bobFrames;
  let promptId;
  let output; // SaveImage's output image: { filename, subfolder, type }
  let imageUrl; // the queue panel thumbnail's absolute /api/view URL

  // 1 ------------------------------------------------------------------------
  step(S1, [], async () => {
    const s = await newWatchedPage('alice', (page) => { aliceFrames = new FrameLog(page, 'alice'); });
    alice = s.page;
    aliceWatcher = s.watcher;
    await loginThroughForm(alice, suite.ws.url, USERS.alice);

    const dialog = templatesDialog(alice);
    await dialog.waitFor({ state: 'visible' });
    const card = alice.locator(`[data-testid="template-workflow-${TEMPLATE}"]`);
    await card.waitFor({ state: 'visible' });
    await card.click();
    await dialog.waitFor({ state: 'hidden' });
    await alice.waitForFunction(
      (n) => (window.app.graph?.nodes || []).length >= n,
      TEMPLATE_NODE_TYPES.length,
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
    const path = await alice.evaluate(() => window.app.extensionManager.workflow.activeWorkflow?.path);
    assert.equal(path, expectedPath, 'the template should open as its own workflow');

    // Her socket is up and has its sid (the frontend's client id).
    const hello = await aliceFrames.waitForMessage('status', (d) => typeof d.sid === 'string', 'status with a sid');
    aliceSid = hello.msg.data.sid;
    await alice.waitForFunction((sid) => window.name === sid, aliceSid, { timeout: WAIT_MS, polling: 250 });
    return [aliceWatcher];
  });

  // 2 ------------------------------------------------------------------------
  step(S2, [], async () => {
    const s = await newWatchedPage('bob', (page) => { bobFrames = new FrameLog(page, 'bob'); });
    bob = s.page;
    bobWatcher = s.watcher;
    await loginThroughForm(bob, suite.ws.url, USERS.bob);
    const dialog = templatesDialog(bob);
    await dialog.waitFor({ state: 'visible' });
    await bob.locator(`[data-testid="template-workflow-${TEMPLATE}"]`).waitFor({ state: 'visible' });
    await bob.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    // His socket is connected before alice runs anything.
    const hello = await bobFrames.waitForMessage('status', (d) => typeof d.sid === 'string', 'status with a sid');
    assert.notEqual(hello.msg.data.sid, aliceSid, 'bob got the same WebSocket sid as alice');
    await bob.locator('[data-testid="queue-overlay-toggle"]').waitFor({ state: 'visible' });
    return [bobWatcher];
  });

  // 3 ------------------------------------------------------------------------
  step(S3, [S1], async () => {
    await installProgressRecorder(alice);
    const runButton = alice.locator('[data-testid="queue-button"]');
    await runButton.waitFor({ state: 'visible' });
    assert.equal((await runButton.innerText()).trim(), 'Run', 'the action bar\'s queue button is not labelled "Run"');
    const posted = alice.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/prompt',
      { timeout: WAIT_MS },
    );
    await runButton.click();
    const resp = await posted;
    const text = await resp.text();
    assert.equal(resp.status(), 200, `POST /api/prompt answered ${resp.status()}: ${text}`);
    const body = JSON.parse(text);
    assert.match(String(body.prompt_id), UUID_RE, `POST /api/prompt answered no prompt_id: ${text}`);
    assert.equal(typeof body.number, 'number', `POST /api/prompt answered no number: ${text}`);
    assert.deepEqual(body.node_errors, {}, `POST /api/prompt reported node errors: ${text}`);
    promptId = body.prompt_id;

    // What the frontend sent: the template's graph, for alice's socket.
    const sent = resp.request().postDataJSON();
    assert.equal(sent.client_id, aliceSid, 'the prompt was not queued for alice\'s WebSocket client id');
    assert.deepEqual(
      Object.values(sent.prompt).map((n) => n.class_type).sort(),
      [...TEMPLATE_NODE_TYPES].sort(),
      `the queued prompt is not the template's graph: ${JSON.stringify(sent.prompt)}`,
    );

    // The picture of the run, taken once the recorder has seen the title
    // show KSampler running (step 4 checks what was shown).
    await alice.waitForFunction(
      (re) => window.__e2eSeen.titles.some((t) => new RegExp(re).test(t)),
      RUNNING_TITLE_RE.source,
      { timeout: WAIT_MS, polling: 'raf' },
    );
    await screenshot(alice, 'alice-running.png');
    return [aliceWatcher];
  });

  // 4 ------------------------------------------------------------------------
  step(S4, [S3], async () => {
    const ofPrompt = (d) => d.prompt_id === promptId;
    // Synchronise on the end of the run; everything below happened before.
    await aliceFrames.waitForMessage('executing', (d) => d.node === null && ofPrompt(d), `executing{node:null} for ${promptId}`);

    // progress frames: strictly increasing values up to max = 20 for the KSampler.
    const progress = aliceFrames.messages('progress', ofPrompt);
    const values = progress.map((f) => f.msg.data.value);
    const where = `\nalice's frames:\n${aliceFrames.summary()}`;
    assert.ok(progress.length >= 2, `expected several progress frames for ${promptId}, got ${progress.length}${where}`);
    for (const f of progress) {
      assert.equal(f.msg.data.max, STEPS, `a progress frame has max ${f.msg.data.max}, not ${STEPS}: ${f.raw}`);
      assert.equal(f.msg.data.node, '5', `a progress frame is not for the KSampler (node 5): ${f.raw}`);
    }
    for (let i = 1; i < values.length; i++) {
      assert.ok(values[i] > values[i - 1], `progress values are not strictly increasing: ${JSON.stringify(values)}`);
    }
    assert.equal(values[values.length - 1], STEPS, `progress did not reach ${STEPS}: ${JSON.stringify(values)}`);
    assert.ok(values.filter((v) => strictlyBetween(v, 0, STEPS)).length >= 2, `no intermediate progress: ${JSON.stringify(values)}`);

    // Binary latent previews: type 4 (the frontend announced
    // supports_preview_metadata), with metadata naming this prompt.
    const binary = aliceFrames.frames.filter((f) => f.kind === 'binary');
    assert.ok(binary.length >= 1, `alice received no binary preview frame${where}`);
    for (const f of binary) {
      assert.equal(f.eventType, 4, `a binary frame has event type ${f.eventType}, expected 4 (PREVIEW_IMAGE_WITH_METADATA)`);
      assert.ok(f.meta, `a type-4 frame has unreadable metadata: ${aliceFrames.describe(f)}`);
      assert.equal(f.meta.prompt_id, promptId, `a preview frame is for another prompt: ${JSON.stringify(f.meta)}`);
      assert.equal(f.meta.node_id, '5', `a preview frame is not from the KSampler: ${JSON.stringify(f.meta)}`);
      const magic = { 'image/png': PNG_MAGIC, 'image/jpeg': JPEG_MAGIC }[f.meta.image_type];
      assert.ok(magic, `a preview frame has image_type ${f.meta.image_type}`);
      assert.ok(f.image.subarray(0, magic.length).equals(magic), `a preview frame's bytes are not ${f.meta.image_type}`);
    }
    const start = aliceFrames.messages('execution_start', ofPrompt);
    assert.equal(start.length, 1, `expected one execution_start for ${promptId}${where}`);
    const end = aliceFrames.messages('execution_success', ofPrompt)[0];
    assert.ok(end, `no execution_success for ${promptId}${where}`);
    for (const f of [...progress, ...binary]) {
      assert.ok(f.index > start[0].index && f.index < end.index, `frame #${f.index} is outside the run (#${start[0].index}..#${end.index})${where}`);
    }

    // What the page showed while it ran (recorded as the DOM changed).
    const seen = await alice.evaluate(() => window.__e2eSeen);
    const shown = `\nrecorded titles: ${JSON.stringify(seen.titles)}\nrecorded overlay texts: ${JSON.stringify(seen.overlay)}\nrecorded queue button labels: ${JSON.stringify(seen.toggle)}`;
    assert.ok(
      seen.titles.some((t) => { const m = RUNNING_TITLE_RE.exec(t); return m && strictlyBetween(Number(m[2]), 0, 100); }),
      `the tab title never showed KSampler part-way ("[..%][NN%] KSampler")${shown}`,
    );
    assert.ok(
      seen.overlay.some((t) => { const m = OVERLAY_RUNNING_RE.exec(t || ''); return m && strictlyBetween(Number(m[1]), 0, 100); }),
      `the queue overlay never showed "Current node: KSampler NN%" with 1 running${shown}`,
    );
    assert.ok(seen.toggle.includes('1 active'), `the queue button never showed "1 active"${shown}`);

    // The KSampler node on the canvas shows the last latent preview (a blob
    // made from the binary frames).
    const preview = await alice.evaluate(() => {
      const node = window.app.graph.getNodeById(5);
      return {
        type: node?.type,
        previews: window.app.nodePreviewImages?.['5'] || null,
        imgs: (node?.imgs || []).map((i) => ({ src: i.src, complete: i.complete, w: i.naturalWidth })),
      };
    });
    assert.equal(preview.type, 'KSampler');
    assert.ok(
      preview.imgs.some((i) => i.src.startsWith('blob:') && i.w > 0),
      `the KSampler node shows no decoded latent preview: ${JSON.stringify(preview)}`,
    );
    return [aliceWatcher];
  });

  // 5 ------------------------------------------------------------------------
  step(S5, [S4], async () => {
    const ofPrompt = (d) => d.prompt_id === promptId;
    const where = `\nalice's frames:\n${aliceFrames.summary()}`;
    // The end of the run, in ComfyUI's order.
    const executed = aliceFrames.messages('executed', (d) => ofPrompt(d) && d.node === '7');
    assert.equal(executed.length, 1, `expected one executed{node:"7"} (SaveImage) for ${promptId}${where}`);
    const images = executed[0].msg.data.output?.images;
    assert.ok(Array.isArray(images) && images.length === 1, `SaveImage's executed output has no image: ${executed[0].raw}`);
    output = images[0];
    assert.equal(output.type, 'output', `SaveImage's image is not of type output: ${executed[0].raw}`);
    assert.match(output.filename, /\.png$/, `SaveImage's image is not a PNG: ${executed[0].raw}`);
    const success = aliceFrames.messages('execution_success', ofPrompt);
    const last = aliceFrames.messages('executing', (d) => d.node === null && ofPrompt(d));
    assert.equal(success.length, 1, `expected one execution_success${where}`);
    assert.equal(last.length, 1, `expected one executing{node:null}${where}`);
    assert.ok(executed[0].index < success[0].index && success[0].index < last[0].index,
      `expected executed → execution_success → executing{node:null}, got #${executed[0].index}, #${success[0].index}, #${last[0].index}${where}`);
    for (const type of ['execution_error', 'execution_interrupted']) {
      assert.equal(aliceFrames.messages(type, ofPrompt).length, 0, `alice got ${type} for ${promptId}${where}`);
    }

    // The page settles: no job active, the title back to the workflow's.
    const toggle = alice.locator('[data-testid="queue-overlay-toggle"]');
    await alice.waitForFunction(
      () => document.querySelector('[data-testid="queue-overlay-toggle"] span')?.textContent.trim() === '0 active' &&
        !/%\]/.test(document.title),
      null,
      { timeout: WAIT_MS, polling: 250 },
    );

    // The SaveImage node on the canvas shows the output image.
    const canvasImage = await alice.waitForFunction(
      (out) => {
        const node = window.app.graph.getNodeById(7);
        const stored = window.app.nodeOutputs?.['7']?.images?.[0];
        const img = (node?.imgs || [])[0];
        if (!node || !stored || !img || !img.complete || img.naturalWidth === 0) return null;
        return { type: node.type, stored, src: img.src, w: img.naturalWidth, h: img.naturalHeight, out };
      },
      output,
      { timeout: WAIT_MS, polling: 250 },
    ).then((h) => h.jsonValue());
    assert.equal(canvasImage.type, 'SaveImage');
    assert.deepEqual(canvasImage.stored, output, 'app.nodeOutputs["7"] is not the executed output');
    const canvasUrl = new URL(canvasImage.src);
    assert.equal(canvasUrl.pathname, '/api/view', `the SaveImage node's image is not from /api/view: ${canvasImage.src}`);
    assert.equal(canvasUrl.searchParams.get('filename'), output.filename, `the SaveImage node shows another file: ${canvasImage.src}`);
    assert.equal(canvasUrl.searchParams.get('type'), 'output', `the SaveImage node's image is not type=output: ${canvasImage.src}`);
    await painted(alice);
    await screenshot(alice, 'alice-finished.png');

    // The queue panel, opened with the queue button, lists the job with
    // its thumbnail.
    await toggle.click();
    const panel = alice.locator('[data-testid="queue-progress-overlay"]');
    await panel.locator('[data-testid="job-assets-list"]').waitFor({ state: 'visible' });
    const row = panel.locator(`[data-job-id="${promptId}"]`);
    await row.waitFor({ state: 'visible' });
    assert.equal(await panel.locator('[data-job-id]').count(), 1, 'alice\'s queue panel lists more than her one job');
    assert.ok((await row.innerText()).includes(output.filename), `the job row does not name ${output.filename}: ${await row.innerText()}`);
    const thumb = row.locator('img');
    await thumb.waitFor({ state: 'visible' });
    await alice.waitForFunction((img) => img.complete && img.naturalWidth > 0, await thumb.elementHandle(), { timeout: WAIT_MS, polling: 250 });
    imageUrl = await thumb.evaluate((img) => img.src);
    const u = new URL(imageUrl);
    assert.equal(u.origin, suite.ws.url, `the thumbnail is not served by the gateway: ${imageUrl}`);
    assert.equal(u.pathname, '/api/view', `the thumbnail is not an /api/view URL: ${imageUrl}`);
    assert.equal(u.searchParams.get('type'), 'output', `the thumbnail is not type=output: ${imageUrl}`);
    assert.equal(u.searchParams.get('filename'), output.filename, `the thumbnail is not the job's image: ${imageUrl}`);
    assert.equal(u.searchParams.get('subfolder') || '', output.subfolder || '', `the thumbnail has another subfolder: ${imageUrl}`);
    const fetched = await alice.evaluate(async (url) => {
      const r = await fetch(url, { cache: 'no-store' });
      const bytes = new Uint8Array(await r.arrayBuffer());
      return { status: r.status, type: r.headers.get('content-type'), head: Array.from(bytes.subarray(0, 8)), size: bytes.length };
    }, imageUrl);
    assert.equal(fetched.status, 200, `GET ${imageUrl} answered ${fetched.status}`);
    assert.match(fetched.type || '', /^image\//, `GET ${imageUrl} has content type ${fetched.type}`);
    assert.ok(Buffer.from(fetched.head).equals(PNG_MAGIC), `GET ${imageUrl} is not a PNG (first bytes ${fetched.head})`);
    await painted(alice);
    await screenshot(alice, 'alice-queue-panel.png');

    // Clicking the thumbnail opens the lightbox with the full image.
    await thumb.click();
    const lightbox = alice.getByRole('dialog', { name: 'Gallery' });
    await lightbox.waitFor({ state: 'visible' });
    const full = lightbox.locator('img').last();
    await full.waitFor({ state: 'visible' });
    const shown = await alice.waitForFunction(
      (img) => (img.complete && img.naturalWidth > 0 ? { src: img.src, w: img.naturalWidth, h: img.naturalHeight } : null),
      await full.elementHandle(),
      { timeout: WAIT_MS, polling: 250 },
    ).then((h) => h.jsonValue());
    const fu = new URL(shown.src);
    assert.equal(fu.pathname, '/api/view', `the lightbox image is not from /api/view: ${shown.src}`);
    assert.equal(fu.searchParams.get('filename'), output.filename, `the lightbox shows another file: ${shown.src}`);
    assert.equal(fu.searchParams.get('type'), 'output', `the lightbox image is not type=output: ${shown.src}`);
    assert.ok(!fu.searchParams.has('preview'), `the lightbox shows a downscaled preview, not the image: ${shown.src}`);
    assert.equal(shown.w, canvasImage.w, 'the lightbox image and the SaveImage node\'s image differ in width');
    assert.equal(shown.h, canvasImage.h, 'the lightbox image and the SaveImage node\'s image differ in height');
    await painted(alice);
    await screenshot(alice, 'alice-lightbox.png');
    await lightbox.getByRole('button', { name: 'Close' }).click();
    await lightbox.waitFor({ state: 'hidden' });

    // Viewing the job also opened the Media Assets sidebar on it.
    const asset = alice.locator(`[data-asset-id="${promptId}"]`);
    await asset.waitFor({ state: 'visible' });
    assert.equal(await asset.getAttribute('data-selected'), 'true', 'the job\'s asset is not selected in the Media Assets sidebar');
    const assetImg = asset.locator('img[src*="/api/view"]').first();
    await assetImg.waitFor({ state: 'visible' });
    const assetSrc = new URL(await assetImg.evaluate((img) => img.src));
    assert.equal(assetSrc.searchParams.get('filename'), output.filename, `the asset card shows another file: ${assetSrc}`);
    assert.equal(await alice.locator('[data-asset-id]').count(), 1, 'alice\'s Media Assets sidebar lists more than her one output');
    return [aliceWatcher];
  });

  // 6 ------------------------------------------------------------------------
  step('6. bob sees none of alice\'s run: queue panel, /api/jobs, her image, his WebSocket', [S2, S5], async () => {
    // bob's socket, connected before alice pressed Run, stayed open through
    // her whole run, so it could have received anything sent to him.
    assert.equal(bobFrames.sockets.length, 1, `bob's page opened ${bobFrames.sockets.length} WebSockets: ${bobFrames.sockets}`);
    assert.equal(bobFrames.open, 1, 'bob\'s WebSocket closed during alice\'s run');

    // Reload bob's page so that his queue panel shows what /api/jobs
    // answers now, after alice's job finished. His frames stay recorded.
    bobWatcher.beginNavigation();
    const isJobs = (r) => new URL(r.url()).pathname === '/api/jobs';
    const history = bob.waitForResponse((r) => isJobs(r) && /completed/.test(new URL(r.url()).searchParams.get('status') || ''), { timeout: WAIT_MS });
    const active = bob.waitForResponse((r) => isJobs(r) && /in_progress/.test(new URL(r.url()).searchParams.get('status') || ''), { timeout: WAIT_MS });
    await bob.reload();
    for (const r of [await history, await active]) {
      const text = await r.text();
      assert.equal(r.status(), 200, `bob's ${r.url()} answered ${r.status()}: ${text}`);
      assert.deepEqual(JSON.parse(text).jobs, [], `bob's ${r.url()} lists jobs: ${text}`);
    }
    await bob.waitForFunction(() => window.app?.vueAppReady && window.app.graph && !document.getElementById('splash-loader'), null, { timeout: WAIT_MS, polling: 250 });
    const toggle = bob.locator('[data-testid="queue-overlay-toggle"]');
    await toggle.waitFor({ state: 'visible' });
    assert.equal((await toggle.locator('span').first().innerText()).trim(), '0 active', 'bob\'s queue button shows an active job');
    await toggle.click();
    const panel = bob.locator('[data-testid="queue-progress-overlay"]');
    await panel.locator('[data-testid="job-assets-list"]').waitFor({ state: 'visible' });
    await painted(bob);
    assert.equal(await panel.locator('[data-job-id]').count(), 0, 'bob\'s queue panel lists a job');
    assert.equal(await panel.locator('img[src*="/api/view"]').count(), 0, 'bob\'s queue panel shows an output image');
    await screenshot(bob, 'bob-queue-panel.png');

    // His Media Assets sidebar ("Generated") is empty once it has loaded.
    const listed = bob.waitForResponse(isJobs, { timeout: WAIT_MS });
    await bob.locator('.assets-tab-button').first().click();
    const assetsResp = await listed;
    const assetsText = await assetsResp.text();
    assert.equal(assetsResp.status(), 200, `bob's ${assetsResp.url()} answered ${assetsResp.status()}: ${assetsText}`);
    assert.deepEqual(JSON.parse(assetsText).jobs, [], `bob's ${assetsResp.url()} lists jobs: ${assetsText}`);
    await bob.getByText('No generated files found').waitFor({ state: 'visible' });
    assert.equal(await bob.locator('[data-asset-id]').count(), 0, 'bob\'s Media Assets sidebar lists an asset');
    await painted(bob);
    await screenshot(bob, 'bob-assets.png');

    // The API agrees, with bob's session.
    const jobUrl = `${suite.ws.url}/api/jobs/${promptId}`;
    bobWatcher.probes.push(imageUrl, jobUrl);
    const api = await bob.evaluate(async ({ imageUrl, jobUrl }) => {
      const jobs = await fetch('/api/jobs', { cache: 'no-store' });
      const job = await fetch(jobUrl, { cache: 'no-store' });
      const view = await fetch(imageUrl, { cache: 'no-store' });
      return { jobsStatus: jobs.status, jobs: await jobs.text(), jobStatus: job.status, viewStatus: view.status };
    }, { imageUrl, jobUrl });
    assert.equal(api.jobsStatus, 200, `bob's GET /api/jobs answered ${api.jobsStatus}: ${api.jobs}`);
    const jobs = JSON.parse(api.jobs);
    assert.deepEqual(jobs.jobs, [], `bob's GET /api/jobs lists jobs: ${api.jobs}`);
    assert.equal(jobs.pagination?.total, 0, `bob's GET /api/jobs counts jobs: ${api.jobs}`);
    assert.equal(api.jobStatus, 404, `bob's GET /api/jobs/<alice's prompt> answered ${api.jobStatus}`);
    assert.equal(api.viewStatus, 404, `bob can fetch alice's image ${imageUrl} (status ${api.viewStatus})`);

    // Nothing about alice's prompt reached bob's sockets: only his own
    // (empty) queue status and the feature flags.
    assert.ok(bobFrames.frames.length >= 1, 'bob\'s page recorded no WebSocket frame at all');
    const leaked = bobFrames.mentioning(promptId);
    assert.equal(leaked.length, 0, `bob received frames about alice's prompt ${promptId}:\n${bobFrames.summary(leaked)}`);
    // His own status, and where he stands in the room (nothing of his
    // waits): nothing else.
    const own = (f) => f.kind === 'text' && (
      ['status', 'feature_flags'].includes(f.msg?.type) ||
      (f.msg?.type === 'comfyume.room' && f.msg.data.user === 'bob' && f.msg.data.waiting.length === 0));
    const foreign = bobFrames.frames.filter((f) => !own(f));
    assert.equal(foreign.length, 0, `bob received frames other than his own status and standing:\n${bobFrames.summary(foreign)}`);
    const busy = bobFrames.messages('status', (d) => d.status?.exec_info?.queue_remaining !== 0);
    assert.equal(busy.length, 0, `bob's status frames count a queue he does not have:\n${bobFrames.summary(busy)}`);
    return [bobWatcher];
  });

  // 7 ------------------------------------------------------------------------
  suite.finalCheck('7. no page logged an unexpected console error or failed request');
});
