// Timeline chart on a canvas: one or more series of {startTime, durationDelta, samples} over the query
// range, highlighted sub-ranges (the diff sides), and drag-to-select a new range.

import { formatValue } from './flamegraph.js';

const PADDING = { top: 16, right: 8, bottom: 18, left: 8 };
const TICK_STEPS = [60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400];
const MIN_DRAG_PX = 4;

function cssVar(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

const pad = (n) => String(n).padStart(2, '0');

function tickLabel(seconds, step) {
  const d = new Date(seconds * 1000);
  if (step >= 86400) return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export class Timeline {
  /**
   * @param {HTMLElement} container
   * @param {object} options  height (CSS px), onSelect(fromSeconds, untilSeconds)
   */
  constructor(container, options = {}) {
    this.container = container;
    this.options = options;
    this.height = options.height || 96;
    this.data = { from: 0, until: 1, series: [], selections: [], metadata: {} };
    this.drag = null;
    container.classList.add('kiln-timeline');
    this.canvas = document.createElement('canvas');
    this.canvas.style.display = 'block';
    this.canvas.style.width = '100%';
    this.canvas.style.height = `${this.height}px`;
    this.canvas.title = 'Drag to select a time range';
    container.append(this.canvas);
    this.canvas.addEventListener('mousedown', (e) => this.startDrag(e));
    this.onMove = (e) => this.moveDrag(e);
    this.onUp = (e) => this.endDrag(e);
    if (typeof ResizeObserver === 'function') new ResizeObserver(() => this.draw()).observe(container);
    if (typeof matchMedia === 'function') matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.draw());
  }

  /**
   * @param {object} data  from, until (Unix s), series [{ name, color, timeline }],
   *                       selections [{ from, until, color }], metadata (units for the y label)
   */
  setData(data) {
    this.data = { series: [], selections: [], metadata: {}, ...data };
    this.draw();
  }

  secondsAt(clientX) {
    const rect = this.canvas.getBoundingClientRect();
    const plotWidth = rect.width - PADDING.left - PADDING.right;
    const f = Math.min(1, Math.max(0, (clientX - rect.left - PADDING.left) / plotWidth));
    const { from, until } = this.data;
    return Math.round(from + f * (until - from));
  }

  startDrag(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.drag = { startX: event.clientX, endX: event.clientX };
    window.addEventListener('mousemove', this.onMove);
    window.addEventListener('mouseup', this.onUp);
  }

  moveDrag(event) {
    this.drag.endX = event.clientX;
    this.draw();
  }

  endDrag(event) {
    window.removeEventListener('mousemove', this.onMove);
    window.removeEventListener('mouseup', this.onUp);
    const { startX } = this.drag;
    this.drag = null;
    this.draw();
    if (Math.abs(event.clientX - startX) < MIN_DRAG_PX || !this.options.onSelect) return;
    const a = this.secondsAt(startX);
    const b = this.secondsAt(event.clientX);
    this.options.onSelect(Math.min(a, b), Math.max(a, b));
  }

  draw() {
    const canvas = this.canvas;
    const width = Math.max(1, this.container.clientWidth);
    const height = this.height;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const { from, until, series, selections, metadata } = this.data;
    const span = Math.max(1, until - from);
    const plotW = width - PADDING.left - PADDING.right;
    const plotH = height - PADDING.top - PADDING.bottom;
    const xOf = (t) => PADDING.left + ((t - from) / span) * plotW;
    const text = cssVar(this.container, '--muted', '#666');
    const grid = cssVar(this.container, '--border', '#ddd');
    ctx.font = '11px system-ui, sans-serif';

    // Time ticks.
    const step = TICK_STEPS.find((s) => span / s <= Math.max(2, plotW / 90)) || TICK_STEPS[TICK_STEPS.length - 1];
    const tz = new Date(from * 1000).getTimezoneOffset() * 60;
    ctx.strokeStyle = grid;
    ctx.fillStyle = text;
    ctx.textBaseline = 'alphabetic';
    ctx.lineWidth = 1;
    const firstTick = Math.ceil((from - tz) / step) * step + tz;
    for (let t = firstTick; t <= until; t += step) {
      const x = Math.round(xOf(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, PADDING.top);
      ctx.lineTo(x, PADDING.top + plotH);
      ctx.stroke();
      const label = tickLabel(t, step);
      const lw = ctx.measureText(label).width;
      ctx.fillText(label, Math.min(width - lw - 2, Math.max(2, x - lw / 2)), height - 4);
    }
    ctx.beginPath();
    ctx.moveTo(PADDING.left, PADDING.top + plotH + 0.5);
    ctx.lineTo(PADDING.left + plotW, PADDING.top + plotH + 0.5);
    ctx.stroke();

    // Selections (under the data).
    for (const sel of selections) {
      const x0 = xOf(Math.max(from, sel.from));
      const x1 = xOf(Math.min(until, sel.until));
      if (x1 <= x0) continue;
      ctx.globalAlpha = 0.18;
      ctx.fillStyle = sel.color;
      ctx.fillRect(x0, PADDING.top, x1 - x0, plotH);
      ctx.globalAlpha = 1;
      ctx.fillRect(x0, PADDING.top, x1 - x0, 2);
    }

    let max = 0;
    for (const s of series) for (const v of (s.timeline && s.timeline.samples) || []) max = Math.max(max, v);
    const yOf = (v) => PADDING.top + plotH - (max > 0 ? (v / max) * plotH : 0);
    const fill = cssVar(this.container, '--timeline-fill', '#7b6cf6');
    const filled = series.length === 1;
    for (const s of series) {
      const tl = s.timeline;
      if (!tl || !tl.samples || !tl.samples.length) continue;
      const dt = tl.durationDelta || 10;
      ctx.strokeStyle = s.color || fill;
      ctx.fillStyle = s.color || fill;
      ctx.lineWidth = 1.5;
      if (filled) {
        // One bar per bucket: honest about where data exists.
        tl.samples.forEach((v, i) => {
          if (!v) return;
          const x0 = xOf(tl.startTime + i * dt);
          const x1 = xOf(tl.startTime + (i + 1) * dt);
          const y = yOf(v);
          ctx.globalAlpha = 0.75;
          ctx.fillRect(x0, y, Math.max(2, x1 - x0 - (x1 - x0 > 3 ? 1 : 0)), PADDING.top + plotH - y);
          ctx.globalAlpha = 1;
        });
      } else {
        ctx.beginPath();
        tl.samples.forEach((v, i) => {
          const x = xOf(tl.startTime + (i + 0.5) * dt);
          if (i === 0) ctx.moveTo(x, yOf(v));
          else ctx.lineTo(x, yOf(v));
        });
        ctx.stroke();
      }
    }
    ctx.fillStyle = text;
    ctx.textBaseline = 'top';
    const maxLabel = max > 0 ? `max ${formatValue(max, metadata)} per ${stepLabel(series)}` : 'no data in this range';
    ctx.fillText(maxLabel, PADDING.left + 2, 2);

    if (this.drag) {
      const x0 = Math.min(this.drag.startX, this.drag.endX) - canvas.getBoundingClientRect().left;
      const w = Math.abs(this.drag.endX - this.drag.startX);
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = cssVar(this.container, '--accent', '#4a7cf7');
      ctx.fillRect(x0, PADDING.top, w, plotH);
      ctx.globalAlpha = 1;
    }
  }
}

function stepLabel(series) {
  const withTimeline = series.find((s) => s.timeline);
  const dt = (withTimeline && withTimeline.timeline.durationDelta) || 10;
  if (dt % 86400 === 0) return `${dt / 86400} d`;
  if (dt % 3600 === 0) return `${dt / 3600} h`;
  if (dt % 60 === 0) return `${dt / 60} min`;
  return `${dt} s`;
}
