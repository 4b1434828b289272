// A sortable, filterable table that renders only the rows in view, so a profile's full function
// list (tens of thousands of rows) stays fast.

import { h } from './dom.js';

const ROW_HEIGHT = 24;
const OVERSCAN_ROWS = 10;

export class DataTable {
  /**
   * @param {object} options
   *   columns: [{ key, title, value(row) for sorting, render(row) → string|Node, numeric, className }]
   *   sort: { key, desc }, onSortChange(sort), onRowClick(row), onRowContextMenu(row, event),
   *   rowClass(row), noun (['function', 'functions'])
   */
  constructor(options) {
    this.options = options;
    this.columns = options.columns;
    this.sort = options.sort || { key: this.columns[0].key, desc: false };
    this.rows = [];
    this.view = [];
    this.filter = null;
    this.selectedKey = null;
    this.head = h('thead', {}, h('tr', {}, this.columns.map((c) => this.headerCell(c))));
    this.body = h('tbody');
    this.table = h('table', { class: 'data-table' }, this.head, this.body);
    this.scroller = h('div', { class: 'table-scroll', onscroll: () => this.scheduleRender() }, this.table);
    this.caption = h('div', { class: 'table-caption' });
    this.el = h('div', { class: 'table-panel' }, this.caption, this.scroller);
    if (typeof ResizeObserver === 'function') new ResizeObserver(() => this.scheduleRender()).observe(this.scroller);
  }

  headerCell(column) {
    return h(
      'th',
      {
        class: `${column.numeric ? 'num' : ''} sortable`,
        dataset: { key: column.key },
        title: column.hint || `Sort by ${column.title}`,
        onclick: () => this.setSort({ key: column.key, desc: this.sort.key === column.key ? !this.sort.desc : column.numeric !== false }, true),
      },
      column.title,
    );
  }

  setColumns(columns) {
    this.columns = columns;
    this.head.replaceChildren(h('tr', {}, columns.map((c) => this.headerCell(c))));
    this.refresh();
  }

  setRows(rows) {
    this.rows = rows;
    this.refresh();
  }

  /** `predicate(row)` keeps a row; null shows every row. */
  setFilter(predicate) {
    this.filter = predicate;
    this.refresh();
  }

  setSort(sort, fromUser = false) {
    if (!this.columns.some((c) => c.key === sort.key)) return;
    this.sort = sort;
    this.refresh();
    if (fromUser && this.options.onSortChange) this.options.onSortChange(sort);
  }

  setSelected(key) {
    this.selectedKey = key;
    this.renderWindow();
  }

  refresh() {
    const column = this.columns.find((c) => c.key === this.sort.key) || this.columns[0];
    const value = column.value || ((row) => row[column.key]);
    const dir = this.sort.desc ? -1 : 1;
    this.view = (this.filter ? this.rows.filter(this.filter) : this.rows.slice()).sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return 0;
    });
    for (const th of this.head.querySelectorAll('th')) {
      th.classList.toggle('sorted', th.dataset.key === column.key);
      th.classList.toggle('desc', th.dataset.key === column.key && this.sort.desc);
      th.setAttribute('aria-sort', th.dataset.key === column.key ? (this.sort.desc ? 'descending' : 'ascending') : 'none');
    }
    const [singular, plural] = this.options.noun || ['row', 'rows'];
    const noun = this.rows.length === 1 ? singular : plural;
    this.caption.textContent =
      this.view.length === this.rows.length
        ? `${this.rows.length.toLocaleString()} ${noun}`
        : `${this.view.length.toLocaleString()} of ${this.rows.length.toLocaleString()} ${noun}`;
    this.renderWindow();
  }

  scheduleRender() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.renderWindow();
    });
  }

  renderWindow() {
    const total = this.view.length;
    const visibleRows = Math.ceil((this.scroller.clientHeight || 600) / ROW_HEIGHT);
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW_HEIGHT) - OVERSCAN_ROWS);
    const last = Math.min(total, first + visibleRows + 2 * OVERSCAN_ROWS);
    const spacer = (rows) => h('tr', { class: 'spacer', style: { height: `${rows * ROW_HEIGHT}px` } });
    const rows = [];
    if (first > 0) rows.push(spacer(first));
    for (let i = first; i < last; i++) rows.push(this.renderRow(this.view[i]));
    if (last < total) rows.push(spacer(total - last));
    if (total === 0) rows.push(h('tr', { class: 'empty' }, h('td', { colSpan: this.columns.length }, 'Nothing to show.')));
    this.body.replaceChildren(...rows);
  }

  renderRow(row) {
    const { onRowClick, onRowContextMenu, rowClass, rowKey } = this.options;
    const key = rowKey ? rowKey(row) : row.name;
    const classes = [rowClass ? rowClass(row) : '', key === this.selectedKey ? 'selected' : ''].join(' ').trim();
    return h(
      'tr',
      {
        class: classes || undefined,
        dataset: { key },
        onclick: onRowClick ? () => onRowClick(row) : undefined,
        oncontextmenu: onRowContextMenu ? (e) => (e.preventDefault(), onRowContextMenu(row, e)) : undefined,
      },
      this.columns.map((c) => h('td', { class: [c.numeric ? 'num' : '', c.className || ''].join(' ').trim() || undefined }, c.render ? c.render(row) : String(row[c.key]))),
    );
  }
}

/** "key" or "key:asc" as kept in the URL ↔ { key, desc }. */
export function parseSort(text, fallback) {
  if (!text) return fallback;
  const [key, dir] = text.split(':');
  return { key, desc: dir !== 'asc' };
}

export function formatSort({ key, desc }) {
  return desc ? key : `${key}:asc`;
}
