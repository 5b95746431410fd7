/*
 * Charts: the overview's charts of the cluster's history (bars for counts per interval, lines
 * for values, ticks for deaths) with a readout under the pointer, and the workers' sparklines.
 */

import { $, el, setText, svg } from './dom.js';
import { fmtInt, fmtTime } from './format.js';

const HOUR_S = 3600;

// The charts and sparklines show the last hour, or less while the master is younger: the
// shortest of these spans (s) that holds all the history there is.
const SPANS = [600, 1200, 1800, HOUR_S];

export function historySpan(h) {
  const n = h && h.cluster ? (h.cluster.calls || []).length : 0;
  const covered = n * ((h && h.interval_s) || 10);
  return SPANS.find((span) => covered <= span) || HOUR_S;
}

// ---------------------------------------------------------------- sparklines

/** An inline SVG sparkline of one worker series over the last hour. */
export function sparkCell(td, stamp, history, worker, name, maxOf, format) {
  const series = history && history.workers && history.workers[worker.worker_id];
  const values = series ? series[name] || [] : [];
  const key = stamp + '|' + name + '|' + values.length + '|' + (values[values.length - 1] ?? '');
  if (td._key === key) return;
  td._key = key;
  const known = values.filter((v) => v !== null && v !== undefined);
  if (!known.length) {
    td.replaceChildren(el('span', { className: 'dim', text: '–' }));
    return;
  }
  const max = maxOf(known) || Math.max(...known) || 1;
  const w = 120;
  const h = 24;
  const root = svg('svg', {
    viewBox: '0 0 ' + w + ' ' + h,
    width: w,
    height: h,
    class: 'sparkline ' + name,
    role: 'img',
  });
  const interval = history.interval_s || 10;
  const span = historySpan(history);
  const x = (i) => w - ((values.length - 1 - i) * interval * w) / span;
  const y = (v) => h - 1.5 - (Math.min(v, max) / max) * (h - 3);
  const area = linePaths(values, x, y, h);
  root.append(svg('path', { d: area.fill, class: 'area' }), svg('path', { d: area.line, class: 'line' }));
  const title = svg('title');
  title.textContent =
    name.replace('_', ' ') +
    ', last ' + span / 60 + ' min: now ' + format(known[known.length - 1]) +
    ', max ' + format(Math.max(...known));
  root.append(title);
  td.replaceChildren(root);
}

/** SVG path data for a series with gaps (null): the line, and the area under it. */
function linePaths(values, x, y, bottom) {
  let line = '';
  let area = '';
  let segment = [];
  const flush = () => {
    if (!segment.length) return;
    const pts = segment.map(([i, v]) => x(i).toFixed(1) + ',' + y(v).toFixed(1));
    if (segment.length === 1) {
      const [i, v] = segment[0];
      pts.push((x(i) + 1).toFixed(1) + ',' + y(v).toFixed(1));
    }
    line += 'M' + pts.join('L');
    const first = x(segment[0][0]).toFixed(1);
    const last = Math.max(x(segment[segment.length - 1][0]), x(segment[0][0]) + 1).toFixed(1);
    area += 'M' + first + ',' + bottom + 'L' + pts.join('L') + 'L' + last + ',' + bottom + 'Z';
    segment = [];
  };
  values.forEach((v, i) => {
    if (v === null || v === undefined) flush();
    else segment.push([i, Number(v)]);
  });
  flush();
  return { line, fill: area };
}

// ---------------------------------------------------------------- charts

// type: 'bars' (a count per interval, stacked), 'line' (a value at each interval's end),
// 'ticks' (a mark under each interval that counted any, its own scale).
const CHARTS = [
  {
    name: 'tasks',
    title: 'Tasks finished / 10 s',
    series: [
      { key: 'tasks_done', label: 'done', cls: 's-good', type: 'bars' },
      { key: 'tasks_failed', label: 'failed', cls: 's-bad', type: 'bars' },
    ],
  },
  {
    name: 'calls',
    title: 'Actor calls / 10 s',
    series: [{ key: 'calls', label: 'calls', cls: 's-accent', type: 'bars' }],
  },
  {
    name: 'actors',
    title: 'Actors, and job deaths',
    series: [
      { key: 'actors', label: 'actors', cls: 's-accent', type: 'line' },
      { key: 'deaths', label: 'deaths', cls: 's-bad', type: 'ticks' },
    ],
  },
  {
    name: 'slots',
    title: 'CPU slots, waiting',
    series: [
      { key: 'cpu_used', label: 'CPU used', cls: 's-accent', type: 'line' },
      { key: 'waiting', label: 'waiting', cls: 's-warn', type: 'line' },
    ],
  },
];

const CHART_W = 400;
const CHART_H = 110;
const TICK_H = 9;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function buildChart(spec) {
  const box = el('figure', { className: 'chart', dataset: { testid: 'chart-' + spec.name } });
  const head = el('figcaption');
  const readout = el('span', { className: 'readout' });
  head.append(el('span', { className: 'chart-title', text: spec.title }), readout);
  const plot = el('div', { className: 'plot' });
  const root = svg('svg', {
    viewBox: '0 0 ' + CHART_W + ' ' + CHART_H,
    preserveAspectRatio: 'none',
    class: 'chart-svg',
    role: 'img',
    'aria-label': spec.title,
  });
  const grid = svg('g', { class: 'grid' });
  for (const f of [0, 0.5, 1]) {
    const yy = (CHART_H - 1) * (1 - f) + 0.5;
    grid.append(svg('line', { x1: 0, x2: CHART_W, y1: yy, y2: yy }));
  }
  const layers = svg('g');
  const cursor = svg('line', { class: 'cursor', x1: 0, x2: 0, y1: 0, y2: CHART_H, visibility: 'hidden' });
  root.append(grid, layers, cursor);
  const yMax = el('span', { className: 'ymax' });
  const yMid = el('span', { className: 'ymid' });
  plot.append(root, yMax, yMid);
  const xLeft = el('span');
  const xMid = el('span');
  const axis = el('div', { className: 'xaxis' }, xLeft, xMid, el('span', { text: 'now' }));
  box.append(head, plot, axis);
  const chart = { spec, box, root, layers, cursor, readout, yMax, yMid, xLeft, xMid, hover: null };
  root.addEventListener('mousemove', (ev) => {
    const rect = root.getBoundingClientRect();
    chart.hover = rect.width ? (ev.clientX - rect.left) / rect.width : null;
    drawReadout(chart);
  });
  root.addEventListener('mouseleave', () => {
    chart.hover = null;
    drawReadout(chart);
  });
  return chart;
}

let charts = null;

/** Draws the overview's charts of history `h` (the answer of /api/v1/history, or null). */
export function renderCharts(h) {
  if (!charts) {
    charts = CHARTS.map(buildChart);
    $('charts').replaceChildren(...charts.map((c) => c.box));
  }
  if (!h || !h.cluster) return;
  for (const chart of charts) drawChart(chart, h);
}

/** The chart's geometry: x of the end of interval i, the width of one interval. */
function chartGeometry(h, n) {
  const interval = h.interval_s || 10;
  const span = historySpan(h);
  const step = (interval * CHART_W) / span;
  return { interval, span, step, x: (i) => CHART_W - (n - 1 - i) * step };
}

function drawChart(chart, h) {
  const key = h.end + '|' + (h.cluster.calls || []).length;
  if (chart.key === key) return;
  chart.key = key;
  chart.history = h;
  const spec = chart.spec;
  const columns = spec.series.map((s) => (h.cluster[s.key] || []).map((v) => (v === null ? null : Number(v))));
  const n = Math.max(0, ...columns.map((c) => c.length));
  const g = chartGeometry(h, n);
  let max = 0;
  for (let i = 0; i < n; i++) {
    let stacked = 0;
    spec.series.forEach((s, k) => {
      const v = columns[k][i] || 0;
      if (s.type === 'bars') stacked += v;
      else if (s.type === 'line' && v > max) max = v;
    });
    if (stacked > max) max = stacked;
  }
  max = niceMax(max);
  const y = (v) => CHART_H - 1 - (Math.min(v, max) / max) * (CHART_H - 4);
  const nodes = [];
  const gap = g.step > 3 ? 1 : 0;
  const bw = Math.max(0.6, g.step - gap);
  const base = new Array(n).fill(0);
  spec.series.forEach((s, k) => {
    const values = columns[k];
    if (s.type === 'line') {
      const paths = linePaths(values, g.x, y, CHART_H);
      if (k === 0) nodes.push(svg('path', { d: paths.fill, class: 'area ' + s.cls }));
      nodes.push(svg('path', { d: paths.line, class: 'line ' + s.cls }));
      return;
    }
    let done = '';
    let running = '';
    values.forEach((v, i) => {
      if (!(v > 0)) return;
      const left = (g.x(i) - bw).toFixed(2);
      let top;
      let bottom;
      if (s.type === 'ticks') {
        top = CHART_H - TICK_H;
        bottom = CHART_H;
      } else {
        bottom = y(base[i]);
        top = y(base[i] + v);
        base[i] += v;
      }
      const d = 'M' + left + ',' + bottom.toFixed(2) + 'V' + top.toFixed(2) + 'h' + bw.toFixed(2) + 'V' + bottom.toFixed(2) + 'Z';
      // The last interval is still running: its count is partial, drawn lighter.
      if (i === values.length - 1) running += d;
      else done += d;
    });
    nodes.push(svg('path', { d: done, class: s.type + ' ' + s.cls }));
    nodes.push(svg('path', { d: running, class: s.type + ' partial ' + s.cls }));
  });
  chart.layers.replaceChildren(...nodes);
  setText(chart.yMax, fmtInt(max));
  setText(chart.yMid, max / 2 === Math.round(max / 2) ? fmtInt(max / 2) : String(max / 2));
  setText(chart.xLeft, '−' + g.span / 60 + ' min');
  setText(chart.xMid, '−' + g.span / 120 + ' min');
  drawReadout(chart);
}

function drawReadout(chart) {
  const h = chart.history;
  if (!h) return;
  const spec = chart.spec;
  const columns = spec.series.map((s) => h.cluster[s.key] || []);
  const n = Math.max(0, ...columns.map((c) => c.length));
  const g = chartGeometry(h, n);
  let index;
  if (chart.hover === null) {
    chart.cursor.setAttribute('visibility', 'hidden');
  } else {
    // The interval under the pointer (interval i spans x(i) - step .. x(i)).
    index = n - 1 - Math.floor(((1 - chart.hover) * CHART_W) / g.step);
    if (index < 0 || index >= n) index = undefined;
    if (index !== undefined) {
      const xx = g.x(index) - g.step / 2;
      chart.cursor.setAttribute('x1', xx);
      chart.cursor.setAttribute('x2', xx);
      chart.cursor.setAttribute('visibility', 'visible');
    }
  }
  const parts = [];
  if (index !== undefined) {
    parts.push(el('span', { className: 'dim', text: fmtTime(h.end - (n - 1 - index) * g.interval) + ' ' }));
  }
  spec.series.forEach((s, k) => {
    const values = columns[k];
    let i = index;
    // Without a pointer: the last value, or a count's last complete interval.
    if (i === undefined) i = s.type === 'line' || values.length < 2 ? values.length - 1 : values.length - 2;
    const v = values[i];
    if (k) parts.push(' ');
    parts.push(el('span', { className: 'key ' + s.cls }), s.label + ' ');
    parts.push(el('b', { text: v === null || v === undefined ? '–' : fmtInt(v) }));
  });
  chart.readout.replaceChildren(...parts);
}
