// flamegraph.js and standalone.html in headless Chromium, without the daemon: the module is served
// by the mock server (as the daemon serves it, at /ui/flamegraph.js) and driven on a bare page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createMockServer } from '../mock-server.mjs';
import { launchBrowser, newPage, screenshot, REPO_ROOT } from '../lib/browser.mjs';
import { syntheticProfile } from '../lib/synthetic.mjs';
import { fillStandalone } from '../lib/standalone.mjs';

const UI_DIR = path.join(REPO_ROOT, 'daemon', 'ui');
const ROW = 18;

// `foo;bar 100` + `foo;baz 200`, and the diff of `foo;bar 100` against `foo;bar 50` + `foo;baz 50`.
const SINGLE = {
  version: 1,
  flamebearer: { names: ['total', 'foo', 'baz', 'bar'], levels: [[0, 300, 0, 0], [0, 300, 0, 1], [0, 100, 100, 3, 0, 200, 200, 2]], numTicks: 300, maxSelf: 200 },
  metadata: { format: 'single', units: 'samples', sampleRate: 100, name: 'example.cpu' },
};
const DOUBLE = {
  version: 1,
  flamebearer: {
    names: ['total', 'foo', 'baz', 'bar'],
    levels: [[0, 100, 0, 0, 100, 0, 0], [0, 100, 0, 0, 100, 0, 1], [0, 100, 100, 0, 50, 50, 3, 0, 0, 0, 0, 50, 50, 2]],
    numTicks: 200,
    maxSelf: 100,
  },
  metadata: { format: 'double', units: 'samples', sampleRate: 100, name: 'example.cpu' },
  leftTicks: 100,
  rightTicks: 100,
};

let server;
let base;
let browser;
let page;

before(async () => {
  server = createMockServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await launchBrowser();
  page = await newPage(browser);
  // A bare page of the server's origin, so it can import /ui/flamegraph.js.
  await page.route(`${base}/fixture`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<!doctype html><body style="margin:0"><div id="fg" style="width:1000px"></div></body>' }),
  );
  await page.goto(`${base}/fixture`);
  await page.evaluate(async () => {
    window.fgModule = await import('/ui/flamegraph.js');
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** Shows `profile` in a fresh Flamegraph on the fixture page (options go to the constructor). */
async function show(profile, options = {}) {
  return page.evaluate(
    ({ profile, options }) => {
      const box = document.getElementById('fg');
      box.replaceChildren();
      window.fg = new window.fgModule.Flamegraph(box, options);
      window.zooms = [];
      window.fg.options.onZoom = (node) => window.zooms.push(node && node.name);
      window.fg.setProfile(profile);
      return window.fg.lastDrawn;
    },
    { profile, options },
  );
}

/** The canvas pixel (CSS coordinates) as [r, g, b, a], once pending redraws have run. */
function pixel(x, y) {
  return page.evaluate(async ({ x, y }) => {
    await new Promise((resolve) => requestAnimationFrame(resolve));
    const canvas = window.fg.canvas;
    const ratio = canvas.width / canvas.clientWidth;
    return [...canvas.getContext('2d').getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data];
  }, { x, y });
}

test('flamegraph.js stands alone and the standalone page has each placeholder once', () => {
  const source = readFileSync(path.join(UI_DIR, 'flamegraph.js'), 'utf8');
  assert.doesNotMatch(source, /^\s*import\s/m, 'flamegraph.js must not import other files');
  assert.doesNotMatch(source, /<\/script/i);
  assert.ok(!source.includes('/*KILN_DATA*/') && !source.includes('/*KILN_FLAMEGRAPH_JS*/'));
  const html = readFileSync(path.join(UI_DIR, 'standalone.html'), 'utf8');
  assert.equal(html.split('/*KILN_FLAMEGRAPH_JS*/').length, 2);
  assert.equal(html.split('/*KILN_DATA*/').length, 2);
});

test('draws a 10,000-node profile and skips frames narrower than half a pixel', async () => {
  const profile = syntheticProfile({ nodes: 10000, samples: 1_000_000 });
  const drawn = await show(profile);
  assert.ok(drawn > 100, `only ${drawn} frames drawn`);
  assert.ok(drawn < 10001, 'frames narrower than 0.5 px are not drawn');
  const label = await page.getAttribute('#fg canvas', 'aria-label');
  assert.equal(label, `flamegraph, ${drawn} frames drawn`);
  const [r, g, b, a] = await pixel(500, ROW / 2);
  assert.equal(a, 255, 'the root row is painted');
  assert.deepEqual([r, g, b], [158, 158, 158], 'the root is drawn in the neutral "total" colour');
});

test('click zooms into a frame, its ancestors stay visible, reset shows everything', async () => {
  await show(SINGLE);
  // baz covers x ∈ [100, 300) of 300 ticks: pixels 333–1000 on level 2.
  await page.mouse.click(700, 2 * ROW + ROW / 2);
  assert.deepEqual(await page.evaluate(() => window.zooms), ['baz']);
  assert.deepEqual(await page.evaluate(() => window.fg.viewRange()), [100, 200]);
  // bar (x < 100) is out of view now: the left edge of level 2 shows baz.
  // x = 60 is past the labels' text, so these are fill colours.
  const zoomedLeft = await pixel(60, 2 * ROW + ROW / 2);
  await page.evaluate(() => window.fg.reset());
  const resetLeft = await pixel(60, 2 * ROW + ROW / 2);
  assert.notDeepEqual(zoomedLeft, resetLeft, 'after reset bar is back at the left');
  assert.deepEqual(await page.evaluate(() => window.fg.viewRange()), [0, 300]);
  // Clicking the root also resets.
  await page.mouse.click(700, 2 * ROW + ROW / 2);
  await page.mouse.click(10, ROW / 2);
  assert.deepEqual(await page.evaluate(() => window.zooms), ['baz', null, 'baz', null]);
});

test('search highlights matching frames and mutes the rest', async () => {
  await show(SINGLE);
  const before = await pixel(50, 2 * ROW + ROW / 2);
  const result = await page.evaluate(() => window.fg.search('BA'));
  assert.deepEqual(result, { matchedTicks: 300, matchedNames: 2, numTicks: 300 });
  const regex = await page.evaluate(() => window.fg.search('/^baz$/'));
  assert.equal(regex.matchedTicks, 200);
  const barMuted = await pixel(50, 2 * ROW + ROW / 2);
  assert.notDeepEqual(barMuted, before, 'bar does not match /^baz$/ and is muted');
  assert.deepEqual(barMuted.slice(0, 3), [222, 222, 222]);
  assert.deepEqual(await pixel(700, 2 * ROW + ROW / 2), await page.evaluate(() => {
    const c = document.createElement('canvas').getContext('2d');
    c.fillStyle = window.fgModule.colorForName('baz');
    c.fillRect(0, 0, 1, 1);
    return [...c.getImageData(0, 0, 1, 1).data];
  }), 'baz keeps its package colour');
});

test('tooltip shows total and self with units and percentages', async () => {
  await show(SINGLE);
  await page.mouse.move(700, 2 * ROW + ROW / 2);
  const tooltip = page.locator('.kiln-fg-tooltip');
  await tooltip.waitFor({ state: 'visible' });
  const text = await tooltip.innerText();
  assert.match(text, /^baz\n/);
  assert.match(text, /Total: 2 s \(66\.7%\)/);
  assert.match(text, /Self: 2 s \(66\.7%\)/);
  await page.mouse.move(5, 300);
  await tooltip.waitFor({ state: 'hidden' });
});

test('diff flamegraph colours grown frames red and shrunk frames green', async () => {
  await show(DOUBLE);
  // Combined widths: bar = 100 + 50 of 200 ticks (pixels 0–750), baz = 0 + 50 (pixels 750–1000).
  const [br, bg] = await pixel(300, 2 * ROW + ROW / 2);
  const [zr, zg] = await pixel(900, 2 * ROW + ROW / 2);
  assert.ok(bg > br, `bar shrank from 100% to 50% and is green (got r=${br} g=${bg})`);
  assert.ok(zr > zg, `baz is new and is red (got r=${zr} g=${zg})`);
  await page.mouse.move(900, 2 * ROW + ROW / 2);
  const text = await page.locator('.kiln-fg-tooltip').innerText();
  assert.match(text, /Baseline: total 0 s \(0%\)/);
  assert.match(text, /Comparison: total 500 ms \(50\.0%\)/);
  assert.match(text, /Change: new/);
});

test('inverted flamegraph draws the root at the bottom', async () => {
  await show(SINGLE, { inverted: true });
  const height = await page.evaluate(() => window.fg.canvas.clientHeight);
  assert.equal(height, 3 * ROW);
  assert.deepEqual((await pixel(500, height - ROW / 2)).slice(0, 3), [158, 158, 158], 'root row at the bottom');
  await page.mouse.move(50, ROW / 2);
  assert.match(await page.locator('.kiln-fg-tooltip').innerText(), /^bar\n/);
  await screenshot(page, 'flamegraph-inverted');
});

test('standalone page shows an interactive flamegraph offline', async () => {
  const html = fillStandalone(syntheticProfile({ nodes: 2000, samples: 50_000, seed: 7 }));
  assert.ok(!html.includes('KILN_DATA*/') && !html.includes('KILN_FLAMEGRAPH_JS*/'));
  const offline = await newPage(browser);
  const requests = [];
  await offline.route('**/*', (route) => {
    requests.push(route.request().url());
    return route.request().url() === 'http://standalone.test/' ? route.fulfill({ contentType: 'text/html', body: html }) : route.abort();
  });
  await offline.goto('http://standalone.test/');
  await offline.waitForFunction(() => /frames drawn/.test(document.querySelector('canvas')?.getAttribute('aria-label') || ''));
  assert.deepEqual(requests, ['http://standalone.test/'], 'the page loads nothing else');
  assert.equal(await offline.title(), 'synthetic · Kiln');
  await offline.fill('#search', 'sha256');
  assert.match(await offline.locator('#matches').innerText(), /matching/);
  assert.equal(await offline.isDisabled('#reset'), true);
  const box = await offline.locator('canvas').boundingBox();
  await offline.mouse.click(box.x + box.width / 2, box.y + 2 * ROW + ROW / 2);
  assert.equal(await offline.isDisabled('#reset'), false, 'a click zoomed in');
  await offline.mouse.move(box.x + 300, box.y + ROW / 2);
  await offline.locator('.kiln-fg-tooltip').waitFor({ state: 'visible' });
  await screenshot(offline, 'standalone-synthetic');
  await offline.click('#reset');
  assert.equal(await offline.isDisabled('#reset'), true);
  assert.deepEqual(offline.problems, []);
  await offline.close();
});

test('standalone page keeps frame names with markup inert and shows diffs', async () => {
  const hostile = structuredClone(DOUBLE);
  hostile.flamebearer.names[2] = '</script><img src=x onerror=alert(1)>';
  const offline = await newPage(browser);
  await offline.route('**/*', (route) => route.fulfill({ contentType: 'text/html', body: fillStandalone(hostile) }));
  await offline.goto('http://standalone.test/');
  await offline.waitForFunction(() => /frames drawn/.test(document.querySelector('canvas')?.getAttribute('aria-label') || ''));
  assert.equal(await offline.locator('img').count(), 0);
  assert.match(await offline.locator('#title').innerText(), /\(diff\)/);
  assert.match(await offline.locator('#info').innerText(), /baseline 1 s · comparison 1 s/);
  assert.deepEqual(offline.problems, []);
  await offline.close();
});

test('the unfilled standalone page says it has no data', async () => {
  const offline = await newPage(browser);
  await offline.goto(`${base}/ui/standalone.html`);
  await offline.locator('.message').waitFor();
  assert.match(await offline.locator('.message').innerText(), /no profile data/);
  assert.deepEqual(offline.problems, []);
  await offline.close();
});
