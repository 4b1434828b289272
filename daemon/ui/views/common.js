// Pieces shared by the views: table columns, the context menu, export menus, messages.

import { h, debounce, downloadBlob } from '../dom.js';
import { colorForName, colorForChange, formatValue, formatPercent } from '../flamegraph.js';
import { EXPORT_FORMATS, exportUrl, apiUrl } from '../api.js';
import { parseQuery } from '../query.js';
import { navigate } from '../state.js';

function functionCell(name) {
  return h('span', { class: 'fn-name', title: name }, h('i', { class: 'swatch', style: { background: colorForName(name) } }), name);
}

function valueCell(value, whole, metadata) {
  return h('span', { class: 'value' }, formatValue(value, metadata), h('small', {}, formatPercent(value, whole)));
}

/** Columns of the top table of one profile (rows: { name, self, total }). */
export function functionColumns(metadata, numTicks) {
  return [
    { key: 'name', title: 'Function', numeric: false, render: (r) => functionCell(r.name) },
    { key: 'self', title: 'Self', numeric: true, render: (r) => valueCell(r.self, numTicks, metadata) },
    { key: 'total', title: 'Total', numeric: true, render: (r) => valueCell(r.total, numTicks, metadata) },
  ];
}

function sharesCell(left, leftTicks, right, rightTicks) {
  return h('span', { class: 'value' }, `${formatPercent(left, leftTicks)} → ${formatPercent(right, rightTicks)}`);
}

function deltaCell(delta) {
  const pp = delta * 100;
  const text = `${pp > 0 ? '+' : ''}${Math.abs(pp) < 0.005 ? '0.00' : pp.toFixed(2)} pp`;
  return h('span', { class: `delta ${pp > 0.005 ? 'worse' : pp < -0.005 ? 'better' : ''}`, style: { background: colorForChange(Math.max(-1, Math.min(1, delta * 10))) } }, text);
}

/**
 * Columns of the diff table (rows from diffFunctionTotals): each side as a share of its own total,
 * and the change in percentage points; change columns sort by magnitude.
 */
export function diffColumns(leftTicks, rightTicks) {
  return [
    { key: 'name', title: 'Function', numeric: false, render: (r) => functionCell(r.name) },
    { key: 'selfR', title: 'Self share', hint: 'Self share of the baseline → of the comparison; sorts by the comparison', numeric: true, value: (r) => r.selfR / (rightTicks || 1), render: (r) => sharesCell(r.selfL, leftTicks, r.selfR, rightTicks) },
    { key: 'selfDelta', title: 'Self Δ', hint: 'Change of the self share, in percentage points; sorts by size', numeric: true, value: (r) => Math.abs(r.selfDelta), render: (r) => deltaCell(r.selfDelta) },
    { key: 'totalR', title: 'Total share', hint: 'Total share of the baseline → of the comparison; sorts by the comparison', numeric: true, value: (r) => r.totalR / (rightTicks || 1), render: (r) => sharesCell(r.totalL, leftTicks, r.totalR, rightTicks) },
    { key: 'totalDelta', title: 'Total Δ', hint: 'Change of the total share, in percentage points; sorts by size', numeric: true, value: (r) => Math.abs(r.totalDelta), render: (r) => deltaCell(r.totalDelta) },
  ];
}

// ---------------------------------------------------------------------------------------------------

let openMenu = null;

/** Shows a context menu of [{ label, action }] at the mouse position. */
export function showContextMenu(event, items) {
  closeContextMenu();
  const menu = h(
    'ul',
    { class: 'context-menu', role: 'menu' },
    items.map(({ label, action }) =>
      h('li', { role: 'menuitem', tabIndex: -1, onclick: () => (closeContextMenu(), action()) }, label),
    ),
  );
  document.body.append(menu);
  const x = Math.min(event.clientX, window.innerWidth - menu.offsetWidth - 4);
  const y = Math.min(event.clientY, window.innerHeight - menu.offsetHeight - 4);
  Object.assign(menu.style, { left: `${x}px`, top: `${y}px` });
  openMenu = menu;
  setTimeout(() => document.addEventListener('click', closeContextMenu, { once: true }), 0);
}

export function closeContextMenu() {
  if (openMenu) openMenu.remove();
  openMenu = null;
}

export function copyText(text) {
  if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
}

/**
 * The menu of a frame or a table row: zoom (frames only: they carry a level), sandwich view (where the
 * view has one), highlight, copy.
 */
export function showFrameMenu(node, event, { sandwich = false } = {}) {
  const items = [];
  if (node.level !== undefined) items.push({ label: `Zoom to ${node.name}`, action: () => navigate({ zoom: zoomParam(node) }) });
  if (sandwich) items.push({ label: 'Sandwich view of this function', action: () => navigate({ layout: 'sandwich', fn: node.name }) });
  items.push(
    { label: 'Highlight this function', action: () => navigate({ search: node.name }, { replace: true }) },
    { label: 'Copy function name', action: () => copyText(node.name) },
  );
  showContextMenu(event, items);
}

// ---------------------------------------------------------------------------------------------------
// Search and zoom, kept in the URL

/** A search box whose typing updates the URL's `search` (debounced, replacing the history entry). */
export function searchBox() {
  const push = debounce((value) => navigate({ search: value }, { replace: true }), 150);
  return h('input', {
    type: 'search',
    class: 'search',
    placeholder: 'Search functions (text or /regex/)',
    'aria-label': 'search functions',
    oninput: (e) => push(e.target.value),
  });
}

/** Shows the URL's search text, unless the user is typing in the box. */
export function showSearch(input, text) {
  if (document.activeElement !== input) input.value = text;
}

/** The URL's `zoom` value of a flamegraph node: its level and its left edge in ticks. */
export function zoomParam(node) {
  return node ? `${node.level}:${node.x}` : '';
}

/** Keeps a flamegraph's zoom in step with the URL's `zoom`, without echoing it back to the URL. */
export class ZoomSync {
  constructor(flamegraph) {
    this.fg = flamegraph;
    this.applied = '';
  }

  /** After new data (which shows everything): the next apply() zooms again. */
  forget() {
    this.applied = '';
  }

  apply(zoom) {
    if (zoom === this.applied) return;
    this.applied = zoom;
    const [level, tick] = zoom.split(':').map(Number);
    const quiet = { notify: false };
    if (!zoom || !this.fg.zoomAtTick(level, tick, quiet)) this.fg.reset(quiet);
  }
}

// ---------------------------------------------------------------------------------------------------

function fileStem(query) {
  const { app, type } = parseQuery(query);
  return `${app || 'profile'}${type ? `.${type}` : ''}`.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Saves a canvas as a PNG file, drawn over the page background so it reads well anywhere. */
export function saveCanvasPng(canvas, filename) {
  const copy = document.createElement('canvas');
  copy.width = canvas.width;
  copy.height = canvas.height;
  const ctx = copy.getContext('2d');
  ctx.fillStyle = getComputedStyle(document.body).backgroundColor || '#fff';
  ctx.fillRect(0, 0, copy.width, copy.height);
  ctx.drawImage(canvas, 0, 0);
  copy.toBlob((blob) => blob && downloadBlob(blob, filename), 'image/png');
}

function menu(label, entries) {
  const details = h('details', { class: 'menu export-menu' }, h('summary', {}, label));
  // Picking an entry closes the menu.
  details.append(h('div', { class: 'menu-items', onclick: () => (details.open = false) }, entries));
  return details;
}

// A click elsewhere or Escape closes open menus.
document.addEventListener('click', (event) => {
  for (const open of document.querySelectorAll('details.menu[open]')) if (!open.contains(event.target)) open.open = false;
});
document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape') return;
  closeContextMenu();
  for (const open of document.querySelectorAll('details.menu[open]')) open.open = false;
});

/**
 * The export menu of a selection: a download link per server-side format, and a PNG of the canvas
 * drawn in the page (`canvas()` returns it).
 */
export function exportMenu(selection, canvas) {
  const stem = fileStem(selection.query);
  return menu('Export', [
    ...EXPORT_FORMATS.map(({ format, label, ext }) =>
      h('a', { href: exportUrl(selection, format), download: `${stem}.${ext}`, dataset: { format } }, label),
    ),
    h('button', { type: 'button', dataset: { format: 'canvas-png' }, onclick: () => saveCanvasPng(canvas(), `${stem}.flamegraph.png`) }, 'PNG of this flamegraph (as shown)'),
  ]);
}

/** The export menu of a diff: the render-diff JSON and HTML, and the canvas as PNG. */
export function diffExportMenu(params, canvas) {
  const stem = `${fileStem(params.rightQuery)}.diff`;
  return menu('Export', [
    h('a', { href: apiUrl('render-diff', { ...params, format: 'json' }), download: `${stem}.json`, dataset: { format: 'json' } }, 'Flamebearer JSON (double)'),
    h('a', { href: apiUrl('render-diff', { ...params, format: 'html' }), download: `${stem}.html`, dataset: { format: 'html' } }, 'Standalone HTML'),
    h('button', { type: 'button', dataset: { format: 'canvas-png' }, onclick: () => saveCanvasPng(canvas(), `${stem}.png`) }, 'PNG of this flamegraph (as shown)'),
  ]);
}

export function messageBox(text, kind = 'info') {
  return h('div', { class: `message ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}
