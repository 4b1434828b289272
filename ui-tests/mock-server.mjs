// A small stand-in for the Kiln daemon's query API, for developing the UI without the daemon:
// serves daemon/ui like the daemon does (index.html at /, other files at /ui/<path>) and answers
// /api/apps, /labels, /label-values, /render (json, groupBy) and /render-diff (json) from canned
// profiles built from testdata/collapsed.txt and a synthetic "shop" service.
//
//   node mock-server.mjs [port]      (default 4041; prints the URL when ready)
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { toProfile, functionTotals } from '../daemon/ui/calltree.js';
import { decodeProfile } from '../daemon/ui/flamegraph.js';
import { parseQuery, parseTime } from '../daemon/ui/query.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const uiDir = path.join(here, '..', 'daemon', 'ui');
const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.json': 'application/json' };

// ---------------------------------------------------------------------------------------------------
// Canned data: [{ app, type, labels, time, stacks: [[frames, value]] }]

function cannedProfiles(now) {
  const profiles = [];
  const folded = readFileSync(path.join(here, '..', 'testdata', 'collapsed.txt'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const cut = l.lastIndexOf(' ');
      return [l.slice(0, cut).split(';'), Number(l.slice(cut + 1))];
    });
  profiles.push({ app: 'collapsed', type: 'cpu', labels: {}, time: now - 1800, stacks: folded });
  profiles.push({ app: 'collapsed', type: 'cpu', labels: {}, time: now - 600, stacks: folded.map(([f, v], i) => [f, i % 2 ? v * 3 : v]) });
  const envs = ['prod', 'staging'];
  const regions = ['eu-west', 'us-east'];
  for (let t = now - 7200; t <= now; t += 10) {
    const k = Math.floor((t - now + 7200) / 10);
    for (const env of envs) {
      for (const region of regions) {
        const load = 1 + 0.5 * Math.sin(k / 30) + (env === 'prod' ? 1 : 0);
        const later = t > now - 1800;
        profiles.push({
          app: 'shop',
          type: 'cpu',
          labels: { env, region },
          time: t,
          stacks: [
            [['main', 'http.(*Server).Serve', 'shop/api.(*Handler).Checkout', 'crypto/sha256.block'], Math.round(40 * load * (later ? 2 : 1))],
            [['main', 'http.(*Server).Serve', 'shop/api.(*Handler).Checkout', 'encoding/json.Marshal'], Math.round(25 * load)],
            [['main', 'http.(*Server).Serve', 'shop/api.(*Handler).Search', 'sort.Sort', 'sort.insertionSort'], Math.round(30 * load)],
            [['main', 'http.(*Server).Serve', 'shop/api.(*Handler).Search', 'shop/db.Query', 'crypto/sha256.block'], Math.round(10 * load)],
            [['main', 'shop/worker.Run', 'compress/flate.(*compressor).deflate'], Math.round(later ? 5 : 20)],
            [['runtime.gcBgMarkWorker', 'runtime.scanobject'], Math.round(8 * load)],
          ],
        });
        profiles.push({
          app: 'shop',
          type: 'alloc_space',
          labels: { env, region },
          time: t,
          stacks: [
            [['main', 'shop/api.(*Handler).Checkout', 'encoding/json.Marshal', 'runtime.mallocgc'], 4096 * Math.round(10 * load)],
            [['main', 'shop/worker.Run', 'bytes.(*Buffer).grow', 'runtime.mallocgc'], 4096 * 7],
          ],
        });
      }
    }
  }
  return profiles;
}

const METADATA = {
  cpu: { spyName: 'gospy', sampleRate: 100, units: 'samples' },
  alloc_space: { spyName: 'gospy', sampleRate: 100, units: 'bytes' },
};

function matches(profile, q) {
  if (profile.app !== q.app || profile.type !== q.type) return false;
  return q.matchers.every(({ name, op, value }) => {
    const v = profile.labels[name] ?? '';
    if (op === '=') return v === value;
    if (op === '!=') return v !== value;
    const re = new RegExp(`^(?:${value})$`);
    return op === '=~' ? re.test(v) : !re.test(v);
  });
}

function select(profiles, query, from, until) {
  const q = parseQuery(query);
  return profiles.filter((p) => p.time >= from && p.time < until && matches(p, q));
}

function mergeTree(selected) {
  const root = { name: 'total', self: 0, total: 0, children: new Map() };
  for (const p of selected) {
    for (const [frames, value] of p.stacks) {
      let node = root;
      node.total += value;
      for (const f of frames) {
        let child = node.children.get(f);
        if (!child) node.children.set(f, (child = { name: f, self: 0, total: 0, children: new Map() }));
        child.total += value;
        node = child;
      }
      node.self += value;
    }
  }
  return root;
}

function timelineOf(selected, from, until) {
  const step = Math.max(10, Math.ceil((until - from) / 1024 / 10) * 10);
  const start = Math.floor(from / step) * step;
  const samples = new Array(Math.ceil((until - start) / step)).fill(0);
  for (const p of selected) {
    const i = Math.floor((p.time - start) / step);
    if (i >= 0 && i < samples.length) samples[i] += p.stacks.reduce((s, [, v]) => s + v, 0);
  }
  return { startTime: start, samples, durationDelta: step, watermarks: null };
}

// The double format: align both trees so each node exists on both sides, 7 ints per node.
export function diffProfile(left, right, metadata) {
  const names = [];
  const index = new Map();
  const intern = (n) => (index.has(n) ? index.get(n) : (index.set(n, names.length), names.push(n), names.length - 1));
  const empty = (name) => ({ name, self: 0, total: 0, children: new Map() });
  const levels = [];
  let row = [{ l: left, r: right, xL: 0, xR: 0 }];
  let maxSelf = 0;
  while (row.length) {
    const out = [];
    const next = [];
    let endL = 0;
    let endR = 0;
    for (const { l, r, xL, xR } of row) {
      out.push(xL - endL, l.total, l.self, xR - endR, r.total, r.self, intern(l.name));
      endL = xL + l.total;
      endR = xR + r.total;
      maxSelf = Math.max(maxSelf, l.self, r.self);
      const childNames = [...new Set([...l.children.keys(), ...r.children.keys()])].sort();
      let cL = xL + l.self;
      let cR = xR + r.self;
      for (const n of childNames) {
        const cl = l.children.get(n) || empty(n);
        const cr = r.children.get(n) || empty(n);
        next.push({ l: cl, r: cr, xL: cL, xR: cR });
        cL += cl.total;
        cR += cr.total;
      }
    }
    levels.push(out);
    row = next;
  }
  return {
    version: 1,
    flamebearer: { names, levels, numTicks: left.total + right.total, maxSelf },
    metadata: { ...metadata, format: 'double' },
    leftTicks: left.total,
    rightTicks: right.total,
    timeline: null,
    groups: null,
  };
}

// ---------------------------------------------------------------------------------------------------

export function createMockServer() {
  const profiles = cannedProfiles(Math.floor(Date.now() / 1000));
  const json = (res, body, status = 200) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const range = (params, fromKey = 'from', untilKey = 'until') => [
    parseTime(params.get(fromKey) || 'now-1h'),
    parseTime(params.get(untilKey) || 'now'),
  ];
  const render = (params) => {
    const query = params.get('query') || '';
    const [from, until] = range(params);
    const selected = select(profiles, query, from, until);
    const root = mergeTree(selected);
    const { type } = parseQuery(query);
    const body = toProfile(root, { ...(METADATA[type] || {}), name: type });
    body.timeline = timelineOf(selected, from, until);
    body.functions = functionTotals(decodeProfile(body));
    body.groups = null;
    const groupBy = params.get('groupBy');
    if (groupBy) {
      body.groups = {};
      for (const value of new Set(selected.map((p) => p.labels[groupBy] ?? '*'))) {
        body.groups[value] = timelineOf(selected.filter((p) => (p.labels[groupBy] ?? '*') === value), from, until);
      }
    }
    return body;
  };

  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const params = url.searchParams;
    try {
      if (url.pathname === '/' || url.pathname.startsWith('/ui/')) {
        const rel = url.pathname === '/' ? 'index.html' : url.pathname.slice(4);
        const file = path.join(uiDir, path.normalize(rel).replace(/^(\.\.[/\\])+/, ''));
        const body = await readFile(file);
        res.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream' });
        res.end(body);
      } else if (url.pathname === '/healthz') {
        res.end('ok');
      } else if (url.pathname === '/api/apps') {
        const apps = [...new Set(profiles.map((p) => `${p.app}.${p.type}`))].sort();
        json(res, apps.map((name) => ({ name, ...METADATA[name.slice(name.lastIndexOf('.') + 1)] })));
      } else if (url.pathname === '/labels') {
        const q = parseQuery(params.get('query') || '');
        const keys = new Set(['__name__']);
        profiles.filter((p) => !q.app || (p.app === q.app && p.type === q.type)).forEach((p) => Object.keys(p.labels).forEach((k) => keys.add(k)));
        json(res, [...keys].sort());
      } else if (url.pathname === '/label-values') {
        const label = params.get('label');
        if (!label) return json(res, { error: 'label parameter is required' }, 400);
        const q = parseQuery(params.get('query') || '');
        const values = new Set(
          profiles
            .filter((p) => !q.app || (p.app === q.app && p.type === q.type))
            .map((p) => (label === '__name__' ? `${p.app}.${p.type}` : p.labels[label]))
            .filter((v) => v !== undefined),
        );
        json(res, [...values].sort());
      } else if (url.pathname === '/render') {
        if ((params.get('format') || 'json') !== 'json') return json(res, { error: 'the mock renders json only' }, 400);
        json(res, render(params));
      } else if (url.pathname === '/render-diff') {
        const side = (prefix) => {
          const [from, until] = range(params, `${prefix}From`, `${prefix}Until`);
          return mergeTree(select(profiles, params.get(`${prefix}Query`) || '', from, until));
        };
        const { type } = parseQuery(params.get('rightQuery') || '');
        json(res, diffProfile(side('left'), side('right'), { ...(METADATA[type] || {}), name: type }));
      } else {
        json(res, { error: 'not found' }, 404);
      }
    } catch (err) {
      json(res, { error: String(err && err.message) }, err && err.code === 'ENOENT' ? 404 : 500);
    }
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const port = Number(process.argv[2] || 4041);
  createMockServer().listen(port, '127.0.0.1', () => console.log(`mock Kiln on http://127.0.0.1:${port}/`));
}
