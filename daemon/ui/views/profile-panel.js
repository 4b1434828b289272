// One profile shown as a top table and a flamegraph side by side, or either alone, or as the
// sandwich view of one function. Layout, search, zoom, selected function and sort come from the URL.

import { h } from '../dom.js';
import { Flamegraph, decodeProfile, nameMatcher, formatPercent } from '../flamegraph.js';
import { functionTotals, buildSandwich } from '../calltree.js';
import { DataTable, parseSort, formatSort } from '../table.js';
import { navigate, LAYOUTS } from '../state.js';
import { functionColumns, showFrameMenu, exportMenu, messageBox, searchBox, showSearch, zoomParam, ZoomSync } from './common.js';

const LAYOUT_LABELS = {
  both: 'Table & flamegraph',
  flamegraph: 'Flamegraph',
  table: 'Table',
  sandwich: 'Sandwich',
};
const DEFAULT_SORT = { key: 'self', desc: true };

export class ProfilePanel {
  constructor() {
    this.profile = null;
    this.data = null;
    this.sandwichKey = '';
    this.layoutButtons = LAYOUTS.map((layout) =>
      h('button', { type: 'button', class: 'seg', dataset: { layout }, onclick: () => navigate({ layout }) }, LAYOUT_LABELS[layout]),
    );
    this.searchInput = searchBox();
    this.resetButton = h('button', { type: 'button', class: 'reset-zoom', onclick: () => navigate({ zoom: '' }) }, 'Reset zoom');
    this.matchInfo = h('span', { class: 'match-info', 'aria-live': 'polite' });
    this.exportSlot = h('span', { class: 'export-slot' });
    this.toolbar = h(
      'div',
      { class: 'toolbar' },
      h('span', { class: 'segmented', role: 'group', 'aria-label': 'layout' }, this.layoutButtons),
      this.searchInput,
      this.matchInfo,
      h('span', { class: 'spacer' }),
      this.resetButton,
      this.exportSlot,
    );

    this.fgBox = h('div', { class: 'flamegraph-box', dataset: { testid: 'flamegraph' } });
    this.fg = new Flamegraph(this.fgBox, {
      onZoom: (node) => navigate({ zoom: zoomParam(node) }),
      onContextMenu: (node, e) => showFrameMenu(node, e, { sandwich: true }),
    });
    this.zoom = new ZoomSync(this.fg);
    this.table = new DataTable({
      columns: functionColumns({}, 0),
      sort: DEFAULT_SORT,
      noun: ['function', 'functions'],
      onSortChange: (sort) => navigate({ sort: formatSort(sort) }, { replace: true }),
      onRowClick: (row) => navigate({ fn: row.name }, { replace: true }),
      onRowContextMenu: (row, e) => showFrameMenu(row, e, { sandwich: true }),
    });
    this.table.el.classList.add('top-table');

    this.callersBox = h('div', { class: 'flamegraph-box callers' });
    this.calleesBox = h('div', { class: 'flamegraph-box callees' });
    this.callersFg = new Flamegraph(this.callersBox, { inverted: true, showSelf: false });
    this.calleesFg = new Flamegraph(this.calleesBox);
    this.sandwichTitle = h('div', { class: 'sandwich-title' });
    this.sandwichHint = messageBox('Pick a function in the table (or right-click a frame) to see its callers above and its callees below.');
    this.sandwichEl = h(
      'div',
      { class: 'sandwich-box' },
      this.sandwichHint,
      h('div', { class: 'sandwich-label' }, 'Callers'),
      this.callersBox,
      this.sandwichTitle,
      h('div', { class: 'sandwich-label' }, 'Callees'),
      this.calleesBox,
    );
    this.panels = h(
      'div',
      { class: 'panels' },
      h('div', { class: 'pane table-pane' }, this.table.el),
      h('div', { class: 'pane flamegraph-pane' }, this.fgBox),
      h('div', { class: 'pane sandwich-pane' }, this.sandwichEl),
    );
    this.el = h('section', { class: 'profile-panel' }, this.toolbar, this.panels);
  }

  /**
   * Shows `profile` (a render response) for `selection` ({ query, from, until, maxNodes }) with the
   * URL's layout, search, zoom, fn and sort.
   */
  update(profile, state, selection) {
    if (profile !== this.profile) {
      this.profile = profile;
      this.data = decodeProfile(profile);
      this.fg.setData(this.data);
      this.zoom.forget();
      this.sandwichKey = '';
      const rows = Array.isArray(profile.functions) ? profile.functions : functionTotals(this.data);
      this.table.setColumns(functionColumns(this.data.metadata, this.data.numTicks));
      this.table.setRows(rows);
    }
    for (const button of this.layoutButtons) button.classList.toggle('active', button.dataset.layout === state.layout);
    this.panels.className = `panels layout-${state.layout}`;
    this.exportSlot.replaceChildren(exportMenu(selection, () => this.fg.canvas));

    showSearch(this.searchInput, state.search);
    const searchMatcher = nameMatcher(state.search);
    const highlight = searchMatcher || (state.fn ? (name) => name === state.fn : null);
    const result = this.fg.highlight(highlight);
    this.matchInfo.textContent = highlight ? `${result.matchedNames} matching · ${formatPercent(result.matchedTicks, result.numTicks)} of total` : '';
    this.table.setFilter(searchMatcher ? (row) => searchMatcher(row.name) : null);
    this.table.setSort(parseSort(state.sort, DEFAULT_SORT));
    this.table.setSelected(state.fn || null);

    this.zoom.apply(state.zoom);
    this.resetButton.disabled = !state.zoom;

    if (state.layout === 'sandwich') this.showSandwich(state.fn);
  }

  showSandwich(fn) {
    const hasFn = Boolean(fn) && this.data.names.includes(fn);
    this.sandwichEl.classList.toggle('empty', !hasFn);
    if (!hasFn || this.sandwichKey === fn) return;
    this.sandwichKey = fn;
    const { callers, callees } = buildSandwich(this.data, fn);
    this.sandwichTitle.textContent = fn;
    // Percentages in both halves are of the whole profile, as in the table.
    this.callersFg.options.percentOf = this.data.numTicks;
    this.calleesFg.options.percentOf = this.data.numTicks;
    this.callersFg.setProfile(callers);
    this.calleesFg.setProfile(callees);
  }
}
