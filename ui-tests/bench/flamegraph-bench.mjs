// Benchmark of flamegraph.js in headless Chromium on synthetic profiles: JSON parse and decode,
// first draw (the very first, then the median), redraw, zoomed redraw, search and hover hit-test.
// "First draw" is setData: per-profile set-up plus one synchronous draw of the canvas.
//
//   node bench/flamegraph-bench.mjs        (from ui-tests/, after npm ci)
import { createMockServer } from '../mock-server.mjs';
import { launchBrowser, newPage } from '../lib/browser.mjs';
import { syntheticProfile } from '../lib/synthetic.mjs';

const CASES = [
  { label: '10,000 nodes, 1 M samples', nodes: 10_000, samples: 1_000_000 },
  { label: '100,000 nodes, 1 M samples', nodes: 100_000, samples: 1_000_000 },
  { label: '300,000 nodes, 1 M samples', nodes: 300_000, samples: 1_000_000 },
];
const RUNS = 15;

const server = createMockServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await launchBrowser();
const page = await newPage(browser, { width: 1280, height: 800 });
await page.route(`${base}/bench`, (route) =>
  route.fulfill({ contentType: 'text/html', body: '<!doctype html><body style="margin:0"><div id="fg" style="width:1280px"></div></body>' }),
);
await page.goto(`${base}/bench`);
await page.evaluate(async () => {
  window.fgModule = await import('/ui/flamegraph.js');
});

console.log(`Chromium ${browser.version()}, canvas 1280 CSS px wide, device pixel ratio 1, median of ${RUNS} runs\n`);
console.log('| profile | frames drawn | JSON.parse | decode | first draw (cold) | first draw | redraw | zoomed redraw | search + redraw | hover hit-test |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const c of CASES) {
  const profile = syntheticProfile({ nodes: c.nodes, samples: c.samples });
  const r = await page.evaluate(
    ({ json, runs }) => {
      const { Flamegraph, decodeProfile } = window.fgModule;
      const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const time = (fn) => {
        const t = performance.now();
        fn();
        return performance.now() - t;
      };
      let profile;
      const parse = time(() => (profile = JSON.parse(json)));
      const box = document.getElementById('fg');
      box.replaceChildren();
      const fg = new Flamegraph(box);
      const decodes = [];
      let data;
      for (let i = 0; i < runs; i++) decodes.push(time(() => (data = decodeProfile(profile))));
      const firsts = [];
      for (let i = 0; i < runs; i++) firsts.push(time(() => fg.setData(data)));
      const redraws = [];
      for (let i = 0; i < runs; i++) redraws.push(time(() => fg.draw()));
      const drawn = fg.lastDrawn;
      // Zoom into the widest frame of level 3, as a click would.
      const lvl = data.levels[3];
      let widest = 0;
      for (let i = 1; i < lvl.length; i++) if (lvl.total[i] > lvl.total[widest]) widest = i;
      fg.zoom = { level: 3, index: widest };
      const zooms = [];
      for (let i = 0; i < runs; i++) zooms.push(time(() => fg.draw()));
      fg.zoom = null;
      const searches = [];
      for (let i = 0; i < runs; i++) searches.push(time(() => (fg.search(i % 2 ? 'sha256' : 'json'), fg.draw())));
      const rect = fg.canvas.getBoundingClientRect();
      // One hit-test is below the timer's resolution: time a thousand and divide.
      const hovers = 1000;
      const hoverTotal = time(() => {
        for (let i = 0; i < hovers; i++) {
          fg.nodeAtEvent({ clientX: rect.left + ((i * 37) % rect.width), clientY: rect.top + ((i * 7) % rect.height) });
        }
      });
      return { drawn, parse, decode: median(decodes), cold: firsts[0], first: median(firsts), redraw: median(redraws), zoom: median(zooms), search: median(searches), hover: hoverTotal / hovers };
    },
    { json: JSON.stringify(profile), runs: RUNS },
  );
  const ms = (v) => `${v.toFixed(v < 1 ? 3 : 1)} ms`;
  console.log(`| ${c.label} | ${r.drawn} | ${ms(r.parse)} | ${ms(r.decode)} | ${ms(r.cold)} | ${ms(r.first)} | ${ms(r.redraw)} | ${ms(r.zoom)} | ${ms(r.search)} | ${ms(r.hover)} |`);
}
await browser.close();
server.close();
