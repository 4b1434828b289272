// Call trees computed in the browser from decoded flamebearer levels (see decodeProfile in
// flamegraph.js): per-function totals for tables, the sandwich view's callers and callees, and the
// encoding of a tree back into a flamebearer so flamegraph.js can draw it.

/** For every node, the index range [first, end) of its children on the level below. */
export function childRanges(data) {
  return data.levels.map((lvl, d) => {
    const first = new Int32Array(lvl.length).fill(0);
    const end = new Int32Array(lvl.length).fill(0);
    const below = data.levels[d + 1];
    if (below) {
      for (let i = below.length - 1; i >= 0; i--) {
        const p = below.parent[i];
        if (p < 0) continue;
        if (end[p] === 0) end[p] = i + 1;
        first[p] = i;
      }
    }
    return { first, end };
  });
}

/**
 * Visits every node depth first. `visit(level, index, outermost)` gets `outermost` = true when no
 * ancestor has the same name, so totals of recursive functions are counted once.
 */
export function walkNodes(data, visit) {
  if (!data.levels.length || !data.levels[0].length) return;
  const ranges = childRanges(data);
  const onStack = new Int32Array(data.names.length);
  // Each stack entry is [level, index, nextChild]; nextChild = -1 means "not entered yet".
  const stack = [];
  for (let i = 0; i < data.levels[0].length; i++) stack.push([0, i, -1]);
  stack.reverse();
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [d, i] = top;
    const name = data.levels[d].name[i];
    if (top[2] === -1) {
      visit(d, i, onStack[name] === 0);
      onStack[name]++;
      top[2] = ranges[d].first[i];
    }
    if (top[2] < ranges[d].end[i]) {
      stack.push([d + 1, top[2], -1]);
      top[2]++;
    } else {
      onStack[name]--;
      stack.pop();
    }
  }
}

// One row per function name, made by `newRow(name)` and filled by `add(row, level, index, outermost)`
// for every node except the synthetic root.
function rowsByFunction(data, newRow, add) {
  const byName = new Map();
  walkNodes(data, (d, i, outermost) => {
    const lvl = data.levels[d];
    const name = data.names[lvl.name[i]];
    if (d === 0 && name === 'total') return;
    let row = byName.get(name);
    if (!row) byName.set(name, (row = newRow(name)));
    add(row, lvl, i, outermost);
  });
  return [...byName.values()];
}

/**
 * Self and total per function name, the top table of a single profile:
 * `[{ name, self, total }]`, self summed over every call, total over outermost calls.
 */
export function functionTotals(data) {
  return rowsByFunction(
    data,
    (name) => ({ name, self: 0, total: 0 }),
    (row, lvl, i, outermost) => {
      row.self += lvl.self[i];
      if (outermost) row.total += lvl.total[i];
    },
  );
}

/**
 * Per-function values of both sides of a diff, and how each function's self and total shares (of
 * its side's total) changed: `selfDelta`/`totalDelta`, comparison share minus baseline share.
 */
export function diffFunctionTotals(data) {
  const rows = rowsByFunction(
    data,
    (name) => ({ name, selfL: 0, totalL: 0, selfR: 0, totalR: 0 }),
    (row, lvl, i, outermost) => {
      row.selfL += lvl.selfL[i];
      row.selfR += lvl.selfR[i];
      if (outermost) {
        row.totalL += lvl.totalL[i];
        row.totalR += lvl.totalR[i];
      }
    },
  );
  const shareOf = (v, ticks) => (ticks > 0 ? v / ticks : 0);
  return rows.map((row) => {
    const selfDelta = shareOf(row.selfR, data.rightTicks) - shareOf(row.selfL, data.leftTicks);
    const totalDelta = shareOf(row.totalR, data.rightTicks) - shareOf(row.totalL, data.leftTicks);
    return { ...row, selfDelta, totalDelta };
  });
}

// ---------------------------------------------------------------------------------------------------
// Trees

function newNode(name) {
  return { name, self: 0, total: 0, children: new Map() };
}

function childOf(node, name) {
  let child = node.children.get(name);
  if (!child) node.children.set(name, (child = newNode(name)));
  return child;
}

/**
 * The sandwich view of one function: `callees`, every call of it merged into one tree rooted at the
 * function, and `callers`, the stacks leading to it merged into one tree rooted at the function that
 * grows towards the callers (draw it inverted). Both in render-response shape.
 */
export function buildSandwich(data, functionName) {
  const callees = newNode(functionName);
  const callers = newNode(functionName);
  const ranges = childRanges(data);
  const names = data.names;

  const addSubtree = (target, d, i) => {
    const lvl = data.levels[d];
    target.self += lvl.self[i];
    target.total += lvl.total[i];
    for (let c = ranges[d].first[i]; c < ranges[d].end[i]; c++) {
      addSubtree(childOf(target, names[data.levels[d + 1].name[c]]), d + 1, c);
    }
  };
  const addCallerChain = (d, i) => {
    const value = data.levels[d].total[i];
    let target = callers;
    target.total += value;
    for (let level = d, idx = i; level > 0; ) {
      idx = data.levels[level].parent[idx];
      level--;
      const name = names[data.levels[level].name[idx]];
      if (level === 0 && name === 'total') break;
      target = childOf(target, name);
      target.total += value;
    }
    target.self += value;
  };

  walkNodes(data, (d, i, outermost) => {
    if (!outermost || names[data.levels[d].name[i]] !== functionName) return;
    addSubtree(callees, d, i);
    addCallerChain(d, i);
  });
  return { callers: toProfile(callers, data.metadata), callees: toProfile(callees, data.metadata) };
}

/**
 * Encodes a tree as a single-format flamebearer profile: per level, [x delta, total, self, name index]
 * with children laid out after their parent's self, ordered by name.
 */
export function toProfile(root, metadata = {}) {
  const names = [];
  const nameIndex = new Map();
  const intern = (name) => {
    let idx = nameIndex.get(name);
    if (idx === undefined) {
      idx = names.length;
      names.push(name);
      nameIndex.set(name, idx);
    }
    return idx;
  };
  const levels = [];
  let maxSelf = 0;
  let row = root.total > 0 ? [{ node: root, x: 0 }] : [];
  while (row.length) {
    const encoded = [];
    const next = [];
    let prevEnd = 0;
    for (const { node, x } of row) {
      encoded.push(x - prevEnd, node.total, node.self, intern(node.name));
      prevEnd = x + node.total;
      maxSelf = Math.max(maxSelf, node.self);
      let childX = x + node.self;
      const children = [...node.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const child of children) {
        next.push({ node: child, x: childX });
        childX += child.total;
      }
    }
    levels.push(encoded);
    row = next;
  }
  return {
    version: 1,
    flamebearer: { names, levels, numTicks: root.total, maxSelf },
    metadata: { ...metadata, format: 'single' },
    timeline: null,
  };
}
