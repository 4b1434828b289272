// Targets: the scrape targets of pull mode and the health of their last scrape (/api/targets).

import { h } from '../dom.js';
import { getJSON, clearCache } from '../api.js';

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return `${s}s ago`;
}

export class TargetsView {
  constructor() {
    this.body = h('div', { class: 'targets' });
    this.el = h('section', { class: 'view targets-view' }, this.body);
  }

  async update(_state, { isCurrent }) {
    clearCache();
    const data = await getJSON('api/targets');
    if (!isCurrent()) return;
    const rows = data.targets.map((t) =>
      h(
        'tr',
        { dataset: { health: t.health } },
        h('td', {}, t.job),
        h('td', {}, t.url),
        h('td', {}, Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(', ')),
        h('td', { class: `health-${t.health}` }, t.health),
        h('td', {}, ago(t.last_scrape_ms)),
        h('td', {}, t.last_scrape_duration_seconds == null ? '' : `${t.last_scrape_duration_seconds.toFixed(3)} s`),
        h('td', { class: 'muted' }, t.last_error || ''),
      ),
    );
    const errors = Object.entries(data.discovery_errors || {}).flatMap(([job, errs]) => errs.map((e) => h('p', { class: 'message error' }, `${job}: ${e}`)));
    this.body.replaceChildren(
      ...errors,
      rows.length
        ? h(
            'table',
            { class: 'targets-table' },
            h('thead', {}, h('tr', {}, ...['Job', 'URL', 'Labels', 'Health', 'Last scrape', 'Duration', 'Last error'].map((c) => h('th', {}, c)))),
            h('tbody', {}, ...rows),
          )
        : h('p', { class: 'message info' }, 'No scrape targets: add [[scrape_configs]] to the configuration (docs/pull-mode.md).'),
    );
  }
}
