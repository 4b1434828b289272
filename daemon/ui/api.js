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

// The CSRF token of the signed-in session (from /api/session or /api/login): sent with every
// state-changing request, never kept in a cookie.
let csrfToken = null;

/** On a 401 (signed out, or the session ended) the app shows the login page. */
function unauthorized(res) {
  if (res.status === 401) globalThis.dispatchEvent?.(new CustomEvent('kiln:unauthorized'));
}

/** Who this browser is: the daemon's /api/session, or null when it must sign in first. */
export async function fetchSession() {
  const res = await fetch('api/session', { headers: headers() });
  if (res.status === 401) return null;
  if (!res.ok) throw new ApiError(`api/session: ${res.status} ${res.statusText}`);
  const session = await res.json();
  csrfToken = session.csrf_token || null;
  return session;
}

async function send(method, path, body) {
  const h = { ...headers(), 'content-type': 'application/json' };
  if (csrfToken) h['x-csrf-token'] = csrfToken;
  const res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) {
    const text = (await res.text()).trim();
    let message = text;
    try {
      message = JSON.parse(text).message || text;
    } catch {
      // not JSON: the text as is
    }
    const err = new ApiError(message || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return res;
}

export async function login(username, password) {
  const session = await (await send('POST', 'api/login', { username, password })).json();
  csrfToken = session.csrf_token || null;
  return session;
}

export async function logout() {
  await send('POST', 'api/logout');
  csrfToken = null;
}

/** Deletes every series of an application (`app.cpu` names its application). */
export function deleteApp(name) {
  return send('DELETE', 'api/apps', { name });
}

/** GET a JSON endpoint; identical requests share one response while it is cached. */
export function getJSON(path, params = {}) {
  const url = apiUrl(path, params);
  if (cache.has(url)) return cache.get(url);
  const call = () => fetch(url, { headers: headers() });
  const promise = call().then(async (res) => {
    unauthorized(res);
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
