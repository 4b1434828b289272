// The Storage page in headless Chromium against the real daemon ci-test.sh started and loaded
// with the testdata profiles: every service and level /api/storage reports is on the page with
// its bytes, the disk figures and limits are shown, and a deleted application leaves the page.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, newPage, screenshot, waitReady } from '../lib/browser.mjs';

const BASE = process.env.KILN_URL;

let browser;
let page;

async function storage() {
  const res = await fetch(`${BASE}/api/storage`);
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

async function openStorage() {
  await page.goto(`${BASE}/?view=storage&query=uitest.cpu`);
  await waitReady(page);
}

/** `{ "tenant/service": bytes }` of the page's table of services. */
async function servicesOnPage() {
  return page.$$eval('.storage-services tbody tr', (rows) =>
    Object.fromEntries(rows.map((r) => [`${r.dataset.tenant}/${r.dataset.service}`, Number(r.querySelector('td[data-bytes]').dataset.bytes)])),
  );
}

before(async () => {
  assert.ok(BASE, 'KILN_URL is not set: run ui-tests/ci-test.sh');
  browser = await launchBrowser();
  page = await newPage(browser);
});

after(async () => {
  await browser?.close();
});

afterEach(() => {
  const problems = page.problems.splice(0);
  assert.deepEqual(problems, [], 'the page logged no errors');
});

test('the Storage tab shows every service and level the API reports, with the disk and limits', async () => {
  const api = await storage();
  assert.equal(api.supported, true);
  assert.ok(api.services.some((s) => s.service === 'uitest'), 'the pushed service is stored');
  await openStorage();
  assert.equal(await page.locator('nav.tabs a.tab.active').innerText(), 'Storage');
  const expected = Object.fromEntries(api.services.map((s) => [`${s.tenant}/${s.service}`, s.bytes]));
  assert.deepEqual(await servicesOnPage(), expected);
  const levels = await page.$$eval('.storage-levels tbody tr', (rows) => rows.map((r) => r.dataset.level));
  assert.deepEqual(levels, api.levels.map(([l]) => l));
  assert.ok(levels.includes('10s'));
  assert.equal(await page.locator('.storage-entries tbody tr').count(), api.entries.length);
  assert.match(await page.locator('#storage-total').innerText(), /\d+(\.\d)? (B|KiB|MiB|GiB)/);
  assert.match(await page.locator('#storage-free').innerText(), /\d+(\.\d)? (B|KiB|MiB|GiB|TiB)/);
  assert.equal(await page.locator('#storage-max').innerText(), 'off');
  assert.equal(await page.locator('#storage-floor-reached').count(), 0);
  await screenshot(page, 'storage');
});

test('an application deleted through the API leaves the Storage page', async () => {
  // A service of its own, so the other tests' data stays.
  const now = Math.floor(Date.now() / 1000);
  const push = await fetch(`${BASE}/ingest?name=uitest-storage-gone.cpu&from=${now - 60}&until=${now - 50}&format=folded`, { method: 'POST', body: 'main;work 5\n' });
  assert.equal(push.status, 200, await push.text());
  await openStorage();
  assert.ok(Object.keys(await servicesOnPage()).some((k) => k.endsWith('/uitest-storage-gone')));
  const del = await fetch(`${BASE}/api/apps`, { method: 'DELETE', body: JSON.stringify({ name: 'uitest-storage-gone.cpu' }) });
  assert.ok(del.ok, await del.text());
  await openStorage();
  assert.ok(!Object.keys(await servicesOnPage()).some((k) => k.endsWith('/uitest-storage-gone')));
  assert.deepEqual(await servicesOnPage(), Object.fromEntries((await storage()).services.map((s) => [`${s.tenant}/${s.service}`, s.bytes])));
});
