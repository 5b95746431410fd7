/*
 * The overview (#/): the totals, the charts, the workers, the clients, the queue for slots, and
 * the recent events.
 */

import { historySpan, renderCharts, sparkCell } from './charts.js';
import { $, el, fill, setAttr, setText, syncRows, textCol } from './dom.js';
import { eventItem } from './events.js';
import { clientName, fmtBytes, fmtDateTime, fmtDuration, fmtInt, fmtLoad } from './format.js';
import { state } from './state.js';

function setTotal(id, value) {
  const node = $(id);
  setText(node, fmtInt(value));
  setAttr(node, 'data-value', value === null || value === undefined ? '' : value);
}

export function renderOverview() {
  const c = state.cluster;
  if (c) {
    const t = c.totals || {};
    for (const [id, key] of [
      ['total-workers', 'workers'],
      ['total-clients', 'clients'],
      ['total-cpu-used', 'cpu_used'],
      ['total-cpu-total', 'cpu_total'],
      ['total-gpu-used', 'gpu_used'],
      ['total-gpu-total', 'gpu_total'],
      ['total-actors', 'actors'],
      ['total-leases', 'leases'],
      ['total-waiting', 'waiting'],
      ['total-calls', 'calls'],
      ['total-tasks-done', 'tasks_done'],
      ['total-tasks-failed', 'tasks_failed'],
      ['total-deaths', 'deaths'],
    ]) {
      setTotal(id, t[key]);
    }
    $('cpu-fill').style.width = pct(t.cpu_used, t.cpu_total) + '%';
    $('gpu-fill').style.width = pct(t.gpu_used, t.gpu_total) + '%';
    $('total-tasks-failed').classList.toggle('bad', t.tasks_failed > 0);
    $('total-deaths').classList.toggle('bad', t.deaths > 0);
    $('total-waiting').classList.toggle('warn', t.waiting > 0);
    const noGpu = !c.gpu_cluster && !t.gpu_total;
    document.body.classList.toggle('no-gpu', noGpu);
    renderWorkers(c);
    renderClients(c);
    renderQueue(c);
  }
  renderCharts(state.history);
  renderRecentEvents();
}

function pct(used, total) {
  if (!total) return 0;
  return Math.max(0, Math.min(100, (100 * used) / total));
}

/** A small "used / total" bar in a table cell. */
function slotBar(td, used, total, kind) {
  if (!td._bar) {
    td._bar = el('div', { className: 'fill' });
    td._label = el('span', { className: 'bar-label' });
    td.replaceChildren(el('div', { className: 'bar ' + kind }, td._bar), td._label);
  }
  const known = used !== null && used !== undefined && total;
  td._bar.style.width = (known ? pct(used, total) : 0) + '%';
  td._bar.classList.toggle('full', known && used >= total);
  if (kind === 'mem') {
    setText(td._label, used === null || used === undefined ? '– / ' + fmtBytes(total) : fmtBytes(used) + ' / ' + fmtBytes(total));
  } else {
    setText(td._label, total ? fmtInt(used) + ' / ' + fmtInt(total) : '–');
  }
  setAttr(td, 'title', known ? Math.round(pct(used, total)) + '% used' : null);
}

function renderWorkers(c) {
  const workers = c.workers || [];
  setText($('workers-count'), workers.length ? String(workers.length) : '');
  $('workers-empty').hidden = workers.length > 0;
  const history = state.history;
  const stamp = history ? history.end : null;
  if (history) {
    const span = historySpan(history) / 60 + ' min';
    for (const th of document.querySelectorAll('#workers-table th.trend')) {
      setText(th, th.dataset.what + ', ' + span);
    }
  }
  const columns = [
    {
      key: 'host',
      className: 'strong clip',
      render: (td, w) => {
        setText(td, w.hostname);
        setAttr(td, 'title', w.hostname);
      },
    },
    textCol('worker', (w) => w.worker_id, 'mono dim'),
    textCol('pid', (w) => w.pid, 'num dim'),
    { key: 'cpu', className: 'barcell', render: (td, w) => slotBar(td, w.cpu_used, w.cpu_total, 'cpu') },
    {
      key: 'gpu',
      className: 'barcell gpu-col',
      render: (td, w) => slotBar(td, w.gpu_used, w.gpu_total, 'gpu'),
    },
    textCol('actors', (w) => fmtInt(w.actors), 'num'),
    textCol('leases', (w) => fmtInt(w.leases), 'num'),
    {
      key: 'memory',
      className: 'barcell wide',
      render: (td, w) => slotBar(td, w.memory_used, w.memory_total, 'mem'),
    },
    textCol('load', (w) => fmtLoad(w.load1), 'num'),
    {
      key: 'spark-cpu',
      className: 'spark',
      render: (td, w) =>
        sparkCell(td, stamp, history, w, 'cpu_used', () => w.cpu_total || 1, (v) => fmtInt(v) + ' slots'),
    },
    {
      key: 'spark-mem',
      className: 'spark',
      render: (td, w) =>
        sparkCell(td, stamp, history, w, 'memory_used', () => w.memory_total || 0, fmtBytes),
    },
    {
      key: 'spark-load',
      className: 'spark',
      render: (td, w) => sparkCell(td, stamp, history, w, 'load1', (values) => Math.max(w.cpu_total || 1, ...values), fmtLoad),
    },
    {
      key: 'joined',
      className: 'num dim',
      render: (td, w) => {
        setText(td, w.joined_at ? fmtDuration(c.now - w.joined_at) + ' ago' : '–');
        setAttr(td, 'title', w.joined_at ? fmtDateTime(w.joined_at) : null);
      },
    },
  ];
  syncRows($('workers-table').tBodies[0], workers, (w) => w.worker_id, columns, (row, w) => {
    row.dataset.testid = 'worker-row';
    row.dataset.workerId = w.worker_id;
  });
}

function renderClients(c) {
  const clients = c.clients || [];
  setText($('clients-count'), clients.length ? String(clients.length) : '');
  $('clients-empty').hidden = clients.length > 0;
  const columns = [
    {
      key: 'script',
      className: 'strong clip',
      render: (td, k) => {
        setText(td, k.script);
        setAttr(td, 'title', k.script);
      },
    },
    textCol('host', (k) => k.hostname, 'clip'),
    textCol('pid', (k) => k.pid, 'num dim'),
    textCol('client', (k) => k.client_id, 'mono dim'),
    textCol('uptime', (k) => fmtDuration(k.uptime_s), 'num'),
    textCol('actors', (k) => fmtInt(k.actors), 'num'),
    textCol('leases', (k) => fmtInt(k.leases), 'num'),
    textCol('cpus', (k) => fmtInt(k.cpus), 'num'),
    textCol('gpus', (k) => fmtInt(k.gpus), 'num gpu-col'),
    textCol('calls', (k) => fmtInt(k.calls), 'num'),
    textCol('tasks-done', (k) => fmtInt(k.tasks_done), 'num'),
    {
      key: 'tasks-failed',
      className: 'num',
      render: (td, k) => {
        setText(td, fmtInt(k.tasks_failed));
        td.classList.toggle('bad', k.tasks_failed > 0);
      },
    },
    textCol('tasks-queued', (k) => fmtInt(k.tasks_queued), 'num'),
  ];
  syncRows($('clients-table').tBodies[0], clients, (k) => k.client_id, columns, (row, k) => {
    row.dataset.testid = 'client-row';
    row.dataset.clientId = k.client_id;
  });
}

function renderQueue(c) {
  const queue = c.queue || [];
  const clients = new Map((c.clients || []).map((k) => [k.client_id, k]));
  setText($('queue-count'), queue.length ? String(queue.length) : '');
  $('queue-empty').hidden = queue.length > 0;
  $('queue-table').hidden = queue.length === 0;
  const columns = [
    textCol('class', (q) => q.class_name, 'strong clip'),
    textCol(
      'resource',
      (q) => q.resource + (q.on_worker ? ' on ' + q.on_worker : '') + (q.n_cpu > 1 ? ' ×' + q.n_cpu : ''),
      'mono'
    ),
    {
      key: 'client',
      className: 'clip',
      render: (td, q) => {
        const k = clients.get(q.client_id);
        setText(td, k ? clientName(k) : q.client_id);
        setAttr(td, 'title', q.client_id);
      },
    },
    {
      key: 'waited',
      className: 'num',
      render: (td, q) => {
        setText(td, fmtDuration(q.waited_s));
        td.classList.toggle('warn', q.waited_s >= 60);
        setAttr(td, 'title', 'since ' + fmtDateTime(q.since));
      },
    },
  ];
  syncRows(
    $('queue-table').tBodies[0],
    queue,
    (q) => q.client_id + '/' + q.request_id,
    columns,
    (row, q) => {
      row.dataset.testid = 'queue-row';
      row.dataset.requestId = q.request_id;
    }
  );
  // Who holds the slots the queue waits for.
  const holders = (c.clients || []).filter((k) => k.cpus > 0 || k.gpus > 0);
  const key = JSON.stringify(holders.map((k) => [k.client_id, k.script, k.hostname, k.cpus, k.gpus]));
  fill($('holders'), key, () => {
    if (!holders.length) return [el('span', { className: 'dim', text: 'No client holds a slot.' })];
    const parts = [el('span', { className: 'dim', text: 'Slots held by ' })];
    holders
      .slice()
      .sort((a, b) => b.cpus + b.gpus - (a.cpus + a.gpus))
      .forEach((k, i) => {
        if (i) parts.push(el('span', { className: 'dim', text: ' · ' }));
        parts.push(el('span', { className: 'strong', text: clientName(k) }));
        const held = [k.cpus + ' CPU'];
        if (k.gpus) held.push(k.gpus + ' GPU');
        parts.push(' ' + held.join(', '));
      });
    return parts;
  });
}

function renderRecentEvents() {
  const recent = state.events.slice(-8).reverse();
  $('recent-empty').hidden = recent.length > 0;
  fill($('recent-events'), 'v' + state.eventsVersion, () => recent.map((e) => eventItem(e, true)));
}
