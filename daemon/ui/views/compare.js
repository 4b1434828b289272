// Compare and Diff: a baseline and a comparison, each a selector and a time range picked on its own
// timeline. Compare draws the two flamegraphs side by side; Diff draws one flamegraph coloured by
// change (from /render-diff) beside a table ranking the biggest changes.

import { h } from '../dom.js';
import { Timeline } from '../timeline.js';
import { Flamegraph, decodeProfile, nameMatcher } from '../flamegraph.js';
import { diffFunctionTotals } from '../calltree.js';
import { DataTable, parseSort, formatSort } from '../table.js';
import { fetchRender, fetchDiff, diffParams } from '../api.js';
import { parseQuery, formatQuery, parseTime, formatDateTime } from '../query.js';
import { SelectorEditor } from '../selector.js';
import { navigate } from '../state.js';
import { diffColumns, exportMenu, diffExportMenu, showFrameMenu, messageBox, searchBox, showSearch, zoomParam, ZoomSync } from './common.js';

export const SIDE_COLORS = { left: '#3b82f6', right: '#f59e0b' };
const SIDE_TITLES = { left: 'Baseline', right: 'Comparison' };
const DEFAULT_DIFF_SORT = { key: 'selfDelta', desc: true };

/**
 * The two selections of a comparison: each side's query defaults to the main query, and its range
 * to one half of the main range (baseline the first, comparison the second).
 */
export function sidesOf(state) {
  const from = parseTime(state.from);
  const until = parseTime(state.until);
  const mid = Math.floor((from + until) / 2);
  const side = (prefix, defFrom, defUntil) => ({
    query: state[`${prefix}Query`] || state.query,
    from: state[`${prefix}From`] || String(defFrom),
    until: state[`${prefix}Until`] || String(defUntil),
    maxNodes: state.maxNodes,
  });
  return { range: { from, until }, left: side('left', from, mid), right: side('right', mid, until) };
}

class SidePanel {
  constructor(side, withFlamegraph) {
    this.side = side;
    this.rangeText = h('span', { class: 'side-range' });
    this.editor = new SelectorEditor({
      idPrefix: `${side}-selector`,
      baseQuery: () => this.baseQuery,
      onChange: (matchers) => navigate({ [`${side}Query`]: formatQuery({ ...parseQuery(this.baseQuery), matchers }) }),
    });
    this.timelineBox = h('div', { class: 'timeline-box' });
    this.timeline = new Timeline(this.timelineBox, {
      height: 72,
      onSelect: (from, until) => navigate({ [`${side}From`]: String(from), [`${side}Until`]: String(until) }),
    });
    this.exportSlot = h('span', { class: 'export-slot' });
    this.el = h(
      'div',
      { class: `side side-${side}`, dataset: { side } },
      h('div', { class: 'side-head' }, h('i', { class: 'swatch', style: { background: SIDE_COLORS[side] } }), h('strong', {}, SIDE_TITLES[side]), this.rangeText, h('span', { class: 'spacer' }), this.exportSlot),
      this.editor.el,
      this.timelineBox,
    );
    if (withFlamegraph) {
      this.fgBox = h('div', { class: 'flamegraph-box' });
      this.fg = new Flamegraph(this.fgBox);
      this.el.append(this.fgBox);
    }
  }

  async update(state, sides, isCurrent) {
    const mine = sides[this.side];
    this.baseQuery = formatQuery({ ...parseQuery(state.query), matchers: [] });
    this.editor.setMatchers(parseQuery(mine.query).matchers);
    this.rangeText.textContent = `${formatDateTime(parseTime(mine.from))} → ${formatDateTime(parseTime(mine.until))}`;
    const wide = await fetchRender({ query: mine.query, from: state.from, until: state.until, maxNodes: 1 });
    if (!isCurrent()) return;
    this.timeline.setData({
      ...sides.range,
      series: [{ name: mine.query, timeline: wide.timeline, color: SIDE_COLORS[this.side] }],
      selections: ['left', 'right'].map((s) => ({
        from: parseTime(sides[s].from),
        until: parseTime(sides[s].until),
        color: SIDE_COLORS[s],
      })),
      metadata: wide.metadata,
    });
    if (!this.fg) return;
    const profile = await fetchRender(mine);
    if (!isCurrent()) return;
    if (profile !== this.profile) {
      this.profile = profile;
      this.fg.setProfile(profile);
    }
    this.fg.search(state.search);
    this.exportSlot.replaceChildren(exportMenu(mine, () => this.fg.canvas));
  }
}

export class CompareView {
  /** @param {'compare'|'diff'} mode */
  constructor(mode) {
    this.mode = mode;
    this.sides = ['left', 'right'].map((side) => new SidePanel(side, mode === 'compare'));
    this.searchInput = searchBox();
    this.summary = h('span', { class: 'match-info' });
    this.exportSlot = h('span', { class: 'export-slot' });
    this.resetButton = h('button', { type: 'button', class: 'reset-zoom', onclick: () => navigate({ zoom: '' }) }, 'Reset zoom');
    const toolbar = h('div', { class: 'toolbar' }, this.searchInput, this.summary, h('span', { class: 'spacer' }), mode === 'diff' ? [this.resetButton, this.exportSlot] : null);
    const sides = h('div', { class: 'sides' }, this.sides.map((s) => s.el));
    // Compare searches both flamegraphs below; Diff's toolbar belongs to the diff under it.
    this.el = h('section', { class: `view ${mode}-view` }, ...(mode === 'compare' ? [toolbar, sides] : [sides, toolbar]));
    if (mode === 'diff') this.buildDiff();
  }

  buildDiff() {
    this.legend = h(
      'div',
      { class: 'diff-legend' },
      h('span', { class: 'better' }, 'faster (smaller share)'),
      h('span', { class: 'same' }, 'unchanged'),
      h('span', { class: 'worse' }, 'slower (larger share)'),
    );
    this.fgBox = h('div', { class: 'flamegraph-box', dataset: { testid: 'diff-flamegraph' } });
    this.fg = new Flamegraph(this.fgBox, {
      onZoom: (node) => navigate({ zoom: zoomParam(node) }),
      onContextMenu: (node, e) => showFrameMenu(node, e),
    });
    this.zoom = new ZoomSync(this.fg);
    this.table = new DataTable({
      columns: diffColumns(0, 0),
      sort: DEFAULT_DIFF_SORT,
      noun: ['function', 'functions'],
      onSortChange: (sort) => navigate({ sort: formatSort(sort) }, { replace: true }),
      onRowClick: (row) => navigate({ search: row.name }, { replace: true }),
    });
    this.table.el.classList.add('diff-table');
    this.el.append(
      h('div', { class: 'panels layout-both' }, h('div', { class: 'pane table-pane' }, this.table.el), h('div', { class: 'pane flamegraph-pane' }, this.legend, this.fgBox)),
    );
  }

  async update(state, ctx) {
    const sides = sidesOf(state);
    showSearch(this.searchInput, state.search);
    const work = this.sides.map((s) => s.update(state, sides, ctx.isCurrent));
    if (this.mode === 'diff') work.push(this.updateDiff(state, sides, ctx));
    await Promise.all(work);
  }

  async updateDiff(state, sides, { isCurrent }) {
    const diff = await fetchDiff(sides.left, sides.right, state.maxNodes);
    if (!isCurrent()) return;
    if (diff !== this.diff) {
      this.diff = diff;
      const data = decodeProfile(diff);
      this.fg.setData(data);
      this.zoom.forget();
      this.table.setColumns(diffColumns(data.leftTicks, data.rightTicks));
      this.table.setRows(diffFunctionTotals(data));
      this.emptyNote?.remove();
      this.emptyNote = null;
      if (!(data.leftTicks > 0 && data.rightTicks > 0)) {
        const empty = data.leftTicks > 0 ? 'comparison' : data.rightTicks > 0 ? 'baseline' : 'baseline and the comparison';
        this.emptyNote = messageBox(`The ${empty} has no samples: pick another range on its timeline.`, 'warning');
      } else if (!data.levels.length) {
        this.emptyNote = messageBox('Both sides have samples but the daemon sent no diff flamegraph (render-diff returned no levels).', 'warning');
      }
      if (this.emptyNote) this.legend.after(this.emptyNote);
    }
    const matcher = nameMatcher(state.search);
    this.fg.highlight(matcher);
    this.table.setFilter(matcher ? (row) => matcher(row.name) : null);
    this.table.setSort(parseSort(state.sort, DEFAULT_DIFF_SORT));
    this.zoom.apply(state.zoom);
    this.resetButton.disabled = !state.zoom;
    this.summary.textContent = `baseline ${sides.left.query} · comparison ${sides.right.query}`;
    this.exportSlot.replaceChildren(diffExportMenu(diffParams(sides.left, sides.right, state.maxNodes), () => this.fg.canvas));
  }
}
