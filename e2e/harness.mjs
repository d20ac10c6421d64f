// Test harness for the browser end-to-end tests: runs a real ComfyUME
// (`comfyume serve`) against the GPU simulator (`comfyume sim-backend`) in a
// throw-away data directory, with two participant accounts, and launches the
// system Chromium through playwright-core.
//
// Everything here waits on events (lines the processes print, process exits),
// never on timers; the timeouts only turn a hang into a readable failure.
//
// Paths resolve relative to this file, so `node --test` works from e2e/ and
// from the repository root alike.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..');
export const RESULTS_DIR = path.join(HERE, 'test-results');
export const BIN = process.env.COMFYUME_BIN
  ? path.resolve(process.env.COMFYUME_BIN)
  : path.join(REPO, 'target', 'debug', 'comfyume');
/** The frontend under test: the pinned one, or another version's
 * `static/` folder (scripts/check-frontend.sh sets COMFYUME_E2E_FRONTEND_DIR). */
export const FRONTEND_DIR = process.env.COMFYUME_E2E_FRONTEND_DIR
  ? path.resolve(process.env.COMFYUME_E2E_FRONTEND_DIR)
  : path.join(REPO, 'frontend', 'comfyui_frontend_package', 'static');
export const TEMPLATES_DIR = path.join(REPO, 'demo', 'templates');
/** What scripts/fetch-frontend.sh fetches beside the pinned frontend. */
export const OFFICIAL_TEMPLATES_DIR = path.join(REPO, 'frontend', 'workflow_templates');
export const NODE_DOCS_DIR = path.join(REPO, 'frontend', 'embedded_docs');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** The admin API's bearer token in every workshop the harness starts. */
export const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';

/** The accounts the harness creates. */
export const USERS = {
  alice: { name: 'alice', password: 'alice-e2e-password-1' },
  bob: { name: 'bob', password: 'bob-e2e-password-2' },
  teacher: { name: 'teacher', password: 'teacher-e2e-password-3', admin: true },
};

// Generous: the machine has 2 slow cores and may be compiling at the same time.
const START_TIMEOUT_MS = 120_000;
const CLI_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 15_000;

/**
 * The environment for the product's processes: ours minus every COMFYUME_*
 * variable. The server reads COMFYUME_<KEY> as configuration and refuses
 * unknown keys, so e.g. COMFYUME_BIN must not reach it.
 */
function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('COMFYUME_')) env[k] = v;
  }
  env.NO_COLOR = '1'; // plain log lines in failure diagnostics
  return env;
}

/** Keeps the last `max` lines a process printed, for diagnostics. */
class Tail {
  constructor(max = 200) {
    this.max = max;
    this.lines = [];
  }
  push(line) {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
  }
  toString() {
    return this.lines.join('\n');
  }
}

/**
 * A long-running child process whose stdout and stderr are split into lines,
 * kept in a tail, and can be waited on.
 */
class Proc {
  constructor(label, args) {
    this.label = label;
    this.args = args;
    this.tail = new Tail();
    this.exited = false;
    this.exitInfo = null;
    this.lineWaiters = [];
    this.child = spawn(BIN, args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.exitPromise = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exited = true;
        this.exitInfo = { code, signal };
        this.tail.push(`[${label} exited: code=${code} signal=${signal}]`);
        for (const w of this.lineWaiters.splice(0)) {
          w.reject(new Error(`${label} exited (code=${code} signal=${signal}) before printing ${w.re}\n${this.describe()}`));
        }
        resolve(this.exitInfo);
      });
    });
    this.child.on('error', (err) => {
      this.tail.push(`[${label} spawn error: ${err.message}]`);
      for (const w of this.lineWaiters.splice(0)) {
        w.reject(new Error(`cannot run ${BIN} (${label}): ${err.message}`));
      }
    });
    for (const [streamName, stream] of [['stdout', this.child.stdout], ['stderr', this.child.stderr]]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          this.onLine(streamName, buf.slice(0, i).replace(/\r$/, ''));
          buf = buf.slice(i + 1);
        }
      });
      stream.on('end', () => {
        if (buf) this.onLine(streamName, buf);
        buf = '';
      });
    }
  }

  onLine(streamName, line) {
    this.tail.push(`${streamName}: ${line}`);
    for (const w of [...this.lineWaiters]) {
      if (w.stream !== streamName) continue;
      const m = w.re.exec(line);
      if (m) {
        this.lineWaiters.splice(this.lineWaiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }

  /** Resolves with the match of the first line on `stream` matching `re`. */
  waitForLine(stream, re, timeoutMs = START_TIMEOUT_MS) {
    if (this.exited) {
      return Promise.reject(new Error(`${this.label} has already exited\n${this.describe()}`));
    }
    return new Promise((resolve, reject) => {
      const w = { stream, re, resolve: undefined, reject: undefined };
      const timer = setTimeout(() => {
        const i = this.lineWaiters.indexOf(w);
        if (i >= 0) this.lineWaiters.splice(i, 1);
        reject(new Error(`${this.label} did not print ${re} on ${stream} within ${timeoutMs} ms\n${this.describe()}`));
      }, timeoutMs);
      w.resolve = (m) => { clearTimeout(timer); resolve(m); };
      w.reject = (e) => { clearTimeout(timer); reject(e); };
      this.lineWaiters.push(w);
    });
  }

  describe() {
    return `--- ${this.label} (${BIN} ${this.args.join(' ')}), last output:\n${this.tail}\n--- end of ${this.label}`;
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. Idempotent. */
  async stop() {
    if (this.exited || this.child.pid === undefined) return;
    this.child.kill('SIGTERM');
    let timer;
    const timedOut = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS); });
    const r = await Promise.race([this.exitPromise, timedOut]);
    clearTimeout(timer);
    if (r === 'timeout' && !this.exited) {
      this.child.kill('SIGKILL');
      await this.exitPromise;
    }
  }

  /** Synchronous last resort for process exit handlers. */
  killNow() {
    if (!this.exited && this.child.pid !== undefined) {
      try { this.child.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
}

/** Runs a short `comfyume` command to completion; rejects with its output on failure. */
function runCli(args) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env: childEnv(), timeout: CLI_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`comfyume ${args.join(' ')} failed: ${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

async function exists(p) {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** Fetches the pinned frontend with the repository's script if it is not there yet. */
async function ensureFrontend() {
  if (await exists(path.join(FRONTEND_DIR, 'index.html'))) return;
  if (process.env.COMFYUME_E2E_FRONTEND_DIR) {
    throw new Error(`no frontend at ${FRONTEND_DIR} (COMFYUME_E2E_FRONTEND_DIR)`);
  }
  await new Promise((resolve, reject) => {
    execFile('bash', [path.join(REPO, 'scripts', 'fetch-frontend.sh')], { timeout: 600_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`scripts/fetch-frontend.sh failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve();
    });
  });
  if (!(await exists(path.join(FRONTEND_DIR, 'index.html')))) {
    throw new Error(`the frontend is still missing at ${FRONTEND_DIR} after scripts/fetch-frontend.sh`);
  }
}

/** A TOML basic string. JSON's escapes are a subset of TOML's. */
const tomlString = (s) => JSON.stringify(s);

/**
 * Starts the simulator and the server in a fresh temp dir with alice and bob.
 * Returns { url, dir, server, sim, diagnostics(), stop() }. On any failure
 * while starting, everything started so far is stopped before rethrowing.
 *
 * Options: `stepMs`, the time each simulated KSampler step takes
 * (`comfyume sim-backend --step-ms`; the simulator's default when omitted);
 * `comfyuiUrl`, a running ComfyUI to use as the one backend instead of a
 * simulator.
 */
export async function startWorkshop({ stepMs, comfyuiUrl } = {}) {
  if (!(await exists(BIN))) {
    throw new Error(`the comfyume binary is missing at ${BIN}: run \`cargo build\` in ${REPO} (or set COMFYUME_BIN)`);
  }
  await ensureFrontend();

  const dir = await mkdtemp(path.join(tmpdir(), 'comfyume-e2e-'));
  const procs = [];
  let stopped = false;
  // Last resorts when the test process ends without running stop(): kill
  // the product's processes (by pid) and remove the temp dir.
  const onExit = () => {
    for (const p of procs) p.killNow();
    try { rmSync(dir, { recursive: true, force: true }); } catch { /* best effort */ }
  };
  const onSignal = (signal) => {
    onExit();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', onExit);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const ws = {
    dir,
    url: undefined,
    sim: undefined,
    server: undefined,
    diagnostics() {
      return procs.map((p) => p.describe()).join('\n');
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // The server first, so it does not log the simulator vanishing.
      for (const p of [...procs].reverse()) await p.stop();
      process.removeListener('exit', onExit);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      await rm(dir, { recursive: true, force: true });
    },
  };

  try {
    let backend = { name: 'comfyui', kind: 'comfyui', url: comfyuiUrl };
    if (comfyuiUrl === undefined) {
      const simArgs = ['sim-backend', '--listen', '127.0.0.1:0'];
      if (stepMs !== undefined) simArgs.push('--step-ms', String(stepMs));
      const sim = new Proc('sim-backend', simArgs);
      procs.push(sim);
      ws.sim = sim;
      const [, simUrl] = await sim.waitForLine('stderr', /ComfyUME GPU simulator listening on (http:\/\/\S+)/);
      backend = { name: 'sim', kind: 'sim', url: simUrl };
    }

    const config = path.join(dir, 'comfyume.toml');
    await writeFile(config, [
      `data_dir = ${tomlString(path.join(dir, 'data'))}`,
      `frontend_dir = ${tomlString(FRONTEND_DIR)}`,
      `templates_dir = ${tomlString(TEMPLATES_DIR)}`,
      `official_templates_dir = ${tomlString(OFFICIAL_TEMPLATES_DIR)}`,
      `node_docs_dir = ${tomlString(NODE_DOCS_DIR)}`,
      '',
      `admin_token = ${tomlString(ADMIN_TOKEN)}`,
      '',
      '[auth]',
      'secure_cookies = false',
      '',
      '[[backends]]',
      `name = ${tomlString(backend.name)}`,
      `kind = ${tomlString(backend.kind)}`,
      `url = ${tomlString(backend.url)}`,
      'slots = 1',
      '',
    ].join('\n'));

    for (const u of Object.values(USERS)) {
      await runCli(['--config', config, 'users', 'add', u.name, '--password', u.password, ...(u.admin ? ['--admin'] : [])]);
    }

    const server = new Proc('serve', ['--config', config, 'serve', '--listen', '127.0.0.1:0']);
    procs.push(server);
    ws.server = server;
    const [, url] = await server.waitForLine('stdout', /ComfyUME is serving on (http:\/\/\S+)/);
    ws.url = url.replace(/\/$/, '');
    return ws;
  } catch (err) {
    await ws.stop();
    throw err;
  }
}

/** One headless Chromium for the whole file; tests open contexts on it. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-quic',
      '--disable-sync',
    ],
  });
}
