// Storage: what the data directory holds per tenant, service and level, the disk, and the limits
// on both (/api/storage).

import { h } from '../dom.js';
import { getJSON, clearCache } from '../api.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 → "1.5 KiB". */
export function formatBytes(n) {
  if (n == null) return '–';
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

function summary(data) {
  const rows = [
    ['Stored (accounted)', formatBytes(data.total_bytes), 'storage-total', 'Live chunks and dictionaries of every tenant: what storage.max_disk_bytes bounds.'],
    ['Files on disk', formatBytes(data.disk_bytes), 'storage-disk', 'Follows the accounted size with a lag: the files shrink as their segments are rewritten.'],
    ['Free on the filesystem', formatBytes(data.disk_free_bytes), 'storage-free', 'Pushes get 507 below storage.min_free_disk_bytes.'],
    ['storage.max_disk_bytes', data.max_disk_bytes ? formatBytes(data.max_disk_bytes) : 'off', 'storage-max', 'Past it, the oldest data of the finest level goes first.'],
    ['storage.min_free_disk_bytes', data.min_free_disk_bytes ? formatBytes(data.min_free_disk_bytes) : 'off', 'storage-floor', ''],
  ];
  const low = data.min_free_disk_bytes && data.disk_free_bytes != null && data.disk_free_bytes < data.min_free_disk_bytes;
  return h(
    'div',
    {},
    low ? h('p', { class: 'message error', id: 'storage-floor-reached' }, 'Free disk is below storage.min_free_disk_bytes: pushes are refused (507) until space is freed.') : null,
    h('table', { class: 'storage-summary' }, h('tbody', {}, ...rows.map(([k, v, id, title]) => h('tr', { title }, h('th', {}, k), h('td', { id }, v))))),
  );
}

function table(cls, head, rows) {
  return h('table', { class: `storage-table ${cls}` }, h('thead', {}, h('tr', {}, ...head.map((c) => h('th', {}, c)))), h('tbody', {}, ...rows));
}

export class StorageView {
  constructor() {
    this.body = h('div', { class: 'storage' });
    this.el = h('section', { class: 'view storage-view' }, this.body);
  }

  async update(_state, { isCurrent }) {
    clearCache();
    const data = await getJSON('api/storage');
    if (!isCurrent()) return;
    if (!data.supported) {
      this.body.replaceChildren(summary(data), h('p', { class: 'message info' }, 'This storage backend does not report its size.'));
      return;
    }
    const scope = data.scope === 'all' ? 'every tenant' : `tenant ${data.tenant}`;
    const services = data.services.map((s) =>
      h('tr', { dataset: { tenant: s.tenant, service: s.service } }, h('td', {}, s.tenant), h('td', {}, s.service), h('td', { class: 'num', dataset: { bytes: s.bytes } }, formatBytes(s.bytes)), h('td', { class: 'num' }, String(s.chunks))),
    );
    const levels = data.levels.map(([level, s]) =>
      h('tr', { dataset: { level } }, h('td', {}, level), h('td', { class: 'num', dataset: { bytes: s.bytes } }, formatBytes(s.bytes)), h('td', { class: 'num' }, String(s.chunks))),
    );
    const entries = data.entries.map((e) =>
      h(
        'tr',
        { dataset: { tenant: e.tenant, service: e.service, level: e.level } },
        h('td', {}, e.tenant),
        h('td', {}, e.service),
        h('td', {}, e.level),
        h('td', { class: 'num', dataset: { bytes: e.bytes } }, formatBytes(e.bytes)),
        h('td', { class: 'num' }, String(e.chunks)),
      ),
    );
    this.body.replaceChildren(
      summary(data),
      h('h2', {}, `By service (${scope}, ${formatBytes(data.visible_bytes)})`),
      services.length ? table('storage-services', ['Tenant', 'Service', 'Bytes', 'Chunks'], services) : h('p', { class: 'message info' }, 'Nothing stored yet.'),
      h('h2', {}, 'By level'),
      table('storage-levels', ['Level', 'Bytes', 'Chunks'], levels),
      h('h2', {}, 'By service and level'),
      table('storage-entries', ['Tenant', 'Service', 'Level', 'Bytes', 'Chunks'], entries),
    );
  }
}
