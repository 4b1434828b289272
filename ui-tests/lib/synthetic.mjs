// Synthetic flamebearer profiles of a chosen size, for the flamegraph tests and the benchmark.
import { toProfile } from '../../daemon/ui/calltree.js';

// Small deterministic PRNG (mulberry32), so every run draws the same profile.
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PACKAGES = ['runtime', 'main', 'net/http', 'crypto/sha256', 'encoding/json', 'sort', 'compress/flate', 'bytes', 'strings', 'sync'];

/**
 * A profile with `nodes` call-tree nodes (besides the root) spread over at most `maxDepth` levels,
 * whose leaves hold `samples` ticks in all. Returns the render-response JSON shape.
 */
export function syntheticProfile({ nodes = 10000, samples = 1_000_000, maxDepth = 40, seed = 1 } = {}) {
  const rand = random(seed);
  const root = { name: 'total', self: 0, total: 0, children: new Map(), depth: 0 };
  const all = [root];
  let serial = 0;
  while (all.length - 1 < nodes) {
    // Prefer recent nodes as parents so stacks get deep, like real profiles.
    let parent = all[Math.max(0, all.length - 1 - Math.floor(rand() * Math.min(all.length, 64)))];
    if (parent.depth >= maxDepth) parent = all[Math.floor(rand() * rand() * all.length)];
    if (parent.depth >= maxDepth) continue;
    const pkg = PACKAGES[Math.floor(rand() * PACKAGES.length)];
    const name = `${pkg}.fn${serial++}`;
    const child = { name, self: 0, total: 0, children: new Map(), depth: parent.depth + 1 };
    parent.children.set(name, child);
    all.push(child);
  }
  // Spread the samples over every node as self time, with a skew so some frames dominate.
  const weights = all.map(() => rand() ** 3);
  const sum = weights.reduce((a, b) => a + b, 0);
  let left = samples;
  all.forEach((node, i) => {
    const v = i === all.length - 1 ? left : Math.min(left, Math.round((weights[i] / sum) * samples));
    node.self = v;
    left -= v;
  });
  const fillTotals = (node) => {
    node.total = node.self;
    for (const c of node.children.values()) node.total += fillTotals(c);
    return node.total;
  };
  fillTotals(root);
  return toProfile(root, { units: 'samples', sampleRate: 100, name: 'synthetic' });
}
