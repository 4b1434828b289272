// Sign-in, sign-out, session expiry and a Viewer's UI, in headless Chromium against a daemon of
// its own with auth on (a short session_ttl), users made on its data directory beforehand.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { launchBrowser, newPage, screenshot, waitReady, REPO_ROOT } from '../lib/browser.mjs';

const KILN = process.env.KILN_BIN || path.join(REPO_ROOT, 'target', 'debug', 'kiln');
const TTL_SECONDS = 4;
const USERS = {
  ed: { role: 'editor', password: 'editor-password-1' },
  vi: { role: 'viewer', password: 'viewer-password-1' },
};

let workdir;
let daemon;
let base;
let browser;
let page;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function admin(args, env = {}) {
  return execFileSync(KILN, ['admin', ...args, '--config', path.join(workdir, 'kiln.toml'), '--storage-path', path.join(workdir, 'data')], {
    env: { ...process.env, KILN_AUTH_TOKEN: '', ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

before(async () => {
  workdir = mkdtempSync(path.join(os.tmpdir(), 'kiln-ui-login.'));
  writeFileSync(path.join(workdir, 'kiln.toml'), `[auth]\nenabled = true\nsession_ttl = "${TTL_SECONDS}s"\n`);
  for (const [name, { role, password }] of Object.entries(USERS)) {
    admin(['user', 'add', name, '--role', role], { KILN_USER_PASSWORD: password });
  }
  const key = admin(['apikey', 'create', '--name', 'push', '--role', 'writer']).trim();
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  daemon = spawn(KILN, ['server', '--config', path.join(workdir, 'kiln.toml'), '--listen', `127.0.0.1:${port}`, '--storage-path', path.join(workdir, 'data'), '--self-profiling', 'false'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  daemon.stderr.on('data', (b) => (log += b));
  for (let i = 0; ; i++) {
    const ok = await fetch(`${base}/healthz`).then((r) => r.ok).catch(() => false);
    if (ok) break;
    if (i > 150 || daemon.exitCode !== null) assert.fail(`the daemon did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const now = Math.floor(Date.now() / 1000);
  const push = await fetch(`${base}/ingest?name=loginapp.cpu&format=folded&from=${now - 600}&until=${now - 590}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}` },
    body: readFileSync(path.join(REPO_ROOT, 'testdata', 'collapsed.txt')),
  });
  assert.equal(push.status, 200, await push.text());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (daemon && daemon.exitCode === null) {
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
  }
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

afterEach(async () => {
  // A 401 on the way to the login page is expected; anything else is a problem.
  const problems = page.problems.filter((p) => !/401/.test(p));
  page.problems.length = 0;
  await page.context().close();
  assert.deepEqual(problems, [], 'the page logged no errors');
});

async function freshPage() {
  page = await newPage(browser);
  await page.goto(`${base}/?query=loginapp.cpu&from=now-1h&until=now`);
  await page.waitForSelector('#login-form');
}

async function signIn(name, password = USERS[name].password) {
  await page.fill('#login-user', name);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

test('an unsigned browser gets the login page; a wrong password is refused; sign-in opens the app', async () => {
  await freshPage();
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'login');
  await signIn('ed', 'wrong-password');
  await page.waitForSelector('#login-error:not([hidden])');
  assert.match(await page.innerText('#login-error'), /wrong user name or password/);
  assert.equal(await page.inputValue('#login-password'), '', 'the password field is cleared');
  await signIn('ed');
  await waitReady(page);
  assert.equal(await page.innerText('#user-name'), 'ed (editor)');
  assert.equal(await page.locator('#delete-app').count(), 1, 'an editor is offered Delete app');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'kiln_session');
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));
  assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is not readable by scripts');
  await screenshot(page, 'signed-in-editor');
});

test('sign out ends the session', async () => {
  await freshPage();
  await signIn('ed');
  await waitReady(page);
  await page.click('#logout');
  await page.waitForSelector('#login-form');
  const status = await page.evaluate(() => fetch('api/session').then((r) => r.status));
  assert.equal(status, 401);
});

test('an expired session brings back the login page', async () => {
  await freshPage();
  await signIn('ed');
  await waitReady(page);
  await page.waitForTimeout((TTL_SECONDS + 1) * 1000);
  await page.click('#refresh');
  await page.waitForSelector('#login-form');
  assert.match(await page.innerText('#login-notice'), /session has ended/);
  await signIn('ed');
  await waitReady(page);
});

test("a Viewer's UI offers no delete or admin actions", async () => {
  await freshPage();
  await signIn('vi');
  await waitReady(page);
  assert.equal(await page.innerText('#user-name'), 'vi (viewer)');
  assert.equal(await page.locator('#delete-app').count(), 0);
  assert.equal(await page.locator('button:has-text("Delete"), [data-admin]').count(), 0);
  assert.ok((await page.locator('.view:not([hidden]) .kiln-fg-canvas').count()) > 0, 'the viewer still reads profiles');
  await screenshot(page, 'viewer');
});
