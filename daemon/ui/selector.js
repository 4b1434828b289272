// Label selector editor: the matchers of a query as removable chips, and a row to add one with
// autocomplete of label names (/labels) and values (/label-values).

import { h } from './dom.js';
import { fetchLabels, fetchLabelValues } from './api.js';
import { formatMatcher } from './query.js';

const MAX_SUGGESTIONS = 50;
const OPS = [
  ['=', 'equals'],
  ['!=', 'differs from'],
  ['=~', 'matches regex'],
  ['!~', 'does not match regex'],
];

/** A text input with a suggestion list: `source(text)` returns candidates, `onPick(value)` takes one. */
export class Combobox {
  constructor({ placeholder, source, onPick, label }) {
    this.source = source;
    this.onPick = onPick;
    this.items = [];
    this.active = -1;
    this.input = h('input', {
      type: 'text',
      placeholder,
      autocomplete: 'off',
      spellcheck: false,
      'aria-label': label || placeholder,
      'aria-autocomplete': 'list',
      oninput: () => this.refresh(),
      onfocus: () => this.refresh(),
      onblur: () => setTimeout(() => this.close(), 150),
      onkeydown: (e) => this.handleKey(e),
    });
    this.list = h('ul', { class: 'suggestions', role: 'listbox', hidden: true });
    this.el = h('span', { class: 'combobox' }, this.input, this.list);
  }

  get value() {
    return this.input.value;
  }

  set value(v) {
    this.input.value = v;
  }

  async refresh() {
    const text = this.input.value;
    const ticket = (this.ticket = (this.ticket || 0) + 1);
    let candidates = [];
    try {
      candidates = await this.source(text);
    } catch {
      candidates = [];
    }
    if (ticket !== this.ticket) return; // a newer keystroke already asked
    const lower = text.toLowerCase();
    const prefixed = candidates.filter((c) => c.toLowerCase().startsWith(lower));
    const inside = candidates.filter((c) => !c.toLowerCase().startsWith(lower) && c.toLowerCase().includes(lower));
    this.items = prefixed.concat(inside).slice(0, MAX_SUGGESTIONS);
    this.active = -1;
    this.list.replaceChildren(
      ...this.items.map((item, i) =>
        h('li', { role: 'option', dataset: { index: i }, onmousedown: (e) => (e.preventDefault(), this.pick(item)) }, item),
      ),
    );
    this.list.hidden = this.items.length === 0 || document.activeElement !== this.input;
  }

  close() {
    this.list.hidden = true;
  }

  pick(value) {
    this.input.value = value;
    this.close();
    this.onPick(value);
  }

  handleKey(event) {
    const n = this.items.length;
    if (event.key === 'ArrowDown' && n) {
      this.active = (this.active + 1) % n;
    } else if (event.key === 'ArrowUp' && n) {
      this.active = (this.active - 1 + n) % n;
    } else if (event.key === 'Enter') {
      event.preventDefault();
      this.pick(this.active >= 0 && !this.list.hidden ? this.items[this.active] : this.input.value);
      return;
    } else if (event.key === 'Escape') {
      this.close();
      return;
    } else {
      return;
    }
    event.preventDefault();
    [...this.list.children].forEach((li, i) => li.classList.toggle('active', i === this.active));
    this.list.hidden = false;
  }
}

/**
 * Edits the matchers of a query. `baseQuery()` gives `app.type` (what the suggestions are scoped
 * to); `onChange(matchers)` receives the new list.
 */
export class SelectorEditor {
  constructor({ baseQuery, onChange, idPrefix = 'selector' }) {
    this.baseQuery = baseQuery;
    this.onChange = onChange;
    this.matchers = [];
    this.chips = h('span', { class: 'chips' });
    this.nameBox = new Combobox({
      placeholder: 'label',
      label: 'label name',
      source: async () => (await fetchLabels(this.baseQuery())).filter((l) => l !== '__name__' && !l.startsWith('__')),
      onPick: () => this.valueBox.input.focus(),
    });
    this.op = h('select', { 'aria-label': 'operator', class: 'op' }, OPS.map(([op, title]) => h('option', { value: op, title }, op)));
    this.valueBox = new Combobox({
      placeholder: 'value',
      label: 'label value',
      source: async () => (this.nameBox.value ? fetchLabelValues(this.nameBox.value.trim(), this.baseQuery()) : []),
      onPick: () => this.add(),
    });
    this.nameBox.input.id = `${idPrefix}-name`;
    this.valueBox.input.id = `${idPrefix}-value`;
    this.el = h(
      'div',
      { class: 'selector-editor' },
      this.chips,
      h('span', { class: 'add-matcher' }, this.nameBox.el, this.op, this.valueBox.el, h('button', { type: 'button', onclick: () => this.add(), title: 'Add this label filter' }, 'Add')),
    );
  }

  setMatchers(matchers) {
    this.matchers = matchers.slice();
    this.chips.replaceChildren(
      ...this.matchers.map((m, i) =>
        h(
          'span',
          { class: 'chip', title: formatMatcher(m) },
          formatMatcher(m),
          h('button', { type: 'button', class: 'chip-remove', 'aria-label': `remove ${formatMatcher(m)}`, onclick: () => this.remove(i) }, '×'),
        ),
      ),
    );
  }

  add() {
    const name = this.nameBox.value.trim();
    if (!name || !/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) {
      this.nameBox.input.focus();
      return;
    }
    const matcher = { name, op: this.op.value, value: this.valueBox.value };
    this.nameBox.value = '';
    this.valueBox.value = '';
    this.onChange(this.matchers.filter((m) => !(m.name === name && m.op === matcher.op)).concat([matcher]));
  }

  remove(index) {
    this.onChange(this.matchers.filter((_, i) => i !== index));
  }
}
