// Calls to the daemon's HTTP API. Paths are relative to the page, so the UI also works when the
// daemon is served under a path prefix.

const CACHE_LIMIT = 24;
const cache = new Map();

export class ApiError extends Error {}

const KEY_ITEM = 'kiln.apiKey';

/** Headers of an API call: the API key, when the daemon has auth on and one was given. */
function headers() {
  const h = { accept: 'application/json' };
  const key = globalThis.localStorage?.getItem(KEY_ITEM);
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

/** On a 401, asks once for an API key (kept in this browser's localStorage) and says whether to retry. */
function askForKey(res) {
  if (res.status !== 401 || typeof globalThis.prompt !== 'function') return false;
  const key = globalThis.prompt('This Kiln needs an API key (reader role or above):');
  if (!key) return false;
  globalThis.localStorage?.setItem(KEY_ITEM, key.trim());
  return true;
}

/** GET a JSON endpoint; identical requests share one response while it is cached. */
export function getJSON(path, params = {}) {
  const url = apiUrl(path, params);
  if (cache.has(url)) return cache.get(url);
  const call = () => fetch(url, { headers: headers() });
  const promise = call().then(async (res) => {
    if (askForKey(res)) res = await call();
    if (!res.ok) {
      const text = (await res.text()).trim();
      throw new ApiError(`${path}: ${res.status} ${res.statusText}${text ? ` — ${text.slice(0, 300)}` : ''}`);
    }
    return res.json();
  });
  cache.set(url, promise);
  promise.catch(() => cache.delete(url));
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value);
  return promise;
}

/** Forgets cached responses, so relative ranges such as now-1h are fetched again. */
export function clearCache() {
  cache.clear();
}

/** `render?query=...` with empty parameters left out. */
export function apiUrl(path, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const qs = search.toString();
  return qs ? `${path}?${qs}` : path;
}

export function fetchApps() {
  return getJSON('api/apps');
}

export function fetchAppNames() {
  return getJSON('label-values', { label: '__name__' });
}

export function fetchLabels(query) {
  return getJSON('labels', { query });
}

export function fetchLabelValues(label, query) {
  return getJSON('label-values', { label, query });
}

/** GET /render as JSON for a selection: { query, from, until, maxNodes, groupBy }. */
export function fetchRender({ query, from, until, maxNodes, groupBy }) {
  return getJSON('render', { query, from, until, maxNodes, groupBy, format: 'json' });
}

export function diffParams(left, right, maxNodes) {
  return {
    leftQuery: left.query,
    leftFrom: left.from,
    leftUntil: left.until,
    rightQuery: right.query,
    rightFrom: right.from,
    rightUntil: right.until,
    maxNodes,
  };
}

export function fetchDiff(left, right, maxNodes) {
  return getJSON('render-diff', { ...diffParams(left, right, maxNodes), format: 'json' });
}

/** The formats the daemon exports a selection in, with the file extension of each. */
export const EXPORT_FORMATS = [
  { format: 'png', label: 'PNG image', ext: 'png' },
  { format: 'svg', label: 'SVG image', ext: 'svg' },
  { format: 'html', label: 'Standalone HTML', ext: 'html' },
  { format: 'json', label: 'Flamebearer JSON', ext: 'json' },
  { format: 'pprof', label: 'pprof', ext: 'pb.gz' },
  { format: 'collapsed', label: 'Collapsed stacks', ext: 'txt' },
  { format: 'speedscope', label: 'Speedscope JSON', ext: 'speedscope.json' },
];

export function exportUrl(selection, format) {
  const { query, from, until, maxNodes } = selection;
  return apiUrl('render', { query, from, until, maxNodes, format });
}
