// Queries and times as the HTTP API speaks them: `app.type{k="v",...}` selectors and `from`/`until`
// values (`now-1h`, Unix seconds or milliseconds).

const MATCHER_OPS = ['=~', '!~', '!=', '='];

/** `a.b.cpu` → { app: 'a.b', type: 'cpu' }: the profile type is the part after the last dot. */
export function splitAppName(name) {
  const dot = name.lastIndexOf('.');
  if (dot <= 0) return { app: name, type: '' };
  return { app: name.slice(0, dot), type: name.slice(dot + 1) };
}

/** Parses `app.type{k="v",k2=~"re"}` into { app, type, matchers: [{ name, op, value }] }. */
export function parseQuery(query) {
  const text = (query || '').trim();
  const brace = text.indexOf('{');
  const head = brace >= 0 ? text.slice(0, brace) : text;
  const { app, type } = splitAppName(head.trim());
  const matchers = brace >= 0 ? parseMatchers(text.slice(brace + 1, text.lastIndexOf('}') > brace ? text.lastIndexOf('}') : undefined)) : [];
  return { app, type, matchers };
}

function parseMatchers(body) {
  const matchers = [];
  let i = 0;
  const skipSpaces = () => {
    while (i < body.length && /[\s,]/.test(body[i])) i++;
  };
  while (true) {
    skipSpaces();
    if (i >= body.length) break;
    const nameMatch = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(body.slice(i));
    if (!nameMatch) break;
    const name = nameMatch[0];
    i += name.length;
    while (body[i] === ' ') i++;
    const op = MATCHER_OPS.find((o) => body.startsWith(o, i));
    if (!op) break;
    i += op.length;
    while (body[i] === ' ') i++;
    if (body[i] !== '"') break;
    i++;
    let value = '';
    while (i < body.length && body[i] !== '"') {
      if (body[i] === '\\' && i + 1 < body.length) i++;
      value += body[i];
      i++;
    }
    i++;
    matchers.push({ name, op, value });
  }
  return matchers;
}

export function formatMatcher({ name, op, value }) {
  return `${name}${op}"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** The inverse of parseQuery. */
export function formatQuery({ app, type, matchers }) {
  const head = type ? `${app}.${type}` : app;
  const list = (matchers || []).filter((m) => m.name).map(formatMatcher);
  return list.length ? `${head}{${list.join(',')}}` : head;
}

/** The query with one matcher set (replacing any other matcher on the same label). */
export function withMatcher(query, matcher) {
  const q = parseQuery(query);
  q.matchers = q.matchers.filter((m) => m.name !== matcher.name).concat([matcher]);
  return formatQuery(q);
}

// ---------------------------------------------------------------------------------------------------
// Times

const UNIT_SECONDS = [
  ['mon', 30 * 86400],
  ['min', 60],
  ['s', 1],
  ['M', 30 * 86400],
  ['m', 60],
  ['h', 3600],
  ['d', 86400],
  ['w', 7 * 86400],
  ['y', 365 * 86400],
];

export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/**
 * Resolves a `from`/`until` value to Unix seconds: `now`, `now-1h`, `now-1h30m`, digits (seconds,
 * or ms/µs/ns by length as the API reads them), or a date such as `2024-05-01 12:00` (local time).
 * Returns null when the text is none of these.
 */
export function parseTime(value, now = nowSeconds()) {
  const text = String(value ?? '').trim();
  if (text === '' || text === 'now') return now;
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (text.length === 13) return Math.floor(n / 1e3);
    if (text.length === 16) return Math.floor(n / 1e6);
    if (text.length === 19) return Math.floor(n / 1e9);
    return n;
  }
  const relative = /^now\s*([+-])\s*((?:\d+\s*[a-zA-Z]+\s*)+)$/.exec(text);
  if (relative) {
    const sign = relative[1] === '-' ? -1 : 1;
    let offset = 0;
    for (const [, amount, unit] of relative[2].matchAll(/(\d+)\s*([a-zA-Z]+)/g)) {
      const found = UNIT_SECONDS.find(([u]) => unit.startsWith(u));
      if (!found) return null;
      offset += Number(amount) * found[1];
    }
    return now + sign * offset;
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const ms = Date.parse(text.replace(' ', 'T'));
    return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
  }
  return null;
}

const pad = (n) => String(n).padStart(2, '0');

/** Unix seconds as `YYYY-MM-DD HH:MM[:SS]` in local time (what parseTime reads back). */
export function formatDateTime(seconds) {
  const d = new Date(seconds * 1000);
  const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.getSeconds() ? `${base}:${pad(d.getSeconds())}` : base;
}

/** How a from/until value reads in the UI: relative expressions as typed, absolute ones as dates. */
export function describeTime(value) {
  const text = String(value ?? '');
  return /^\d+$/.test(text) ? formatDateTime(parseTime(text)) : text;
}

export const RANGE_PRESETS = [
  { label: 'Last 5 minutes', from: 'now-5m' },
  { label: 'Last 15 minutes', from: 'now-15m' },
  { label: 'Last hour', from: 'now-1h' },
  { label: 'Last 6 hours', from: 'now-6h' },
  { label: 'Last 24 hours', from: 'now-24h' },
  { label: 'Last 7 days', from: 'now-7d' },
  { label: 'Last 30 days', from: 'now-30d' },
];
