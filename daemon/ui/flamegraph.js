// Kiln flamegraph: decodes a flamebearer profile and draws it on a canvas, with click-to-zoom,
// search highlighting and a tooltip. Works on single profiles (4-tuples) and diffs (7-tuples).
//
// This module imports nothing and touches no global state when loaded, so it can be used without the
// rest of the UI. standalone.html inlines this whole file at its KILN_FLAMEGRAPH_JS placeholder (inside
// a <script type="module">) and the daemon's `html` export fills that placeholder, so this source must
// never contain a closing script tag nor either placeholder written out in full.
//
// Usage:
//   const fg = new Flamegraph(container, { onZoom, onContextMenu });
//   fg.setProfile(renderResponse);   // the JSON of GET /render?format=json or /render-diff
//   fg.search('sha256');             // highlight; returns { matchedTicks, matchedNames }
//   fg.zoomTo(level, index); fg.reset();

const ROW_HEIGHT = 18;
const FONT_SIZE_PX = 12;
const FONT = `${FONT_SIZE_PX}px ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace`;
// Rectangles narrower than this many CSS pixels are not drawn (their children are narrower still).
const MIN_VISIBLE_WIDTH_PX = 0.5;
const LABEL_PADDING_PX = 3;
const DIFF_NEUTRAL_THRESHOLD = 0.01;

// ---------------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes a flamebearer profile (render response shape, or a bare `flamebearer` object) into per-level
 * typed arrays with absolute x offsets and parent links. For diffs, `x`/`total` span both sides
 * (left + right), as the double format lays them out.
 */
export function decodeProfile(profile) {
  const fb = profile && profile.flamebearer ? profile.flamebearer : profile || {};
  const metadata = (profile && profile.metadata) || {};
  const isDouble = metadata.format === 'double';
  const names = fb.names || [];
  const rawLevels = fb.levels || [];
  const levels = rawLevels.map((row) => (isDouble ? decodeDoubleRow(row) : decodeSingleRow(row)));
  for (let d = 1; d < levels.length; d++) linkParents(levels[d - 1], levels[d]);
  return {
    format: isDouble ? 'double' : 'single',
    names,
    levels,
    numTicks: fb.numTicks || (levels[0] && levels[0].total[0]) || 0,
    maxSelf: fb.maxSelf || 0,
    metadata,
    leftTicks: isDouble ? profile.leftTicks || 0 : 0,
    rightTicks: isDouble ? profile.rightTicks || 0 : 0,
  };
}

function decodeSingleRow(row) {
  const n = Math.floor(row.length / 4);
  const level = emptyLevel(n, false);
  let prevEnd = 0;
  for (let i = 0; i < n; i++) {
    const x = prevEnd + row[i * 4];
    const total = row[i * 4 + 1];
    level.x[i] = x;
    level.total[i] = total;
    level.self[i] = row[i * 4 + 2];
    level.name[i] = row[i * 4 + 3];
    prevEnd = x + total;
  }
  return level;
}

function decodeDoubleRow(row) {
  const n = Math.floor(row.length / 7);
  const level = emptyLevel(n, true);
  let prevEndL = 0;
  let prevEndR = 0;
  for (let i = 0; i < n; i++) {
    const o = i * 7;
    const xL = prevEndL + row[o];
    const totalL = row[o + 1];
    const xR = prevEndR + row[o + 3];
    const totalR = row[o + 4];
    level.totalL[i] = totalL;
    level.selfL[i] = row[o + 2];
    level.totalR[i] = totalR;
    level.selfR[i] = row[o + 5];
    level.name[i] = row[o + 6];
    level.x[i] = xL + xR;
    level.total[i] = totalL + totalR;
    level.self[i] = row[o + 2] + row[o + 5];
    prevEndL = xL + totalL;
    prevEndR = xR + totalR;
  }
  return level;
}

function emptyLevel(n, isDouble) {
  const level = {
    length: n,
    x: new Float64Array(n),
    total: new Float64Array(n),
    self: new Float64Array(n),
    name: new Int32Array(n),
    parent: new Int32Array(n).fill(-1),
  };
  if (isDouble) {
    level.totalL = new Float64Array(n);
    level.selfL = new Float64Array(n);
    level.totalR = new Float64Array(n);
    level.selfR = new Float64Array(n);
  }
  return level;
}

// Both rows are sorted by x and a child lies inside its parent's [x, x + total), so the parent of each
// child is the last node above whose start is at or before the child's start: one merge-like sweep.
function linkParents(above, below) {
  let p = 0;
  for (let i = 0; i < below.length; i++) {
    const x = below.x[i];
    while (p + 1 < above.length && above.x[p + 1] <= x) p++;
    below.parent[i] = above.length ? p : -1;
  }
}

/** Index of the node on `level` that covers tick `tick`, or -1. Binary search over the sorted starts. */
export function nodeIndexAt(level, tick) {
  let lo = 0;
  let hi = level.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (level.x[mid] <= tick) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  if (found < 0) return -1;
  return tick < level.x[found] + level.total[found] ? found : -1;
}

// First index on the level whose range ends after `tick` (binary search over starts, then one step back).
function firstIndexEndingAfter(level, tick) {
  let lo = 0;
  let hi = level.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (level.x[mid] < tick) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && level.x[lo - 1] + level.total[lo - 1] > tick) lo--;
  return lo;
}

// ---------------------------------------------------------------------------------------------------
// Colours

/**
 * The package or class part of a frame name, which picks its colour so that frames of one package
 * share a colour across profiles: `crypto/sha256.block` → `crypto/sha256`, `main.(*T).run` → `main`,
 * `com.example.Workload.hash` → `com.example.Workload`, `std::io::read` → `std::io`.
 */
export function packageOf(name) {
  let s = name;
  const paren = s.indexOf('(');
  if (paren > 0) s = s.slice(0, paren);
  if (s.includes('::')) return s.slice(0, s.lastIndexOf('::'));
  const slash = s.lastIndexOf('/');
  if (slash >= 0) {
    const dot = s.indexOf('.', slash);
    return dot > 0 ? s.slice(0, dot) : s.slice(0, slash);
  }
  const parts = s.split('.').filter((p) => p.length > 0);
  if (parts.length <= 1) return parts[0] || name;
  // Java-style dotted names: keep everything up to the first capitalised segment (the class).
  const classAt = parts.findIndex((p, i) => i > 0 && /^[A-Z]/.test(p));
  if (classAt > 0 && /^[a-z]/.test(parts[0])) return parts.slice(0, classAt + 1).join('.');
  return parts[0];
}

function hashString(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A stable fill colour for a frame name, derived from its package. */
export function colorForName(name) {
  if (name === 'total') return 'hsl(0, 0%, 62%)';
  if (name === 'other') return 'hsl(0, 0%, 72%)';
  const h = hashString(packageOf(name));
  const hue = h % 360;
  const saturation = 50 + ((h >>> 9) % 20);
  const lightness = 62 + ((h >>> 17) % 12);
  return `hsl(${hue}, ${saturation}%, ${lightness}%)`;
}

/**
 * Relative change of a node between the two sides of a diff, each side normalised by its own total:
 * +0.5 means its share grew by half, +Infinity that it only exists in the comparison.
 */
export function relativeChange(totalL, leftTicks, totalR, rightTicks) {
  const shareL = leftTicks > 0 ? totalL / leftTicks : 0;
  const shareR = rightTicks > 0 ? totalR / rightTicks : 0;
  if (shareL === 0) return shareR === 0 ? 0 : Infinity;
  return (shareR - shareL) / shareL;
}

/** Diff colour: grey when unchanged, towards red when the comparison spends more, green when less. */
export function colorForChange(change) {
  if (!(Math.abs(change) >= DIFF_NEUTRAL_THRESHOLD)) return 'rgb(200, 200, 200)';
  const t = Math.min(1, Math.abs(change));
  const [r, g, b] = change > 0 ? [229, 72, 77] : [48, 164, 108];
  const mix = (c) => Math.round(200 + (c - 200) * (0.2 + 0.8 * t));
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

// ---------------------------------------------------------------------------------------------------
// Values

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const COUNT_UNITS = ['', 'k', 'M', 'G', 'T', 'P'];

function trimNumber(v) {
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function scaled(value, step, units) {
  let v = Math.abs(value);
  let i = 0;
  while (v >= step && i < units.length - 1) {
    v /= step;
    i++;
  }
  return `${value < 0 ? '-' : ''}${trimNumber(v)}${units[i] && units[i].length > 1 ? ' ' : ''}${units[i]}`;
}

function formatSeconds(seconds) {
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? '-' : '';
  if (s === 0) return '0 s';
  if (s < 1e-6) return `${sign}${trimNumber(s * 1e9)} ns`;
  if (s < 1e-3) return `${sign}${trimNumber(s * 1e6)} µs`;
  if (s < 1) return `${sign}${trimNumber(s * 1e3)} ms`;
  if (s < 60) return `${sign}${trimNumber(s)} s`;
  if (s < 3600) return `${sign}${trimNumber(s / 60)} min`;
  if (s < 86400) return `${sign}${trimNumber(s / 3600)} h`;
  return `${sign}${trimNumber(s / 86400)} d`;
}

/**
 * Formats a tick count with the profile's units: CPU samples become seconds (ticks / sampleRate),
 * bytes get binary prefixes, nanoseconds become durations, counts get k/M suffixes.
 */
export function formatValue(ticks, metadata) {
  const units = (metadata && metadata.units) || '';
  const sampleRate = (metadata && metadata.sampleRate) || 0;
  switch (units) {
    case 'samples':
      return sampleRate > 0 ? formatSeconds(ticks / sampleRate) : `${scaled(ticks, 1000, COUNT_UNITS)} samples`;
    case 'bytes':
      return scaled(ticks, 1024, BYTE_UNITS);
    case 'nanoseconds':
      return formatSeconds(ticks / 1e9);
    case 'objects':
    case 'goroutines':
    case 'lock_samples':
      return `${scaled(ticks, 1000, COUNT_UNITS)} ${units}`;
    default:
      return scaled(ticks, 1000, COUNT_UNITS) + (units ? ` ${units}` : '');
  }
}

export function formatPercent(part, whole) {
  if (!(whole > 0)) return '0%';
  const p = (100 * part) / whole;
  if (p === 0) return '0%';
  if (p < 0.01) return '<0.01%';
  return `${p >= 10 ? p.toFixed(1) : p.toFixed(2)}%`;
}

export function formatChange(change) {
  if (change === Infinity) return 'new';
  if (change === -1) return 'removed';
  const sign = change > 0 ? '+' : '';
  return `${sign}${(change * 100).toFixed(1)}%`;
}

// ---------------------------------------------------------------------------------------------------
// Search

/** Builds a name matcher: `/re/` is a case-insensitive regular expression, anything else a substring. */
export function nameMatcher(term) {
  const t = (term || '').trim();
  if (!t) return null;
  if (t.length > 2 && t.startsWith('/') && t.endsWith('/')) {
    try {
      const re = new RegExp(t.slice(1, -1), 'i');
      return (name) => re.test(name);
    } catch {
      // An incomplete expression while typing: fall back to plain text.
    }
  }
  const lower = t.toLowerCase();
  return (name) => name.toLowerCase().includes(lower);
}

// ---------------------------------------------------------------------------------------------------
// Drawing

function isDarkTheme() {
  return typeof matchMedia === 'function' && matchMedia('(prefers-color-scheme: dark)').matches;
}

export class Flamegraph {
  /**
   * @param {HTMLElement} container  receives a canvas and a tooltip; its width sets the graph's width
   * @param {object} [options]
   *   inverted: draw the root at the bottom (used for the callers half of the sandwich view)
   *   percentOf: ticks the tooltip's percentages refer to (default: the profile's total)
   *   showSelf: false leaves self out of the tooltip (where it means nothing, as for callers)
   *   onZoom(node|null), onContextMenu(node, mouseEvent), onSearch(result)
   */
  constructor(container, options = {}) {
    this.container = container;
    this.options = options;
    this.data = null;
    this.zoom = null; // { level, index }
    this.matcher = null;
    this.nameMatches = null; // Uint8Array over names
    this.pendingFrame = 0;

    container.classList.add('kiln-fg');
    if (getComputedStyle(container).position === 'static') container.style.position = 'relative';
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'kiln-fg-canvas';
    this.canvas.style.display = 'block';
    this.canvas.style.width = '100%';
    this.canvas.setAttribute('role', 'img');
    this.tooltip = document.createElement('div');
    this.tooltip.className = 'kiln-fg-tooltip';
    Object.assign(this.tooltip.style, { position: 'fixed', pointerEvents: 'none', display: 'none', zIndex: 10 });
    container.append(this.canvas, this.tooltip);

    this.canvas.addEventListener('mousemove', (e) => this.handleHover(e));
    this.canvas.addEventListener('mouseleave', () => this.hideTooltip());
    this.canvas.addEventListener('click', (e) => this.handleClick(e));
    this.canvas.addEventListener('contextmenu', (e) => {
      const node = this.nodeAtEvent(e);
      if (node && this.options.onContextMenu) {
        e.preventDefault();
        this.options.onContextMenu(node, e);
      }
    });
    if (typeof ResizeObserver === 'function') {
      this.resizeObserver = new ResizeObserver(() => this.render());
      this.resizeObserver.observe(container);
    }
    if (typeof matchMedia === 'function') {
      this.themeQuery = matchMedia('(prefers-color-scheme: dark)');
      this.onThemeChange = () => this.render();
      this.themeQuery.addEventListener('change', this.onThemeChange);
    }
  }

  destroy() {
    if (this.resizeObserver) this.resizeObserver.disconnect();
    if (this.themeQuery) this.themeQuery.removeEventListener('change', this.onThemeChange);
    this.canvas.remove();
    this.tooltip.remove();
  }

  /** Shows a render response (or an already decoded profile from decodeProfile). */
  setProfile(profile) {
    this.setData(profile && profile.levels && profile.format ? profile : decodeProfile(profile));
  }

  setData(data) {
    this.data = data;
    this.zoom = null;
    this.colorOf = colorCache(data);
    this.refreshMatches();
    this.draw();
  }

  get metadata() {
    return (this.data && this.data.metadata) || {};
  }

  /** Highlights frames whose name matches; returns the ticks they cover (nested matches counted once). */
  search(term) {
    return this.highlight(nameMatcher(term));
  }

  /** Highlights frames whose name satisfies `predicate(name)`; null clears the highlight. */
  highlight(predicate) {
    this.matcher = predicate;
    const result = this.refreshMatches();
    this.render();
    if (this.options.onSearch) this.options.onSearch(result);
    return result;
  }

  refreshMatches() {
    const data = this.data;
    if (!data || !this.matcher) {
      this.nameMatches = null;
      return { matchedTicks: 0, matchedNames: 0, numTicks: data ? data.numTicks : 0 };
    }
    const flags = new Uint8Array(data.names.length);
    let matchedNames = 0;
    data.names.forEach((name, i) => {
      if (this.matcher(name)) {
        flags[i] = 1;
        matchedNames++;
      }
    });
    this.nameMatches = flags;
    return { matchedTicks: matchedTicks(data, flags), matchedNames, numTicks: data.numTicks };
  }

  /** Zooms to a node (level 0 shows everything); `notify: false` skips the onZoom callback. */
  zoomTo(level, index, { notify = true } = {}) {
    const data = this.data;
    if (!data || !data.levels[level] || index < 0 || index >= data.levels[level].length) return;
    this.zoom = level === 0 ? null : { level, index };
    this.render();
    if (notify && this.options.onZoom) this.options.onZoom(this.zoom ? this.nodeInfo(level, index) : null);
  }

  /** Zooms to the node of `level` covering `tick` (what a URL keeps to restore a zoom). */
  zoomAtTick(level, tick, options) {
    const lvl = this.data && this.data.levels[level];
    if (!lvl) return false;
    const index = nodeIndexAt(lvl, tick);
    if (index < 0) return false;
    this.zoomTo(level, index, options);
    return true;
  }

  reset(options) {
    this.zoomTo(0, 0, options);
  }

  /** A plain description of one node: name, values, and for diffs both sides. */
  nodeInfo(level, index) {
    const data = this.data;
    const lvl = data.levels[level];
    const info = {
      level,
      index,
      name: data.names[lvl.name[index]],
      x: lvl.x[index],
      total: lvl.total[index],
      self: lvl.self[index],
    };
    if (data.format === 'double') {
      Object.assign(info, {
        totalL: lvl.totalL[index],
        selfL: lvl.selfL[index],
        totalR: lvl.totalR[index],
        selfR: lvl.selfR[index],
      });
      info.change = relativeChange(info.totalL, data.leftTicks, info.totalR, data.rightTicks);
    }
    return info;
  }

  viewRange() {
    if (!this.zoom) return [0, this.data.numTicks];
    const lvl = this.data.levels[this.zoom.level];
    return [lvl.x[this.zoom.index], lvl.total[this.zoom.index]];
  }

  /** Schedules a redraw on the next animation frame (coalesces bursts of events). */
  render() {
    if (typeof requestAnimationFrame !== 'function') {
      this.draw();
      return;
    }
    if (this.pendingFrame) return;
    this.pendingFrame = requestAnimationFrame(() => {
      this.pendingFrame = 0;
      this.draw();
    });
  }

  /** Draws now; returns the number of rectangles drawn. */
  draw() {
    const canvas = this.canvas;
    const data = this.data;
    const width = Math.max(1, this.container.clientWidth || canvas.clientWidth || 800);
    const rows = data && data.numTicks > 0 ? data.levels.length : 1;
    const height = rows * ROW_HEIGHT;
    const ratio = (typeof devicePixelRatio === 'number' && devicePixelRatio) || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = FONT;
    ctx.textBaseline = 'middle';
    const dark = isDarkTheme();
    if (!data || !(data.numTicks > 0)) {
      ctx.fillStyle = dark ? '#aaa' : '#555';
      ctx.fillText('No profiling data for this selection.', 8, ROW_HEIGHT / 2);
      canvas.setAttribute('aria-label', 'empty flamegraph');
      return 0;
    }
    if (!this.charWidth) this.charWidth = ctx.measureText('m').width || 7;

    const [viewStart, viewTotal] = this.viewRange();
    const viewEnd = viewStart + viewTotal;
    const scale = width / viewTotal;
    const zoomLevel = this.zoom ? this.zoom.level : 0;
    const mutedFill = dark ? '#3a3d44' : '#dedede';
    const ancestorFill = dark ? '#4a4d55' : '#cfcfcf';
    const textColor = '#111';
    const mutedText = dark ? '#8a8d93' : '#777';
    const matches = this.nameMatches;
    let drawn = 0;

    for (let d = 0; d < data.levels.length; d++) {
      const lvl = data.levels[d];
      const y = this.options.inverted ? (data.levels.length - 1 - d) * ROW_HEIGHT : d * ROW_HEIGHT;
      for (let i = firstIndexEndingAfter(lvl, viewStart); i < lvl.length; i++) {
        const x = lvl.x[i];
        if (x >= viewEnd) break;
        const total = lvl.total[i];
        const left = Math.max(x, viewStart);
        const right = Math.min(x + total, viewEnd);
        const w = (right - left) * scale;
        if (w < MIN_VISIBLE_WIDTH_PX) continue;
        const px = (left - viewStart) * scale;
        const matched = !matches || matches[lvl.name[i]] === 1;
        const isAncestor = d < zoomLevel;
        ctx.fillStyle = !matched ? mutedFill : isAncestor ? ancestorFill : this.colorOf(d, i);
        ctx.fillRect(px, y, w > 2 ? w - 1 : w, ROW_HEIGHT - 1);
        drawn++;
        const maxChars = Math.floor((w - 2 * LABEL_PADDING_PX) / this.charWidth);
        if (maxChars >= 2) {
          const name = data.names[lvl.name[i]];
          const label = name.length <= maxChars ? name : `${name.slice(0, maxChars - 1)}…`;
          ctx.fillStyle = matched ? textColor : mutedText;
          ctx.fillText(label, px + LABEL_PADDING_PX, y + ROW_HEIGHT / 2);
        }
      }
    }
    canvas.setAttribute('aria-label', `flamegraph, ${drawn} frames drawn`);
    this.lastDrawn = drawn;
    return drawn;
  }

  /** The node under a mouse event, as nodeInfo, or null. */
  nodeAtEvent(event) {
    const data = this.data;
    if (!data || !(data.numTicks > 0)) return null;
    const rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const row = Math.floor((event.clientY - rect.top) / ROW_HEIGHT);
    const level = this.options.inverted ? data.levels.length - 1 - row : row;
    if (level < 0 || level >= data.levels.length) return null;
    const [viewStart, viewTotal] = this.viewRange();
    const tick = viewStart + (px / rect.width) * viewTotal;
    const index = nodeIndexAt(data.levels[level], tick);
    return index < 0 ? null : this.nodeInfo(level, index);
  }

  handleClick(event) {
    const node = this.nodeAtEvent(event);
    if (node) this.zoomTo(node.level, node.index);
  }

  handleHover(event) {
    const node = this.nodeAtEvent(event);
    if (!node) {
      this.hideTooltip();
      return;
    }
    this.tooltip.replaceChildren(...this.tooltipLines(node));
    this.tooltip.style.display = 'block';
    const margin = 12;
    const { offsetWidth: tw, offsetHeight: th } = this.tooltip;
    const maxX = (window.innerWidth || 1280) - tw - 4;
    const maxY = (window.innerHeight || 800) - th - 4;
    this.tooltip.style.left = `${Math.max(4, Math.min(event.clientX + margin, maxX))}px`;
    this.tooltip.style.top = `${Math.max(4, Math.min(event.clientY + margin, maxY))}px`;
  }

  hideTooltip() {
    this.tooltip.style.display = 'none';
  }

  tooltipLines(node) {
    const data = this.data;
    const md = data.metadata;
    const line = (text, className) => {
      const el = document.createElement('div');
      el.textContent = text;
      if (className) el.className = className;
      return el;
    };
    const lines = [line(node.name, 'kiln-fg-tooltip-name')];
    if (data.format === 'double') {
      const side = (label, total, self, ticks) =>
        `${label}: total ${formatValue(total, md)} (${formatPercent(total, ticks)}), ` +
        `self ${formatValue(self, md)} (${formatPercent(self, ticks)})`;
      lines.push(line(side('Baseline', node.totalL, node.selfL, data.leftTicks)));
      lines.push(line(side('Comparison', node.totalR, node.selfR, data.rightTicks)));
      lines.push(line(`Change: ${formatChange(node.change)}`, node.change > 0 ? 'kiln-fg-worse' : 'kiln-fg-better'));
    } else {
      const whole = this.options.percentOf || data.numTicks;
      lines.push(line(`Total: ${formatValue(node.total, md)} (${formatPercent(node.total, whole)})`));
      if (this.options.showSelf !== false) lines.push(line(`Self: ${formatValue(node.self, md)} (${formatPercent(node.self, whole)})`));
    }
    return lines;
  }
}

// Fill colours, computed the first time a node is drawn (most nodes of a big profile never are): by
// package for single profiles (cached per name), by relative change for diffs (cached per node).
function colorCache(data) {
  if (data.format === 'double') {
    const perLevel = data.levels.map((lvl) => new Array(lvl.length));
    return (d, i) => {
      const cached = perLevel[d][i];
      if (cached) return cached;
      const lvl = data.levels[d];
      return (perLevel[d][i] = colorForChange(relativeChange(lvl.totalL[i], data.leftTicks, lvl.totalR[i], data.rightTicks)));
    };
  }
  const byName = new Array(data.names.length);
  return (d, i) => {
    const n = data.levels[d].name[i];
    return byName[n] || (byName[n] = colorForName(data.names[n]));
  };
}

// Ticks covered by matching frames, counting a match inside another match once.
function matchedTicks(data, flags) {
  let sum = 0;
  const covered = data.levels.map((lvl) => new Uint8Array(lvl.length));
  data.levels.forEach((lvl, d) => {
    for (let i = 0; i < lvl.length; i++) {
      const parentCovered = d > 0 && lvl.parent[i] >= 0 && covered[d - 1][lvl.parent[i]] === 1;
      if (parentCovered) covered[d][i] = 1;
      else if (flags[lvl.name[i]] === 1) {
        covered[d][i] = 1;
        sum += lvl.total[i];
      }
    }
  });
  return sum;
}
