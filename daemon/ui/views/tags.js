// Tag explorer: the selection grouped by one label, a timeline line per value, a table of totals,
// and the profile of the value picked in the table.

import { h } from '../dom.js';
import { Timeline } from '../timeline.js';
import { formatValue, formatPercent } from '../flamegraph.js';
import { DataTable } from '../table.js';
import { fetchRender, fetchLabels } from '../api.js';
import { parseTime, withMatcher, parseQuery, formatQuery } from '../query.js';
import { navigate } from '../state.js';
import { ProfilePanel } from './profile-panel.js';
import { messageBox } from './common.js';

const SERIES_COLORS = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#ec4899', '#14b8a6', '#84cc16', '#f97316', '#6366f1'];
// Values without the label are grouped under this key by the API.
const MISSING_VALUE = '*';

function summarize(value, timeline, color) {
  const samples = (timeline && timeline.samples) || [];
  let total = 0;
  let peak = 0;
  for (const v of samples) {
    total += v;
    peak = Math.max(peak, v);
  }
  return { value, total, peak, avg: samples.length ? total / samples.length : 0, color, timeline };
}

export class TagsView {
  constructor() {
    this.groupSelect = h('select', { 'aria-label': 'group by label', id: 'group-by', onchange: (e) => navigate({ groupBy: e.target.value, groupValue: '' }) });
    this.timelineBox = h('div', { class: 'timeline-box', dataset: { testid: 'tags-timeline' } });
    this.timeline = new Timeline(this.timelineBox, {
      height: 120,
      onSelect: (from, until) => navigate({ from: String(from), until: String(until), zoom: '' }),
    });
    this.metadata = {};
    this.grandTotal = 0;
    this.table = new DataTable({
      noun: ['value', 'values'],
      sort: { key: 'total', desc: true },
      rowKey: (row) => row.value,
      onRowClick: (row) => navigate({ groupValue: row.value, zoom: '', fn: '' }),
      columns: this.columns(),
    });
    this.table.el.classList.add('tags-table');
    this.hint = h('div', { class: 'hint' });
    this.panel = new ProfilePanel();
    this.el = h(
      'section',
      { class: 'view tags-view' },
      h('div', { class: 'toolbar' }, h('label', { for: 'group-by' }, 'Group by'), this.groupSelect, this.hint),
      this.timelineBox,
      this.table.el,
      this.panel.el,
    );
  }

  columns() {
    const value = (v) => formatValue(v, this.metadata);
    return [
      { key: 'value', title: 'Value', numeric: false, render: (r) => h('span', { class: 'fn-name' }, h('i', { class: 'swatch', style: { background: r.color } }), r.value) },
      { key: 'total', title: 'Total', numeric: true, render: (r) => value(r.total) },
      { key: 'share', title: 'Share', numeric: true, value: (r) => r.total, render: (r) => formatPercent(r.total, this.grandTotal) },
      { key: 'avg', title: 'Average per step', numeric: true, render: (r) => value(r.avg) },
      { key: 'peak', title: 'Peak step', numeric: true, render: (r) => value(r.peak) },
    ];
  }

  async update(state, { isCurrent }) {
    const baseQuery = formatQuery({ ...parseQuery(state.query), matchers: [] });
    // service_name only repeats the application: offer it last.
    const labels = (await fetchLabels(baseQuery))
      .filter((l) => !l.startsWith('__'))
      .sort((a, b) => (a === 'service_name') - (b === 'service_name') || a.localeCompare(b));
    if (!isCurrent()) return;
    const groupBy = state.groupBy || labels[0] || '';
    this.groupSelect.replaceChildren(...labels.map((l) => h('option', { value: l, selected: l === groupBy }, l)));
    if (!groupBy) {
      this.hint.replaceChildren(messageBox('This application has no labels to group by.'));
      return;
    }
    this.hint.replaceChildren();
    const range = { from: state.from, until: state.until, maxNodes: 1 };
    const grouped = await fetchRender({ query: state.query, ...range, groupBy });
    if (!isCurrent()) return;
    this.metadata = grouped.metadata || {};
    const rows = Object.entries(grouped.groups || {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([value, timeline], i) => summarize(value, timeline, SERIES_COLORS[i % SERIES_COLORS.length]));
    this.grandTotal = rows.reduce((s, r) => s + r.total, 0);
    this.timeline.setData({
      from: parseTime(state.from),
      until: parseTime(state.until),
      series: rows.map((r) => ({ name: r.value, timeline: r.timeline, color: r.color })),
      metadata: this.metadata,
    });
    this.table.setRows(rows);
    this.table.setSelected(state.groupValue || null);

    const picked = state.groupValue && state.groupValue !== MISSING_VALUE;
    const query = picked ? withMatcher(state.query, { name: groupBy, op: '=', value: state.groupValue }) : state.query;
    const selection = { query, from: state.from, until: state.until, maxNodes: state.maxNodes };
    const profile = await fetchRender(selection);
    if (!isCurrent()) return;
    this.panel.update(profile, state, selection);
  }
}
