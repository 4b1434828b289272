// The whole view state lives in the page's query string, so a link reproduces the view and the
// browser's back/forward buttons move between views.

export const VIEWS = ['explore', 'compare', 'diff', 'tags', 'targets', 'storage'];
export const LAYOUTS = ['both', 'flamegraph', 'table', 'sandwich'];

const DEFAULTS = {
  view: 'explore',
  query: '',
  from: 'now-1h',
  until: 'now',
  layout: 'both',
  search: '',
  fn: '',
  zoom: '',
  sort: '',
  maxNodes: '',
  leftQuery: '',
  leftFrom: '',
  leftUntil: '',
  rightQuery: '',
  rightFrom: '',
  rightUntil: '',
  groupBy: '',
  groupValue: '',
};

export const STATE_KEYS = Object.keys(DEFAULTS);

/** Reads the state from a query string (defaults fill what is missing). */
export function readState(search = location.search) {
  const params = new URLSearchParams(search);
  const state = { ...DEFAULTS };
  for (const key of STATE_KEYS) {
    const value = params.get(key);
    if (value !== null) state[key] = value;
  }
  if (!VIEWS.includes(state.view)) state.view = DEFAULTS.view;
  if (!LAYOUTS.includes(state.layout)) state.layout = DEFAULTS.layout;
  return state;
}

/** The query string of a state; values equal to their defaults are left out. */
export function stateToSearch(state) {
  const params = new URLSearchParams();
  for (const key of STATE_KEYS) {
    const value = state[key];
    if (value !== undefined && value !== null && value !== '' && value !== DEFAULTS[key]) params.set(key, value);
  }
  const qs = params.toString();
  return qs ? `?${qs}` : '';
}

/**
 * Applies `changes` to the current state and records it in the URL: a new history entry, or with
 * `replace` the current one (used while typing in search boxes).
 */
export function navigate(changes, { replace = false } = {}) {
  const next = { ...readState(), ...changes };
  const url = `${location.pathname}${stateToSearch(next)}`;
  if (url === `${location.pathname}${location.search}`) return false;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  window.dispatchEvent(new CustomEvent('kiln:statechange'));
  return true;
}
