// Kiln web UI: the header (views, application, profile type, label selector, time range) and the
// routing of URL state to the active view.

import { h } from './dom.js';
import { fetchApps, fetchAppNames, clearCache, fetchSession, login, logout, deleteApp } from './api.js';
import { parseQuery, formatQuery, splitAppName, parseTime, describeTime, RANGE_PRESETS } from './query.js';
import { readState, navigate, stateToSearch } from './state.js';
import { SelectorEditor } from './selector.js';
import { ExploreView } from './views/explore.js';
import { CompareView } from './views/compare.js';
import { TagsView } from './views/tags.js';
import { TargetsView } from './views/targets.js';
import { StorageView } from './views/storage.js';
import { messageBox } from './views/common.js';

const VIEW_TABS = [
  ['explore', 'Explore'],
  ['compare', 'Compare'],
  ['diff', 'Diff'],
  ['tags', 'Tag explorer'],
  ['targets', 'Targets'],
  ['storage', 'Storage'],
];
const VIEW_FACTORIES = {
  explore: () => new ExploreView(),
  compare: () => new CompareView('compare'),
  diff: () => new CompareView('diff'),
  tags: () => new TagsView(),
  targets: () => new TargetsView(),
  storage: () => new StorageView(),
};
const PREFERRED_TYPES = ['cpu', 'itimer', 'wall', 'inuse_space', 'alloc_space'];

// Changing what is profiled or when makes these stale.
const RESET_ON_NEW_SELECTION = { zoom: '', fn: '', leftQuery: '', rightQuery: '', leftFrom: '', leftUntil: '', rightFrom: '', rightUntil: '', groupValue: '' };
const RESET_ON_NEW_RANGE = { zoom: '', leftFrom: '', leftUntil: '', rightFrom: '', rightUntil: '' };

/** Applications and their profile types, from /api/apps and /label-values?label=__name__. */
async function loadApps() {
  const [apps, names] = await Promise.all([fetchApps().catch(() => []), fetchAppNames().catch(() => [])]);
  const byApp = new Map();
  for (const full of [...apps.map((a) => a.name), ...names]) {
    const { app, type } = splitAppName(full);
    if (!app || !type) continue;
    if (!byApp.has(app)) byApp.set(app, new Set());
    byApp.get(app).add(type);
  }
  return new Map([...byApp.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([app, types]) => [app, [...types].sort()]));
}

function preferredType(types) {
  return PREFERRED_TYPES.find((t) => types.includes(t)) || types[0];
}

/** The login page: shown when the daemon has auth on and this browser is not signed in. */
function showLogin(root, notice = '') {
  const user = h('input', { id: 'login-user', name: 'username', type: 'text', autocomplete: 'username', required: true, 'aria-label': 'user name' });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, 'aria-label': 'password' });
  const error = h('p', { id: 'login-error', class: 'message error', hidden: true, role: 'alert' });
  const submit = h('button', { id: 'login-submit', type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      id: 'login-form',
      class: 'login-form',
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        try {
          await login(user.value.trim(), password.value);
          location.reload();
        } catch (err) {
          error.textContent = err.message || String(err);
          error.hidden = false;
          password.value = '';
          submit.disabled = false;
        }
      },
    },
    h('h1', { class: 'brand' }, 'Kiln'),
    notice ? h('p', { id: 'login-notice', class: 'message warning' }, notice) : null,
    h('label', {}, 'User name', user),
    h('label', {}, 'Password', password),
    submit,
    error,
  );
  root.replaceChildren(h('div', { class: 'login-page' }, form));
  document.body.dataset.state = 'login';
  user.focus();
}

/** Who is signed in, with a logout button (only for a signed-in user of a daemon with auth on). */
function userBar(session) {
  if (!session || !session.user) return null;
  return h(
    'span',
    { class: 'user-bar', id: 'user-bar', dataset: { role: session.role } },
    h('span', { id: 'user-name', class: 'muted' }, `${session.user} (${session.role})`),
    h('button', { type: 'button', id: 'logout', onclick: async () => (await logout().catch(() => {}), location.reload()) }, 'Sign out'),
  );
}

class Header {
  constructor(apps, session) {
    this.apps = apps;
    this.session = session;
    this.tabs = VIEW_TABS.map(([view, label]) =>
      h('a', { class: 'tab', dataset: { view }, href: '?', onclick: (e) => (e.preventDefault(), navigate({ view })) }, label),
    );
    this.appSelect = h('select', { id: 'app-select', 'aria-label': 'application', onchange: () => this.pickApp(this.appSelect.value) });
    this.typeSelect = h('select', { id: 'type-select', 'aria-label': 'profile type', onchange: () => this.pickType(this.typeSelect.value) });
    this.selector = new SelectorEditor({
      idPrefix: 'main-selector',
      baseQuery: () => formatQuery({ ...parseQuery(this.state.query), matchers: [] }),
      onChange: (matchers) => navigate({ query: formatQuery({ ...parseQuery(this.state.query), matchers }), zoom: '', fn: '' }),
    });
    this.queryInput = h('input', {
      id: 'query-input',
      type: 'text',
      class: 'query-input',
      spellcheck: false,
      'aria-label': 'query',
      title: 'The full query; edit and press Enter',
      onkeydown: (e) => e.key === 'Enter' && navigate({ query: e.target.value.trim(), ...RESET_ON_NEW_SELECTION }),
    });
    this.preset = h(
      'select',
      { id: 'range-preset', 'aria-label': 'time range', onchange: (e) => e.target.value && navigate({ from: e.target.value, until: 'now', ...RESET_ON_NEW_RANGE }) },
      RANGE_PRESETS.map((p) => h('option', { value: p.from }, p.label)),
      h('option', { value: '' }, 'Custom range'),
    );
    const onEnter = (e) => e.key === 'Enter' && this.applyRange();
    this.fromInput = h('input', { id: 'from-input', type: 'text', class: 'time-input', 'aria-label': 'from', title: 'now-1h, a Unix time, or YYYY-MM-DD HH:MM', onkeydown: onEnter });
    this.untilInput = h('input', { id: 'until-input', type: 'text', class: 'time-input', 'aria-label': 'until', title: 'now, a Unix time, or YYYY-MM-DD HH:MM', onkeydown: onEnter });
    this.el = h(
      'header',
      { class: 'app-header' },
      h(
        'div',
        { class: 'topbar' },
        h('a', { class: 'brand', href: '?' }, 'Kiln'),
        h('nav', { class: 'tabs' }, this.tabs),
        h('span', { class: 'spacer' }),
        h(
          'span',
          { class: 'time-range' },
          this.preset,
          this.fromInput,
          h('span', { class: 'muted' }, '→'),
          this.untilInput,
          h('button', { type: 'button', id: 'apply-range', onclick: () => this.applyRange() }, 'Apply'),
          h('button', { type: 'button', id: 'refresh', title: 'Fetch again', onclick: () => (clearCache(), window.dispatchEvent(new CustomEvent('kiln:statechange'))) }, 'Refresh'),
        ),
        userBar(session),
      ),
      h('div', { class: 'querybar' }, this.appSelect, this.typeSelect, this.selector.el, this.queryInput, this.deleteButton()),
    );
  }

  /** "Delete app" for a signed-in editor or admin; a viewer is not offered it. */
  deleteButton() {
    if (!this.session || !this.session.user || !this.session.can_delete) return null;
    return h(
      'button',
      {
        type: 'button',
        id: 'delete-app',
        class: 'danger',
        title: 'Delete every profile of this application',
        onclick: async () => {
          const { app, type } = parseQuery(this.state.query);
          if (!app || !globalThis.confirm(`Delete every profile of ${app}?`)) return;
          try {
            await deleteApp(`${app}.${type}`);
            location.assign(location.pathname);
          } catch (err) {
            globalThis.alert(`Delete failed: ${err.message || err}`);
          }
        },
      },
      'Delete app',
    );
  }

  pickApp(app) {
    const types = this.apps.get(app) || [];
    navigate({ query: formatQuery({ app, type: preferredType(types), matchers: [] }), ...RESET_ON_NEW_SELECTION });
  }

  pickType(type) {
    navigate({ query: formatQuery({ ...parseQuery(this.state.query), type }), ...RESET_ON_NEW_SELECTION });
  }

  /** Reads the from/until inputs: relative expressions stay as typed, dates become Unix seconds. */
  applyRange() {
    const read = (input) => {
      const text = input.value.trim();
      const seconds = parseTime(text);
      input.classList.toggle('invalid', seconds === null);
      if (seconds === null) return null;
      return /^now/.test(text) || /^\d+$/.test(text) ? text : String(seconds);
    };
    const from = read(this.fromInput);
    const until = read(this.untilInput);
    if (from === null || until === null) return;
    if (parseTime(from) >= parseTime(until)) {
      this.fromInput.classList.add('invalid');
      return;
    }
    navigate({ from, until, ...RESET_ON_NEW_RANGE });
  }

  update(state) {
    this.state = state;
    for (const tab of this.tabs) {
      tab.classList.toggle('active', tab.dataset.view === state.view);
      tab.href = stateToSearch({ ...state, view: tab.dataset.view }) || '?';
    }
    const { app, type, matchers } = parseQuery(state.query);
    const appNames = [...this.apps.keys()];
    if (app && !this.apps.has(app)) appNames.push(app);
    this.appSelect.replaceChildren(...appNames.map((a) => h('option', { value: a, selected: a === app }, a)));
    const types = (this.apps.get(app) || []).slice();
    if (type && !types.includes(type)) types.push(type);
    this.typeSelect.replaceChildren(...types.map((t) => h('option', { value: t, selected: t === type }, t)));
    this.selector.setMatchers(matchers);
    if (document.activeElement !== this.queryInput) this.queryInput.value = state.query;
    const isPreset = state.until === 'now' && RANGE_PRESETS.some((p) => p.from === state.from);
    this.preset.value = isPreset ? state.from : '';
    for (const [input, value] of [[this.fromInput, state.from], [this.untilInput, state.until]]) {
      if (document.activeElement !== input) input.value = describeTime(value);
      input.classList.remove('invalid');
    }
  }
}

class App {
  constructor(root, apps, session) {
    this.root = root;
    this.header = new Header(apps, session);
    this.views = {};
    this.main = h('main', { class: 'app-main' });
    this.errorSlot = h('div', { class: 'error-slot' });
    root.replaceChildren(this.header.el, this.errorSlot, this.main);
    this.seq = 0;
    window.addEventListener('popstate', () => this.update());
    window.addEventListener('kiln:statechange', () => this.update());
  }

  view(name) {
    if (!this.views[name]) {
      this.views[name] = VIEW_FACTORIES[name]();
      this.main.append(this.views[name].el);
    }
    return this.views[name];
  }

  async update() {
    const seq = ++this.seq;
    const isCurrent = () => seq === this.seq;
    const state = readState();
    this.header.update(state);
    document.title = `${state.query || 'Kiln'} · ${VIEW_TABS.find(([v]) => v === state.view)[1]} · Kiln`;
    const active = this.view(state.view);
    for (const [name, view] of Object.entries(this.views)) view.el.hidden = name !== state.view;
    document.body.dataset.state = 'loading';
    try {
      await active.update(state, { isCurrent });
      if (!isCurrent()) return;
      this.errorSlot.replaceChildren();
      document.body.dataset.state = 'ready';
    } catch (err) {
      // Signed out meanwhile: the login page has replaced the app.
      if (!isCurrent() || document.getElementById('login-form')) return;
      this.errorSlot.replaceChildren(messageBox(String(err && err.message ? err.message : err), 'error'));
      document.body.dataset.state = 'error';
      console.error(err);
    }
  }
}

async function start() {
  const root = document.getElementById('app');
  const session = await fetchSession();
  if (session === null) {
    showLogin(root);
    return;
  }
  // A 401 later on: the session expired or was ended elsewhere.
  window.addEventListener('kiln:unauthorized', () => showLogin(root, 'Your session has ended: sign in again.'), { once: true });
  if (session.user) document.body.dataset.role = session.role;
  const apps = await loadApps();
  const state = readState();
  if (!state.query) {
    if (apps.size === 0) {
      root.replaceChildren(
        h('header', { class: 'app-header' }, h('div', { class: 'topbar' }, h('span', { class: 'brand' }, 'Kiln'), h('span', { class: 'spacer' }), userBar(session))),
        messageBox('No profiles yet. Send one to /ingest (for example with one of the Kiln SDKs) and reload this page.'),
      );
      document.body.dataset.state = 'empty';
      return;
    }
    const [app, types] = apps.entries().next().value;
    history.replaceState(null, '', `${location.pathname}${stateToSearch({ ...state, query: formatQuery({ app, type: preferredType(types), matchers: [] }) })}`);
  }
  await new App(root, apps, session).update();
}

start().catch((err) => {
  document.getElementById('app').replaceChildren(messageBox(`Kiln UI failed to start: ${err.message || err}`, 'error'));
  document.body.dataset.state = 'error';
});
