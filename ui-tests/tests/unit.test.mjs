// Unit tests of the UI's data modules (pure ES modules, no DOM needed), on the worked examples of the
// flamebearer format and on small hand-checked trees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeProfile,
  nodeIndexAt,
  packageOf,
  colorForName,
  colorForChange,
  relativeChange,
  formatValue,
  formatPercent,
  nameMatcher,
} from '../../daemon/ui/flamegraph.js';
import { functionTotals, diffFunctionTotals, buildSandwich, toProfile } from '../../daemon/ui/calltree.js';
import { parseQuery, formatQuery, parseTime, splitAppName } from '../../daemon/ui/query.js';

// names/levels for folded `foo;bar 100` + `foo;baz 200`.
const single = {
  version: 1,
  flamebearer: {
    names: ['total', 'foo', 'baz', 'bar'],
    levels: [[0, 300, 0, 0], [0, 300, 0, 1], [0, 100, 100, 3, 0, 200, 200, 2]],
    numTicks: 300,
    maxSelf: 200,
  },
  metadata: { format: 'single', units: 'samples', sampleRate: 100 },
};

// left `foo;bar 100`; right `foo;bar 50`, `foo;baz 50`.
const double = {
  version: 1,
  flamebearer: {
    names: ['total', 'foo', 'baz', 'bar'],
    levels: [
      [0, 100, 0, 0, 100, 0, 0],
      [0, 100, 0, 0, 100, 0, 1],
      [0, 100, 100, 0, 50, 50, 3, 0, 0, 0, 0, 50, 50, 2],
    ],
    numTicks: 200,
    maxSelf: 100,
  },
  metadata: { format: 'double', units: 'samples', sampleRate: 100 },
  leftTicks: 100,
  rightTicks: 100,
};

test('decodes single-format levels into absolute offsets with parents', () => {
  const data = decodeProfile(single);
  assert.equal(data.format, 'single');
  assert.equal(data.numTicks, 300);
  const l2 = data.levels[2];
  assert.deepEqual([...l2.x], [0, 100]);
  assert.deepEqual([...l2.total], [100, 200]);
  assert.deepEqual([...l2.self], [100, 200]);
  assert.deepEqual([...l2.name].map((n) => data.names[n]), ['bar', 'baz']);
  assert.deepEqual([...l2.parent], [0, 0]);
  assert.equal(nodeIndexAt(l2, 99), 0);
  assert.equal(nodeIndexAt(l2, 100), 1);
  assert.equal(nodeIndexAt(l2, 300), -1);
});

test('decodes delta-encoded gaps between siblings', () => {
  // Level 1 holds a (x 0, total 10) and b starting 5 ticks after a ends (x 15).
  const data = decodeProfile({
    flamebearer: { names: ['total', 'a', 'b', 'c'], levels: [[0, 30, 0, 0], [0, 10, 0, 1, 5, 10, 10, 2], [0, 4, 4, 3, 0, 6, 6, 3]], numTicks: 30 },
    metadata: { format: 'single' },
  });
  assert.deepEqual([...data.levels[1].x], [0, 15]);
  assert.deepEqual([...data.levels[2].x], [0, 4]);
  assert.deepEqual([...data.levels[2].parent], [0, 0]);
  assert.equal(nodeIndexAt(data.levels[1], 12), -1, 'the gap belongs to the parent self');
});

test('decodes the double format with both sides and combined widths', () => {
  const data = decodeProfile(double);
  assert.equal(data.format, 'double');
  assert.equal(data.leftTicks, 100);
  assert.equal(data.rightTicks, 100);
  const l2 = data.levels[2];
  assert.deepEqual([...l2.totalL], [100, 0]);
  assert.deepEqual([...l2.totalR], [50, 50]);
  assert.deepEqual([...l2.x], [0, 150], 'x = xL + xR');
  assert.deepEqual([...l2.total], [150, 50]);
  assert.equal(relativeChange(100, 100, 50, 100), -0.5);
  assert.equal(relativeChange(0, 100, 50, 100), Infinity);
});

test('function totals count recursion once and sum self everywhere', () => {
  // a -> a -> b (10), a (5 self at the outer a)
  const profile = toProfile(tree('root', 0, [tree('a', 5, [tree('a', 0, [tree('b', 10, [])])])]));
  profile.flamebearer.names[0] = 'total';
  const rows = functionTotals(decodeProfile(profile));
  const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
  assert.deepEqual(byName.a, { name: 'a', self: 5, total: 15 });
  assert.deepEqual(byName.b, { name: 'b', self: 10, total: 10 });
  assert.equal(byName.total, undefined, 'the root is not a function');
});

test('diff function totals compare shares of each side', () => {
  const rows = diffFunctionTotals(decodeProfile(double));
  const bar = rows.find((r) => r.name === 'bar');
  const baz = rows.find((r) => r.name === 'baz');
  assert.equal(bar.selfL, 100);
  assert.equal(bar.selfR, 50);
  assert.equal(bar.selfDelta, -0.5);
  assert.equal(baz.selfDelta, 0.5);
});

test('sandwich merges callers and callees of every call', () => {
  // total -> main -> work -> hash (30); total -> main -> hash (10); total -> gc -> hash (5) -> sweep (2)
  const root = tree('total', 0, [
    tree('main', 0, [tree('work', 0, [tree('hash', 30, [])]), tree('hash', 10, [])]),
    tree('gc', 0, [tree('hash', 3, [tree('sweep', 2, [])])]),
  ]);
  const data = decodeProfile(toProfile(root, { units: 'samples' }));
  const { callers, callees } = buildSandwich(data, 'hash');
  const ce = decodeProfile(callees);
  assert.equal(ce.numTicks, 45);
  assert.equal(ce.names[ce.levels[0].name[0]], 'hash');
  assert.equal(ce.levels[0].self[0], 43);
  assert.deepEqual(levelNames(ce, 1), ['sweep']);
  const cr = decodeProfile(callers);
  assert.equal(cr.numTicks, 45);
  assert.deepEqual(levelNames(cr, 1), ['gc', 'main', 'work']);
  assert.deepEqual([...cr.levels[1].total], [5, 10, 30]);
  assert.deepEqual(levelNames(cr, 2), ['main']);
  assert.equal(cr.levels[2].total[0], 30, 'work is called by main');
});

test('toProfile follows the flamebearer layout rules', () => {
  const p = toProfile(tree('total', 0, [tree('foo', 0, [tree('bar', 100, []), tree('baz', 200, [])])]));
  assert.deepEqual(p.flamebearer.names, ['total', 'foo', 'bar', 'baz']);
  assert.deepEqual(p.flamebearer.levels, [[0, 300, 0, 0], [0, 300, 0, 1], [0, 100, 100, 2, 0, 200, 200, 3]]);
  assert.equal(p.flamebearer.numTicks, 300);
  assert.equal(p.flamebearer.maxSelf, 200);
});

test('package of a frame picks its colour', () => {
  assert.equal(packageOf('crypto/sha256.block'), 'crypto/sha256');
  assert.equal(packageOf('main.(*Worker).run'), 'main');
  assert.equal(packageOf('runtime.mallocgc'), 'runtime');
  assert.equal(packageOf('com.example.Workload.hash'), 'com.example.Workload');
  assert.equal(packageOf('java/lang/String.hashCode'), 'java/lang/String');
  assert.equal(packageOf('std::io::read'), 'std::io');
  assert.equal(packageOf('deflate'), 'deflate');
  assert.equal(colorForName('runtime.mallocgc'), colorForName('runtime.scanobject'));
  assert.notEqual(colorForName('runtime.mallocgc'), colorForName('sort.insertionSort'));
  assert.equal(colorForChange(0), 'rgb(200, 200, 200)');
  assert.match(colorForChange(1), /^rgb\(229, 72, 77\)$/);
  assert.match(colorForChange(-1), /^rgb\(48, 164, 108\)$/);
});

test('values are formatted with the profile units', () => {
  assert.equal(formatValue(250, { units: 'samples', sampleRate: 100 }), '2.50 s');
  assert.equal(formatValue(3 * 1024 * 1024, { units: 'bytes' }), '3 MiB');
  assert.equal(formatValue(1500, { units: 'objects' }), '1.50k objects');
  assert.equal(formatValue(2_000_000, { units: 'nanoseconds' }), '2 ms');
  assert.equal(formatPercent(1, 3), '33.3%');
  assert.equal(formatPercent(0, 0), '0%');
});

test('search matches substrings and /regular expressions/', () => {
  assert.equal(nameMatcher(''), null);
  assert.ok(nameMatcher('SHA')('crypto/sha256.block'));
  assert.ok(nameMatcher('/^runtime\\./')('runtime.mallocgc'));
  assert.ok(!nameMatcher('/^runtime\\./')('main.runtime'));
  assert.ok(nameMatcher('/(unclosed/')('x/(unclosed/y'), 'an invalid expression falls back to text');
});

test('queries parse into app, type and matchers and back', () => {
  const q = parseQuery('my-app.cpu{env="prod", region=~"eu-.*",host!="a\\"b"}');
  assert.equal(q.app, 'my-app');
  assert.equal(q.type, 'cpu');
  assert.deepEqual(q.matchers, [
    { name: 'env', op: '=', value: 'prod' },
    { name: 'region', op: '=~', value: 'eu-.*' },
    { name: 'host', op: '!=', value: 'a"b' },
  ]);
  assert.equal(formatQuery(q), 'my-app.cpu{env="prod",region=~"eu-.*",host!="a\\"b"}');
  assert.deepEqual(parseQuery('app.alloc_space'), { app: 'app', type: 'alloc_space', matchers: [] });
  assert.deepEqual(splitAppName('a.b.inuse_space'), { app: 'a.b', type: 'inuse_space' });
});

test('times accept now-relative expressions and Unix seconds or milliseconds', () => {
  const now = 1_700_000_000;
  assert.equal(parseTime('now', now), now);
  assert.equal(parseTime('now-1h', now), now - 3600);
  assert.equal(parseTime('now-30m', now), now - 1800);
  assert.equal(parseTime('now-7d', now), now - 7 * 86400);
  assert.equal(parseTime('1690000000', now), 1690000000);
  assert.equal(parseTime('1690000000000', now), 1690000000);
  assert.equal(parseTime('garbage-', now), null);
});

function tree(name, self, children) {
  const node = { name, self, total: self, children: new Map() };
  for (const c of children) {
    node.children.set(c.name, c);
    node.total += c.total;
  }
  return node;
}

function levelNames(data, d) {
  return [...data.levels[d].name].map((n) => data.names[n]);
}
