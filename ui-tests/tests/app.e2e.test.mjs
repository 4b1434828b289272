// The web UI end to end, in headless Chromium against a real Kiln daemon holding the testdata
// profiles (ci-test.sh starts it and pushes them, and passes its address in KILN_URL).
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { launchBrowser, newPage, screenshot, waitReady, ARTIFACTS } from '../lib/browser.mjs';

const BASE = process.env.KILN_URL;
const APP = 'uitest';
const QUERY = `${APP}.cpu`;
const EXPORTS = path.join(ARTIFACTS, 'exports');

let browser;
let page;
let cpu; // /render JSON of QUERY over the last hour, straight from the API

async function api(pathAndQuery) {
  const res = await fetch(`${BASE}/${pathAndQuery}`);
  assert.equal(res.status, 200, `${pathAndQuery}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

function params() {
  return new URL(page.url()).searchParams;
}

/** Waits for the URL to satisfy `check(searchParams)`, then for the UI to finish updating. */
async function settle(check, what) {
  await page.waitForFunction((source) => new Function('p', `return (${source})(p)`)(new URLSearchParams(location.search)), check.toString(), {
    timeout: 10000,
  }).catch(() => assert.fail(`URL never reached: ${what} (now ${page.url()})`));
  await waitReady(page);
}

async function open(search) {
  await page.goto(`${BASE}/${search}`);
  await waitReady(page);
}

/** Number of frames a flamegraph canvas reports having drawn. */
async function framesDrawn(locator) {
  const label = await locator.getAttribute('aria-label');
  const m = /flamegraph, (\d+) frames drawn/.exec(label || '');
  return m ? Number(m[1]) : 0;
}

function visibleFlamegraph(scope = '.view:not([hidden])') {
  return page.locator(`${scope} .flamegraph-pane .kiln-fg-canvas`).first();
}

async function tableNames(scope) {
  return page.locator(`${scope} tbody tr:not(.spacer):not(.empty) .fn-name`).allInnerTexts();
}

before(async () => {
  assert.ok(BASE, 'KILN_URL is not set: run ui-tests/ci-test.sh, which starts the daemon and loads the test data');
  const health = await fetch(`${BASE}/healthz`).catch((err) => assert.fail(`Kiln at ${BASE} does not answer: ${err.message}`));
  assert.equal(health.status, 200);
  cpu = await api(`render?query=${encodeURIComponent(QUERY)}&from=now-1h&until=now&format=json`);
  assert.ok(cpu.flamebearer.numTicks > 0, 'the test data is in the daemon');
  mkdirSync(EXPORTS, { recursive: true });
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

test('opens on an application and shows timeline, table and flamegraph', async () => {
  await open('');
  assert.ok(params().get('query'), 'an application is picked when the URL has none');
  await page.selectOption('#app-select', APP);
  await settle((p) => p.get('query') === 'uitest.cpu', 'query=uitest.cpu');
  assert.equal(await page.inputValue('#type-select'), 'cpu');
  const types = await page.locator('#type-select option').allInnerTexts();
  for (const t of ['cpu', 'inuse_space']) assert.ok(types.includes(t), `type ${t} offered (got ${types})`);
  assert.ok((await framesDrawn(visibleFlamegraph())) > 20);
  // The table holds every function of the response, never a truncated list.
  const caption = await page.locator('.view:not([hidden]) .top-table .table-caption').innerText();
  assert.equal(Number(caption.replace(/\D/g, '')), cpu.functions.length);
  const timelineBox = page.locator('.explore-view .timeline-box canvas');
  assert.ok((await timelineBox.boundingBox()).height > 50);
  await screenshot(page, 'explore');
});

test('click zooms, Reset zoom and the back button undo it', async () => {
  await open(`?query=${QUERY}`);
  const canvas = visibleFlamegraph();
  const before = await framesDrawn(canvas);
  const box = await canvas.boundingBox();
  // Level 2 at the middle of the graph lies inside runtime.main / main.main in the Go CPU profile.
  await page.mouse.click(box.x + box.width / 2, box.y + 2 * 18 + 9);
  await settle((p) => /^2:\d+$/.test(p.get('zoom') || ''), 'zoom=2:<tick>');
  assert.equal(await page.isDisabled('.explore-view .reset-zoom'), false);
  await page.mouse.click(box.x + box.width / 2, box.y + 4 * 18 + 9);
  await settle((p) => /^4:\d+$/.test(p.get('zoom') || ''), 'zoom=4:<tick>');
  assert.notEqual(await framesDrawn(canvas), before);
  await screenshot(page, 'explore-zoomed');
  await page.goBack();
  await settle((p) => /^2:/.test(p.get('zoom') || ''), 'back to zoom level 2');
  await page.click('.explore-view .reset-zoom');
  await settle((p) => !p.get('zoom'), 'no zoom');
  assert.equal(await framesDrawn(canvas), before);
});

test('tooltip shows self and total of the frame under the mouse', async () => {
  await open(`?query=${QUERY}`);
  const box = await visibleFlamegraph().boundingBox();
  await page.mouse.move(box.x + 5, box.y + 9);
  const tooltip = page.locator('.kiln-fg-tooltip').first();
  await tooltip.waitFor({ state: 'visible' });
  const text = await tooltip.innerText();
  assert.match(text, /^total\nTotal: .+ \(100\.0%\)\nSelf: /);
});

test('search highlights frames and filters the table', async () => {
  await open(`?query=${QUERY}`);
  await page.fill('.explore-view input.search', 'sha256');
  await settle((p) => p.get('search') === 'sha256', 'search=sha256');
  const names = await tableNames('.explore-view .top-table');
  const expected = cpu.functions.filter((f) => f.name.toLowerCase().includes('sha256')).map((f) => f.name);
  assert.ok(expected.length > 0);
  assert.deepEqual(names.slice().sort(), expected.slice().sort());
  assert.match(await page.locator('.explore-view .match-info').innerText(), /^\d+ matching · [\d.]+% of total$/);
  await screenshot(page, 'explore-search');
});

test('table sorts by total and by name', async () => {
  await open(`?query=${QUERY}&layout=table`);
  await page.click('.explore-view .top-table th[data-key="total"]');
  await settle((p) => p.get('sort') === 'total', 'sort=total');
  const maxTotal = Math.max(...cpu.functions.map((f) => f.total));
  const first = (await tableNames('.explore-view .top-table'))[0];
  assert.equal(cpu.functions.find((f) => f.name === first).total, maxTotal);
  await page.click('.explore-view .top-table th[data-key="name"]');
  await settle((p) => p.get('sort') === 'name:asc', 'sort=name:asc');
  const names = await tableNames('.explore-view .top-table');
  assert.deepEqual(names, names.slice().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  assert.equal(await page.locator('.explore-view .flamegraph-pane').isVisible(), false, 'table layout hides the flamegraph');
  await screenshot(page, 'table');
});

test('sandwich view shows callers and callees of a function picked in the table', async () => {
  await open(`?query=${QUERY}&search=sha256.block`);
  const row = page.locator('.explore-view .top-table tbody tr', { hasText: 'crypto/sha256.block' }).first();
  await row.click({ button: 'right' });
  await page.click('.context-menu li:has-text("Sandwich view")');
  await settle((p) => p.get('layout') === 'sandwich' && p.get('fn') === 'crypto/sha256.block', 'sandwich of crypto/sha256.block');
  assert.equal(await page.locator('.explore-view .sandwich-title').innerText(), 'crypto/sha256.block');
  const callers = page.locator('.explore-view .callers .kiln-fg-canvas');
  const callees = page.locator('.explore-view .callees .kiln-fg-canvas');
  assert.ok((await framesDrawn(callers)) >= 3, 'callers: the function and the stacks above it');
  assert.ok((await framesDrawn(callees)) >= 1);
  const box = await callers.boundingBox();
  await page.mouse.move(box.x + 5, box.y + box.height - 9);
  const tooltip = await page.locator('.callers .kiln-fg-tooltip').innerText();
  const share = (100 * cpu.functions.find((f) => f.name === 'crypto/sha256.block').total) / cpu.flamebearer.numTicks;
  assert.match(tooltip, /^crypto\/sha256\.block\nTotal: .+ \((\d+\.\d+)%\)$/);
  assert.ok(Math.abs(parseFloat(/\((\d+\.\d+)%\)/.exec(tooltip)[1]) - share) < 0.1, 'percent of the whole profile');
  await screenshot(page, 'sandwich');
});

test('label selector autocompletes names and values', async () => {
  await open(`?query=${QUERY}`);
  await page.click('#main-selector-name');
  await page.keyboard.type('reg');
  await page.click('.querybar .suggestions li:text-is("region")');
  await page.click('#main-selector-value');
  const values = page.locator('.querybar .suggestions:visible li');
  await values.first().waitFor();
  assert.deepEqual((await values.allInnerTexts()).sort(), ['eu', 'us']);
  await page.click('.querybar .suggestions li:text-is("eu")');
  await settle((p) => p.get('query') === 'uitest.cpu{region="eu"}', 'query with region="eu"');
  assert.equal(await page.locator('.querybar .chip').innerText().then((t) => t.replace('×', '').trim()), 'region="eu"');
  const eu = await api(`render?query=${encodeURIComponent('uitest.cpu{region="eu"}')}&from=now-1h&until=now&format=json`);
  const caption = await page.locator('.explore-view .top-table .table-caption').innerText();
  assert.equal(Number(caption.replace(/\D/g, '')), eu.functions.length);
  await page.click('.querybar .chip-remove');
  await settle((p) => p.get('query') === 'uitest.cpu', 'matcher removed');
});

test('time range presets, drag-select on the timeline, and back/forward', async () => {
  await open(`?query=${QUERY}`);
  await page.selectOption('#range-preset', 'now-6h');
  await settle((p) => p.get('from') === 'now-6h', 'from=now-6h');
  assert.equal(await page.inputValue('#from-input'), 'now-6h');
  const box = await page.locator('.explore-view .timeline-box canvas').boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.99, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await settle((p) => /^\d+$/.test(p.get('from') || '') && /^\d+$/.test(p.get('until') || ''), 'absolute from/until');
  const span = Number(params().get('until')) - Number(params().get('from'));
  assert.ok(span > 2.5 * 3600 && span < 3.1 * 3600, `about half of 6 h selected, got ${span} s`);
  assert.equal(await page.inputValue('#range-preset'), '', 'the preset reads "Custom range"');
  assert.match(await page.inputValue('#from-input'), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}/);
  assert.ok((await framesDrawn(visibleFlamegraph())) > 20, 'the last 3 h still hold both pushes');
  await screenshot(page, 'explore-drag-selected');
  await page.goBack();
  await settle((p) => p.get('from') === 'now-6h', 'back to the preset');
  await page.goForward();
  await settle((p) => /^\d+$/.test(p.get('from') || ''), 'forward to the selection');
  await page.fill('#from-input', 'now-2h');
  await page.fill('#until-input', 'now-1m');
  await page.click('#apply-range');
  await settle((p) => p.get('from') === 'now-2h' && p.get('until') === 'now-1m', 'typed range');
});

test('a link reproduces the view', async () => {
  const link = `?query=${encodeURIComponent('uitest.cpu{region="us"}')}&from=now-2h&layout=flamegraph&search=sort`;
  await open(link);
  assert.equal(await page.inputValue('.explore-view input.search'), 'sort');
  assert.equal(await page.locator('.querybar .chip').count(), 1);
  assert.equal(await page.inputValue('#from-input'), 'now-2h');
  assert.equal(await page.locator('.explore-view .seg.active').innerText(), 'Flamegraph');
  assert.equal(await page.locator('.explore-view .table-pane').isVisible(), false);
});

test('diff of two time ranges: double-format response, diff flamegraph and table', async () => {
  await open(`?query=${QUERY}`);
  await page.click('.tab[data-view="diff"]');
  await settle((p) => p.get('view') === 'diff', 'view=diff');
  const sides = page.locator('.diff-view .side');
  assert.equal(await sides.count(), 2);
  for (const side of ['left', 'right']) {
    assert.match(await page.locator(`.diff-view .side-${side} .side-range`).innerText(), /^\d{4}-.+ → \d{4}-/);
  }
  // The response is the double format: 7 ints per node, and both sides have samples.
  const link = await page.locator('.diff-view .export-menu a[data-format="json"]').getAttribute('href');
  const diff = await api(link);
  assert.equal(diff.metadata.format, 'double');
  assert.ok(diff.leftTicks > 0 && diff.rightTicks > 0, `both sides have samples (${diff.leftTicks}, ${diff.rightTicks})`);
  assert.ok(diff.flamebearer && Array.isArray(diff.flamebearer.levels), 'render-diff returns the flamebearer levels');
  for (const level of diff.flamebearer.levels) assert.equal(level.length % 7, 0);
  assert.ok((await framesDrawn(page.locator('.diff-view .flamegraph-pane .kiln-fg-canvas'))) > 20);
  assert.ok((await tableNames('.diff-view .diff-table')).length > 10);
  await screenshot(page, 'diff');
});

test('diff of two selectors ranks the function that grew first', async () => {
  // The folded app: baseline region=eu against comparison region=us, over the same hour.
  await open('?view=diff&query=uitest-folded.cpu&leftQuery=uitest-folded.cpu%7Bregion%3D%22eu%22%7D&rightQuery=uitest-folded.cpu%7Bregion%3D%22us%22%7D&leftFrom=now-1h&leftUntil=now&rightFrom=now-1h&rightUntil=now');
  await page.click('.diff-view .diff-table th[data-key="selfDelta"]');
  await page.click('.diff-view .diff-table th[data-key="selfDelta"]');
  await settle((p) => p.get('sort') === 'selfDelta', 'sorted by self change');
  const top = (await tableNames('.diff-view .diff-table'))[0];
  assert.equal(top, 'decodeString', 'the function pushed more often ranks first');
  assert.match(await page.locator('.diff-view .diff-table tbody tr').first().locator('.delta').first().innerText(), /^\+/);
  await screenshot(page, 'diff-selectors');
});

test('compare view shows both flamegraphs side by side', async () => {
  await open(`?view=compare&query=${QUERY}`);
  const canvases = page.locator('.compare-view .side .kiln-fg-canvas');
  assert.equal(await canvases.count(), 2);
  for (let i = 0; i < 2; i++) assert.ok((await framesDrawn(canvases.nth(i))) > 20, `side ${i} drawn`);
  const [a, b] = [await canvases.nth(0).boundingBox(), await canvases.nth(1).boundingBox()];
  assert.ok(Math.abs(a.y - b.y) < 1 && b.x > a.x + a.width, 'side by side');
  // Drag on the comparison timeline picks its range.
  const tl = await page.locator('.compare-view .side-right .timeline-box canvas').boundingBox();
  await page.mouse.move(tl.x + tl.width * 0.6, tl.y + tl.height / 2);
  await page.mouse.down();
  await page.mouse.move(tl.x + tl.width * 0.9, tl.y + tl.height / 2, { steps: 4 });
  await page.mouse.up();
  await settle((p) => /^\d+$/.test(p.get('rightFrom') || ''), 'rightFrom set by dragging');
  assert.ok((await framesDrawn(canvases.nth(1))) > 20, 'the push 15 minutes ago is inside');
  await screenshot(page, 'compare');
});

test('tag explorer groups by a label with a timeline per value and a totals table', async () => {
  await open(`?view=tags&query=${QUERY}`);
  await page.selectOption('#group-by', 'region');
  await settle((p) => p.get('groupBy') === 'region', 'groupBy=region');
  const rows = page.locator('.tags-view .tags-table tbody tr:not(.spacer)');
  assert.equal(await rows.count(), 2);
  const values = await rows.locator('td:first-child').allInnerTexts();
  assert.deepEqual(values.sort(), ['eu', 'us']);
  const shares = await rows.locator('td:nth-child(3)').allInnerTexts();
  const sum = shares.reduce((s, t) => s + parseFloat(t), 0);
  assert.ok(Math.abs(sum - 100) < 0.2, `shares add up to 100% (${shares})`);
  await rows.filter({ hasText: 'us' }).click();
  await settle((p) => p.get('groupValue') === 'us', 'groupValue=us');
  const us = await api(`render?query=${encodeURIComponent('uitest.cpu{region="us"}')}&from=now-1h&until=now&format=json`);
  const caption = await page.locator('.tags-view .top-table .table-caption').innerText();
  assert.equal(Number(caption.replace(/\D/g, '')), us.functions.length);
  assert.ok((await framesDrawn(page.locator('.tags-view .flamegraph-pane .kiln-fg-canvas'))) > 20);
  await screenshot(page, 'tags');
});

test('dark theme follows prefers-color-scheme', async () => {
  const dark = await newPage(browser, { colorScheme: 'dark' });
  await dark.goto(`${BASE}/?query=${QUERY}`);
  await waitReady(dark);
  const bg = await dark.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = bg.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark background, got ${bg}`);
  await screenshot(dark, 'explore-dark');
  await dark.goto(`${BASE}/?view=diff&query=${QUERY}`);
  await waitReady(dark);
  await screenshot(dark, 'diff-dark');
  assert.deepEqual(dark.problems, []);
  await dark.context().close();
});

// ---------------------------------------------------------------------------------------------------
// Exports: each menu entry downloads a file that opens in the tool it is meant for.

/** Opens the export menu of the explore view and downloads one entry; returns the file's bytes. */
async function download(format) {
  await open(`?query=${QUERY}`);
  const link = page.locator(`.explore-view .export-menu [data-format="${format}"]`);
  const href = await link.getAttribute('href');
  if (href) {
    const res = await fetch(new URL(href, `${BASE}/`));
    assert.equal(res.status, 200, `GET ${href}: ${res.status} ${(await res.text()).slice(0, 300)}`);
  }
  await page.click('.explore-view .export-menu summary');
  const [file] = await Promise.all([page.waitForEvent('download'), link.click()]);
  assert.equal(await file.failure(), null);
  const target = path.join(EXPORTS, file.suggestedFilename());
  await file.saveAs(target);
  return { target, bytes: readFileSync(target), name: file.suggestedFilename() };
}

function assertPngNotBlank(bytes) {
  const png = PNG.sync.read(bytes);
  assert.ok(png.width >= 100 && png.height >= 18, `png is ${png.width}×${png.height}`);
  const colours = new Set();
  for (let i = 0; i < png.data.length; i += 4 * 7) colours.add(png.data.readUInt32BE(i));
  assert.ok(colours.size > 5, `png has only ${colours.size} colours`);
}

function goBinary() {
  for (const candidate of ['go', '/usr/local/go/bin/go', '/usr/lib/go/bin/go']) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  return assert.fail('Go is needed to check the pprof export with `go tool pprof`');
}

test('export json: the flamebearer of the view', async () => {
  const { bytes, name } = await download('json');
  assert.equal(name, 'uitest.cpu.json');
  const body = JSON.parse(bytes);
  assert.equal(body.flamebearer.numTicks, cpu.flamebearer.numTicks);
  assert.deepEqual(body.flamebearer.names.slice(0, 1), ['total']);
});

test('export pprof: go tool pprof reads it', async () => {
  const { target } = await download('pprof');
  const out = execFileSync(goBinary(), ['tool', 'pprof', '-top', target], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const top = cpu.functions.slice().sort((a, b) => b.self - a.self)[0].name;
  assert.ok(out.includes(top), `pprof -top lists ${top}:\n${out.slice(0, 800)}`);
});

test('export collapsed: one "stack count" line per stack, summing to the total', async () => {
  const { bytes } = await download('collapsed');
  const lines = bytes.toString('utf8').split('\n').filter((l) => l.trim());
  assert.ok(lines.length > 10);
  let sum = 0;
  for (const line of lines) {
    const m = /^(.+) (\d+)$/.exec(line);
    assert.ok(m, `not a folded line: ${line}`);
    sum += Number(m[2]);
  }
  assert.equal(sum, cpu.flamebearer.numTicks);
});

test('export speedscope: a speedscope file with frames and profiles', async () => {
  const { bytes } = await download('speedscope');
  const doc = JSON.parse(bytes);
  assert.match(doc.$schema, /speedscope/);
  assert.ok(Array.isArray(doc.shared.frames) && doc.shared.frames.length > 10);
  assert.ok(doc.shared.frames.every((f) => typeof f.name === 'string'));
  assert.ok(Array.isArray(doc.profiles) && doc.profiles.length >= 1);
  for (const p of doc.profiles) {
    assert.ok(['sampled', 'evented'].includes(p.type));
    if (p.type === 'sampled') {
      assert.equal(p.samples.length, p.weights.length);
      assert.ok(p.samples.flat().every((i) => i >= 0 && i < doc.shared.frames.length));
    } else {
      assert.ok(p.events.length > 0);
    }
  }
});

test('export svg: well-formed SVG with a rect per frame', async () => {
  const { bytes } = await download('svg');
  const text = bytes.toString('utf8');
  assert.match(text.trimStart(), /^(<\?xml[^>]*>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--[\s\S]*?-->\s*)?<svg[\s>]/);
  const parsed = await page.evaluate((svg) => {
    const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
    return { error: doc.querySelector('parsererror')?.textContent || '', root: doc.documentElement.localName, rects: doc.querySelectorAll('rect').length };
  }, text);
  assert.equal(parsed.error, '');
  assert.equal(parsed.root, 'svg');
  assert.ok(parsed.rects > 20, `${parsed.rects} rects`);
});

test('export png: a non-blank image', async () => {
  const { bytes } = await download('png');
  assertPngNotBlank(bytes);
});

test('export html: the standalone page holds the data and works offline', async () => {
  const { bytes } = await download('html');
  const html = bytes.toString('utf8');
  assert.ok(!html.includes('/*KILN_DATA*/') && !html.includes('/*KILN_FLAMEGRAPH_JS*/'), 'both placeholders are filled');
  assert.ok(html.includes('crypto/sha256.block'), 'the profile data is inside');
  const offline = await newPage(browser);
  await offline.route('**/*', (route) => (route.request().url() === 'http://export.test/' ? route.fulfill({ contentType: 'text/html', body: html }) : route.abort()));
  await offline.goto('http://export.test/');
  await offline.waitForFunction(() => /frames drawn/.test(document.querySelector('canvas')?.getAttribute('aria-label') || ''));
  assert.ok((await framesDrawn(offline.locator('canvas'))) > 20);
  await screenshot(offline, 'export-html');
  assert.deepEqual(offline.problems, []);
  await offline.context().close();
});

test('export png from the page: the canvas as drawn', async () => {
  const { bytes, name } = await download('canvas-png');
  assert.equal(name, 'uitest.cpu.flamegraph.png');
  assertPngNotBlank(bytes);
});

test('every export format is offered', async () => {
  await open(`?query=${QUERY}`);
  const formats = await page.locator('.explore-view .export-menu [data-format]').evaluateAll((els) => els.map((e) => e.dataset.format));
  assert.deepEqual(formats.sort(), ['canvas-png', 'collapsed', 'html', 'json', 'png', 'pprof', 'speedscope', 'svg']);
  assert.ok(existsSync(EXPORTS));
});
