/*
 * parl_rs web monitor: one page built only on the master's JSON API, version 1
 * (docs/monitor-api.md). Plain JavaScript, no library, nothing fetched from anywhere but this
 * origin; the server's Content-Security-Policy allows no inline script or style, so every
 * element is made with createElement and every string from the API goes in as textContent.
 *
 * Routes: #/ (overview), #/actors, #/actors/<job_id>, #/events.
 * Polls every 2 s, one round at a time (a slow answer delays the next round, never piles up);
 * an actor's page refreshes its log every second.
 *
 * Stable hooks for tests (data-testid, and the attribute that holds the raw value):
 *   header:   master-address, version, uptime, scheme, sessions, updated
 *   banner:   unreachable-banner (hidden while the master answers)
 *   totals:   total-workers, total-clients, total-cpu-used, total-cpu-total, total-gpu-used,
 *             total-gpu-total, total-actors, total-leases, total-waiting, total-calls,
 *             total-tasks-done, total-tasks-failed, total-deaths
 *             (text is the number with thin-space grouping; data-value is the raw number)
 *   overview: worker-row [data-worker-id], client-row [data-client-id],
 *             queue-row [data-request-id], chart-<name> (tasks, calls, actors, slots)
 *   actors:   actor-filter (text box), actor-state (select), actors-shown,
 *             actor-row [data-job-id, data-state], cells td[data-col=<column key>]
 *   actor:    actor-title, actor-state-badge, actor-details, actor-field-<api field name>,
 *             actor-log (<pre>), log-info, log-download (link), actor-missing
 *   events:   event-filter, event-kind, events-shown,
 *             event-row [data-seq, data-kind, data-cause], recent-event (overview)
 *   page:     <body data-view="overview|actors|actor|events">
 */
'use strict';

(function () {
  const POLL_MS = 2000;
  const LOG_MS = 1000;
  const FETCH_TIMEOUT_MS = 10000;
  const MAX_EVENTS = 1000;
  const LOG_LINES = 500;
  const HOUR_S = 3600;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting

  function fmtInt(n) {
    if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
    const s = String(Math.round(Number(n)));
    // Thin-space grouping: 1 234 567 (calm, and unambiguous in every locale).
    return s.replace(/\B(?=(\d{3})+(?!\d))/g, '\u2009');
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '–';
    b = Number(b);
    if (b < 1024) return b + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let v = b / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || Number.isNaN(Number(s))) return '–';
    s = Math.max(0, Math.floor(Number(s)));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (d > 0) return d + ' d ' + h + ' h';
    if (h > 0) return h + ' h ' + m + ' m';
    if (m > 0) return m + ' m ' + sec + ' s';
    return sec + ' s';
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtTime(t) {
    if (t === null || t === undefined) return '–';
    const d = new Date(Number(t) * 1000);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  /** Local HH:MM:SS, with the date before it when that is not today. */
  function fmtDateTime(t) {
    if (t === null || t === undefined) return '–';
    const d = new Date(Number(t) * 1000);
    const now = new Date();
    const sameDay =
      d.getFullYear() === now.getFullYear() &&
      d.getMonth() === now.getMonth() &&
      d.getDate() === now.getDate();
    const date = d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ';
    return (sameDay ? '' : date) + fmtTime(t);
  }

  function fmtLoad(x) {
    if (x === null || x === undefined) return '–';
    return Number(x).toFixed(2);
  }

  // ---------------------------------------------------------------- DOM helpers

  /** An element: el('td', {className: 'num', text: '3', dataset: {col: 'calls'}}, child...). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === 'text') node.textContent = value;
        else if (key === 'className') node.className = value;
        else if (key === 'dataset') Object.assign(node.dataset, value);
        else node.setAttribute(key, value);
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  /** Sets the text of `node` only when it changed (keeps a user's text selection). */
  function setText(node, text) {
    text = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  function setClass(node, className) {
    if (node.className !== className) node.className = className;
  }

  /** Puts `children` into `node` when `key` differs from what it holds now. */
  function fill(node, key, build) {
    if (node._key === key) return;
    node._key = key;
    node.replaceChildren(...build());
  }

  const actorHref = (jobId) => '#/actors/' + encodeURIComponent(jobId);
  const apiActor = (jobId) => '/api/v1/actors/' + encodeURIComponent(jobId);

  // ---------------------------------------------------------------- fetching

  class HttpError extends Error {
    constructor(status, message) {
      super(message || 'HTTP ' + status);
      this.status = status;
    }
  }

  async function api(path, asText) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      let response;
      try {
        response = await fetch(path, {
          credentials: 'same-origin',
          cache: 'no-store',
          signal: abort.signal,
          headers: { Accept: asText ? 'text/plain' : 'application/json' },
        });
      } catch (e) {
        throw new Error(
          abort.signal.aborted
            ? 'no answer within ' + FETCH_TIMEOUT_MS / 1000 + ' s'
            : 'cannot connect (' + (e && e.message ? e.message : e) + ')'
        );
      }
      if (!response.ok) {
        let message = '';
        try {
          const body = await response.text();
          try {
            message = JSON.parse(body).message || body;
          } catch (_) {
            message = body;
          }
        } catch (_) {
          /* the status says enough */
        }
        throw new HttpError(response.status, String(message).slice(0, 300));
      }
      return asText ? await response.text() : await response.json();
    } finally {
      clearTimeout(timer);
    }
  }

  /** True if an error means the master is not serving us (rather than "no such job"). */
  function isOutage(e) {
    return !(e instanceof HttpError) || e.status === 401 || e.status >= 500;
  }

  // ---------------------------------------------------------------- state

  const state = {
    route: { view: 'overview' },
    cluster: null,
    history: null,
    actors: null,
    actor: null, // {jobId, data, error}
    events: [], // oldest first
    eventsNext: 0,
    eventsVersion: 0,
    failingSince: null,
    failures: 0,
    lastError: null,
    lastOk: null,
    actorsSort: { key: null, dir: 1 },
    actorsFilter: '',
    actorsState: 'all',
    eventsFilter: '',
    eventsKind: 'all',
  };

  // ---------------------------------------------------------------- reachability

  function markOk() {
    state.lastOk = Date.now();
    if (state.failingSince !== null) {
      state.failingSince = null;
      state.failures = 0;
      state.lastError = null;
    }
    renderBanner();
  }

  function markFailure(e) {
    if (state.failingSince === null) state.failingSince = Date.now();
    state.failures++;
    state.lastError = e;
    renderBanner();
  }

  function renderBanner() {
    const banner = $('banner');
    const main = $('main');
    if (state.failingSince === null) {
      banner.hidden = true;
      main.classList.remove('stale');
      document.title = titleBase();
      return;
    }
    const since = fmtTime(state.failingSince / 1000);
    const e = state.lastError;
    let head;
    let detail;
    if (e instanceof HttpError && e.status === 401) {
      head = 'Not authorized since ' + since + '.';
      detail =
        ' The master wants its token: open the link that `xparl monitor` prints' +
        ' (the cluster key may have changed).';
    } else {
      head = 'Master unreachable since ' + since + '.';
      detail = ' ' + (e && e.message ? e.message : String(e)) + '.';
    }
    const last = state.lastOk ? ' Showing what it said at ' + fmtTime(state.lastOk / 1000) + '.' : '';
    banner.replaceChildren(
      el('strong', { text: head }),
      el('span', { text: detail + last + ' Retrying every ' + POLL_MS / 1000 + ' s.' })
    );
    banner.hidden = false;
    main.classList.add('stale');
    document.title = '⚠ unreachable · ' + titleBase();
  }

  function titleBase() {
    const c = state.cluster;
    return c ? 'parl_rs · ' + c.master : 'parl_rs monitor';
  }

  // ---------------------------------------------------------------- polling

  const loops = {};

  /** A loop that runs `body` every `ms` ms, one run at a time: the next run is scheduled when
   * one ends (after the number of ms `body` returns, if it does; never again if it returns
   * false). `run()` runs it at once, or right after the run in progress. */
  function makeLoop(name, ms, body) {
    const loop = { timer: null, running: false, again: false };
    loop.run = async function () {
      clearTimeout(loop.timer);
      loop.timer = null;
      if (loop.running) {
        loop.again = true;
        return;
      }
      loop.running = true;
      let result;
      try {
        result = await body();
      } catch (e) {
        // A bug in rendering must not stop the page; it shows in the console.
        console.error(e); // eslint-disable-line no-console
      } finally {
        loop.running = false;
        if (loop.again) {
          loop.again = false;
          loop.timer = setTimeout(loop.run, 0);
        } else if (result !== false) {
          loop.timer = setTimeout(loop.run, typeof result === 'number' ? result : ms);
        }
      }
    };
    loops[name] = loop;
    return loop;
  }

  async function pollMain() {
    if (state.failingSince !== null) {
      // While the master does not answer, one request per round tells when it is back.
      try {
        await api('/api/v1/cluster');
      } catch (e) {
        markFailure(e);
        return;
      }
    }
    const view = state.route.view;
    const jobs = [
      api('/api/v1/cluster').then((c) => {
        if (state.cluster && c.started_at !== state.cluster.started_at) {
          // Another master (restarted): its events are numbered anew; read them all again.
          state.events = [];
          state.eventsNext = 0;
          state.eventsVersion++;
        }
        state.cluster = c;
      }),
      pollEvents(),
    ];
    if (view === 'overview') {
      jobs.push(
        api('/api/v1/history').then((h) => {
          state.history = h;
        })
      );
    }
    if (view === 'actors') {
      jobs.push(
        api('/api/v1/actors').then((a) => {
          state.actors = a.actors || [];
        })
      );
    }
    const results = await Promise.allSettled(jobs);
    const outage = results.find((r) => r.status === 'rejected' && isOutage(r.reason));
    if (outage) markFailure(outage.reason);
    else markOk();
    render();
  }

  async function pollEvents() {
    const data = await api('/api/v1/events?after=' + state.eventsNext);
    const next = Number(data.next) || 0;
    if (next < state.eventsNext) {
      // The master restarted (its sequence began again): start over.
      state.events = [];
      state.eventsNext = 0;
      state.eventsVersion++;
      return;
    }
    const fresh = (data.events || []).filter(
      (e) => !state.events.length || e.seq > state.events[state.events.length - 1].seq
    );
    if (fresh.length) {
      state.events.push(...fresh);
      if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
      state.eventsVersion++;
    }
    state.eventsNext = next;
  }

  async function pollActor() {
    const route = state.route;
    if (route.view !== 'actor') return false; // the loop stops; onRoute starts it again
    if (state.failingSince !== null) return LOG_MS; // the main loop watches for the master
    const jobId = route.jobId;
    const [actor, log] = await Promise.allSettled([
      api(apiActor(jobId)),
      api(apiActor(jobId) + '/log?lines=' + LOG_LINES, true),
    ]);
    if (state.route.view !== 'actor' || state.route.jobId !== jobId) return;
    const outage = [actor, log].find(
      (r) => r.status === 'rejected' && isOutage(r.reason) && !(r === log && r.reason.status === 502)
    );
    if (outage) markFailure(outage.reason);
    else markOk();
    const current = state.actor && state.actor.jobId === jobId ? state.actor : { jobId };
    if (actor.status === 'fulfilled') {
      const data = actor.value && actor.value.actor ? actor.value.actor : actor.value;
      current.data = data;
      current.error = null;
    } else if (!isOutage(actor.reason)) {
      current.error = actor.reason;
    }
    if (log.status === 'fulfilled') {
      current.log = log.value;
      current.logError = null;
    } else {
      current.logError = log.reason;
    }
    state.actor = current;
    renderActor();
    // An unknown job, or a worker that does not answer, is asked about less often.
    return current.error || current.logError ? 5 * LOG_MS : LOG_MS;
  }

  // ---------------------------------------------------------------- routing

  function parseRoute() {
    const hash = location.hash.replace(/^#/, '') || '/';
    if (hash === '/' || hash === '') return { view: 'overview' };
    if (hash === '/actors' || hash === '/actors/') return { view: 'actors' };
    if (hash === '/events') return { view: 'events' };
    const match = hash.match(/^\/actors\/(.+)$/);
    if (match) {
      try {
        return { view: 'actor', jobId: decodeURIComponent(match[1]) };
      } catch (_) {
        return { view: 'actor', jobId: match[1] };
      }
    }
    return { view: 'overview' };
  }

  function onRoute() {
    const previous = state.route;
    state.route = parseRoute();
    const view = state.route.view;
    document.body.dataset.view = view;
    for (const section of document.querySelectorAll('.view')) {
      section.hidden = section.dataset.view !== view;
    }
    for (const link of document.querySelectorAll('.tabs a')) {
      const active = link.dataset.route === view || (view === 'actor' && link.dataset.route === 'actors');
      link.classList.toggle('active', active);
      if (active) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (view === 'actor') {
      if (previous.view !== 'actor' || previous.jobId !== state.route.jobId) {
        state.actor = { jobId: state.route.jobId };
        resetActorView();
      }
      loops.actor.run();
    }
    render();
    loops.main.run();
    window.scrollTo(0, 0);
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    renderHeader();
    const view = state.route.view;
    if (view === 'overview') renderOverview();
    else if (view === 'actors') renderActors();
    else if (view === 'events') renderEvents();
    if (view === 'actor') renderActor();
  }

  function renderHeader() {
    const c = state.cluster;
    if (!c) return;
    setText($('master'), c.master);
    setText($('version'), c.version);
    setText($('uptime'), fmtDuration(c.uptime_s));
    setAttr($('uptime'), 'title', 'since ' + fmtDateTime(c.started_at));
    setText($('scheme'), c.scheme);
    setText($('sessions'), c.sessions);
    if (state.lastOk) setText($('updated'), 'updated ' + fmtTime(state.lastOk / 1000));
    if (state.failingSince === null) document.title = titleBase();
  }

  function setTotal(id, value) {
    const node = $(id);
    setText(node, fmtInt(value));
    setAttr(node, 'data-value', value === null || value === undefined ? '' : value);
  }

  function renderOverview() {
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
    renderCharts();
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

  /**
   * Keeps `tbody` showing one row per item, in order, reusing rows by key (a refresh does not
   * rebuild the table, so a selection or a hovered row stays). `columns` are
   * {key, className, render(td, item)}.
   */
  function syncRows(tbody, items, keyOf, columns, onRow) {
    if (!tbody._rows) tbody._rows = new Map();
    const rows = tbody._rows;
    const seen = new Set();
    let index = 0;
    for (const item of items) {
      const key = String(keyOf(item));
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = el('tr');
        for (const column of columns) {
          row.append(el('td', { className: column.className || null, dataset: { col: column.key } }));
        }
        rows.set(key, row);
      }
      columns.forEach((column, i) => column.render(row.children[i], item));
      if (onRow) onRow(row, item);
      if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
      index++;
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
  }

  const textCol = (key, get, className) => ({
    key,
    className,
    render: (td, item) => setText(td, get(item)),
  });

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

  /** An inline SVG sparkline of one worker series over the last hour. */
  function sparkCell(td, stamp, history, worker, name, maxOf, format) {
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

  function clientName(c) {
    return (c.script || '?') + ' @ ' + (c.hostname || '?');
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

  // ---------------------------------------------------------------- charts

  // The charts and sparklines show the last hour, or less while the master is younger: the
  // shortest of these spans (s) that holds all the history there is.
  const SPANS = [600, 1200, 1800, HOUR_S];

  function historySpan(h) {
    const n = h && h.cluster ? (h.cluster.calls || []).length : 0;
    const covered = n * ((h && h.interval_s) || 10);
    return SPANS.find((span) => covered <= span) || HOUR_S;
  }

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

  function renderCharts() {
    const h = state.history;
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

  // ---------------------------------------------------------------- events

  const EVENT_LABELS = {
    worker_joined: 'worker joined',
    worker_rejoined: 'worker rejoined',
    worker_lost: 'worker lost',
    worker_left: 'worker left',
    client_joined: 'client joined',
    client_left: 'client left',
    client_lost: 'client lost',
    job_died: 'job died',
    request_refused: 'request refused',
    registration_refused: 'registration refused',
  };

  function kindClass(kind) {
    if (kind === 'job_died') return 'bad';
    if (['worker_lost', 'client_lost', 'request_refused', 'registration_refused'].includes(kind)) return 'warn';
    if (kind === 'worker_joined' || kind === 'worker_rejoined' || kind === 'client_joined') return 'good';
    return 'neutral';
  }

  function eventItem(e, compact) {
    const li = el('li', {
      className: 'event k-' + kindClass(e.kind),
      dataset: { testid: compact ? 'recent-event' : 'event-row', seq: e.seq, kind: e.kind, cause: e.cause || '' },
    });
    li.append(el('time', { className: 'when', text: compact ? fmtTime(e.time) : fmtDateTime(e.time), title: fmtDateTime(e.time) }));
    const badges = el('span', { className: 'badges' });
    badges.append(el('span', { className: 'badge ' + kindClass(e.kind), text: EVENT_LABELS[e.kind] || e.kind }));
    if (e.cause) {
      badges.append(
        el('span', {
          className: 'badge cause ' + (e.kind === 'job_died' ? 'bad' : kindClass(e.kind)),
          text: e.cause,
          dataset: { testid: 'event-cause' },
        })
      );
    }
    li.append(badges);
    const body = el('span', { className: 'msg' });
    body.append(el('span', { text: e.message || '' }));
    if (!compact) {
      const refs = [];
      if (e.job_id) refs.push(el('a', { href: actorHref(e.job_id), className: 'mono', text: e.job_id }));
      if (e.worker_id) refs.push(el('span', { className: 'mono dim', text: e.worker_id }));
      if (e.client_id) refs.push(el('span', { className: 'mono dim', text: e.client_id }));
      if (refs.length) {
        const ids = el('span', { className: 'ids' });
        refs.forEach((r) => ids.append(r));
        body.append(ids);
      }
    } else if (e.job_id) {
      body.append(' ', el('a', { href: actorHref(e.job_id), className: 'mono', text: e.job_id }));
    }
    li.append(body);
    return li;
  }

  function renderRecentEvents() {
    const recent = state.events.slice(-8).reverse();
    $('recent-empty').hidden = recent.length > 0;
    fill($('recent-events'), 'v' + state.eventsVersion, () => recent.map((e) => eventItem(e, true)));
  }

  function eventMatches(e) {
    const kind = state.eventsKind;
    if (kind === 'worker' && !e.kind.startsWith('worker_')) return false;
    if (kind === 'client' && !e.kind.startsWith('client_')) return false;
    if (kind === 'job_died' && e.kind !== kind) return false;
    if (kind === 'refused' && !e.kind.endsWith('_refused')) return false;
    const q = state.eventsFilter.trim().toLowerCase();
    if (!q) return true;
    return [e.kind, e.cause, e.job_id, e.worker_id, e.client_id, e.message]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function renderEvents() {
    const shown = state.events.filter(eventMatches).reverse();
    const key = state.eventsVersion + '|' + state.eventsKind + '|' + state.eventsFilter;
    setText($('events-shown'), shown.length + ' of ' + state.events.length + ' kept by this page');
    $('events-empty').hidden = shown.length > 0;
    fill($('events-list'), key, () => shown.map((e) => eventItem(e, false)));
  }

  // ---------------------------------------------------------------- actors

  function stateBadge(a) {
    if (a.state === 'ended') {
      const cause = a.cause || 'ended';
      const cls = cause === 'released' ? 'neutral' : cause === 'client_left' ? 'neutral' : 'bad';
      return { text: 'ended · ' + cause, cls };
    }
    if (a.state === 'starting') return { text: 'starting', cls: 'warn' };
    if (a.state === 'running') return { text: 'running', cls: 'good' };
    return { text: String(a.state), cls: 'neutral' };
  }

  const ACTOR_COLUMNS = [
    { key: 'job_id', label: 'job id', sort: (a) => a.job_id, className: 'mono', render: renderJobCell },
    { key: 'class_name', label: 'class', sort: (a) => a.class_name, className: 'strong clip', render: renderClassCell },
    { key: 'kind', label: 'kind', sort: (a) => a.kind, className: 'dim', render: (td, a) => setText(td, a.kind) },
    {
      key: 'state',
      label: 'state',
      sort: (a) => ({ starting: 0, running: 1, ended: 2 })[a.state] ?? 3,
      render: (td, a) => {
        const b = stateBadge(a);
        if (!td._badge) {
          td._badge = el('span');
          td.replaceChildren(td._badge);
        }
        setText(td._badge, b.text);
        setClass(td._badge, 'badge ' + b.cls);
        setAttr(td, 'title', a.reason || null);
      },
    },
    {
      key: 'host',
      label: 'worker / host',
      sort: (a) => (a.hostname || '') + ' ' + (a.worker_id || ''),
      className: 'clip',
      render: (td, a) => {
        if (!td._host) {
          td._host = el('span');
          td._worker = el('span', { className: 'mono dim' });
          td.replaceChildren(td._host, ' ', td._worker);
        }
        setText(td._host, a.hostname);
        setText(td._worker, a.worker_id);
        setAttr(td, 'title', (a.hostname || '') + ' (' + (a.worker_id || '') + '), pid ' + a.pid);
      },
    },
    { key: 'pid', label: 'pid', sort: (a) => a.pid, className: 'num dim', render: (td, a) => setText(td, a.pid ?? '–') },
    {
      key: 'age_s',
      label: 'age',
      sort: (a) => a.age_s,
      numeric: true,
      className: 'num',
      render: (td, a) => {
        setText(td, fmtDuration(a.age_s));
        setAttr(td, 'title', 'started ' + fmtDateTime(a.started_at) + (a.ended_at ? ', ended ' + fmtDateTime(a.ended_at) : ''));
      },
    },
    { key: 'calls', label: 'calls', sort: (a) => a.calls, numeric: true, className: 'num', render: (td, a) => setText(td, fmtInt(a.calls)) },
    {
      key: 'failures',
      label: 'failures',
      sort: (a) => a.failures,
      numeric: true,
      className: 'num',
      render: (td, a) => {
        setText(td, fmtInt(a.failures));
        td.classList.toggle('bad', a.failures > 0);
      },
    },
    {
      key: 'memory_bytes',
      label: 'memory',
      sort: (a) => a.memory_bytes,
      numeric: true,
      className: 'num',
      render: (td, a) => setText(td, fmtBytes(a.memory_bytes)),
    },
    {
      key: 'last_error',
      label: 'last error',
      sort: (a) => a.last_error,
      className: 'error clip',
      render: (td, a) => {
        setText(td, a.last_error || '');
        setAttr(td, 'title', a.last_error || null);
      },
    },
  ];

  function renderJobCell(td, a) {
    if (!td._link) {
      td._link = el('a');
      td.replaceChildren(td._link);
    }
    setAttr(td._link, 'href', actorHref(a.job_id));
    setText(td._link, a.job_id);
  }

  function renderClassCell(td, a) {
    setText(td, a.class_name);
    setAttr(td, 'title', a.class_name);
  }

  function buildActorsHead() {
    const head = $('actors-head');
    if (head.children.length) return;
    for (const column of ACTOR_COLUMNS) {
      const th = el('th', {
        className: (column.className || '').includes('num') ? 'num' : null,
        dataset: { sort: column.key, testid: 'sort-' + column.key },
        scope: 'col',
        tabindex: '0',
        title: 'Sort by ' + column.label,
      });
      th.append(el('span', { text: column.label }), el('span', { className: 'arrow' }));
      head.append(th);
    }
    const onSort = (th) => {
      const key = th.dataset.sort;
      const column = ACTOR_COLUMNS.find((c) => c.key === key);
      const sort = state.actorsSort;
      if (sort.key === key) sort.dir = -sort.dir;
      else {
        sort.key = key;
        sort.dir = column.numeric ? -1 : 1;
      }
      renderActors();
    };
    head.addEventListener('click', (ev) => {
      const th = ev.target.closest('th');
      if (th) onSort(th);
    });
    head.addEventListener('keydown', (ev) => {
      const th = ev.target.closest('th');
      if (th && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        onSort(th);
      }
    });
  }

  function actorMatches(a) {
    if (state.actorsState !== 'all' && a.state !== state.actorsState) return false;
    const q = state.actorsFilter.trim().toLowerCase();
    if (!q) return true;
    return [a.class_name, a.worker_id, a.hostname, a.job_id, a.last_error, a.cause, a.reason, a.client_id, a.kind]
      .some((v) => v && String(v).toLowerCase().includes(q));
  }

  function compareValues(x, y) {
    const xNull = x === null || x === undefined || x === '';
    const yNull = y === null || y === undefined || y === '';
    if (xNull || yNull) return xNull === yNull ? 0 : xNull ? 1 : -1;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    return String(x).localeCompare(String(y), undefined, { numeric: true, sensitivity: 'base' });
  }

  function renderActors() {
    buildActorsHead();
    const sort = state.actorsSort;
    for (const th of $('actors-head').children) {
      const active = th.dataset.sort === sort.key;
      setText(th.lastChild, active ? (sort.dir > 0 ? ' ▲' : ' ▼') : '');
      setAttr(th, 'aria-sort', active ? (sort.dir > 0 ? 'ascending' : 'descending') : null);
    }
    const actors = state.actors;
    if (!actors) return;
    let shown = actors.map((a, i) => [a, i]).filter(([a]) => actorMatches(a));
    if (sort.key) {
      const column = ACTOR_COLUMNS.find((c) => c.key === sort.key);
      shown.sort(([a, i], [b, j]) => {
        const va = column.sort(a);
        const vb = column.sort(b);
        const nulls = (va === null || va === undefined || va === '') - (vb === null || vb === undefined || vb === '');
        if (nulls) return nulls; // empty values last, whichever the direction
        return sort.dir * compareValues(va, vb) || i - j;
      });
    }
    shown = shown.map(([a]) => a);
    const running = actors.filter((a) => a.state !== 'ended').length;
    setText(
      $('actors-shown'),
      shown.length + ' shown of ' + actors.length + ' (' + running + ' live, ' + (actors.length - running) + ' ended)'
    );
    $('actors-empty').hidden = shown.length > 0;
    syncRows($('actors-table').tBodies[0], shown, (a) => a.job_id, ACTOR_COLUMNS, (row, a) => {
      row.dataset.testid = 'actor-row';
      row.dataset.jobId = a.job_id;
      row.dataset.state = a.state;
      row.classList.toggle('ended', a.state === 'ended');
    });
  }

  // ---------------------------------------------------------------- one actor

  const DETAIL_FIELDS = [
    ['job_id', 'job id'],
    ['class_name', 'class'],
    ['kind', 'kind'],
    ['state', 'state'],
    ['cause', 'cause'],
    ['reason', 'reason'],
    ['client_id', 'client'],
    ['worker_id', 'worker'],
    ['hostname', 'host'],
    ['pid', 'pid'],
    ['gpus', 'GPUs'],
    ['started_at', 'started'],
    ['age_s', 'age'],
    ['ended_at', 'ended'],
    ['calls', 'calls'],
    ['failures', 'failures'],
    ['memory_bytes', 'memory'],
    ['last_error', 'last error'],
  ];

  function detailText(key, value, a) {
    if (value === null || value === undefined) return '–';
    switch (key) {
      case 'started_at':
      case 'ended_at':
        return fmtDateTime(value);
      case 'age_s':
        return fmtDuration(value);
      case 'memory_bytes':
        return fmtBytes(value);
      case 'calls':
      case 'failures':
        return fmtInt(value);
      case 'gpus':
        return Array.isArray(value) && value.length ? value.join(', ') : 'none';
      case 'client_id': {
        const k = state.cluster && (state.cluster.clients || []).find((c) => c.client_id === value);
        return k ? value + ' (' + clientName(k) + ', pid ' + k.pid + ')' : value;
      }
      default:
        if (typeof value === 'object') return JSON.stringify(value);
        void a;
        return String(value);
    }
  }

  function resetActorView() {
    const route = state.route;
    setText($('actor-title'), route.jobId);
    setText($('actor-state-badge'), '');
    $('actor-details').replaceChildren();
    $('actor-details')._fields = null;
    const pre = $('actor-log');
    pre.replaceChildren();
    pre._text = null;
    pre._follow = true;
    $('log-follow').hidden = true;
    setText($('log-info'), '');
    $('actor-missing').hidden = true;
    $('log-download').href = apiActor(route.jobId) + '/log?download=1';
    $('log-download').setAttribute('download', route.jobId + '.log');
  }

  function renderActor() {
    const current = state.actor;
    if (!current || state.route.view !== 'actor') return;
    const a = current.data;
    const missing = $('actor-missing');
    if (current.error) {
      missing.hidden = false;
      setText(
        missing,
        current.error.status === 404
          ? 'The master knows no job ' + current.jobId + ' (it keeps the 200 most recent ended jobs).'
          : 'Cannot read this job: ' + current.error.message
      );
    } else {
      missing.hidden = true;
    }
    if (a) {
      setText($('actor-title'), (a.class_name || '?') + ' ' + a.job_id);
      const b = stateBadge(a);
      setText($('actor-state-badge'), b.text);
      setClass($('actor-state-badge'), 'badge ' + b.cls);
      renderDetails(a);
    }
    renderLog(current);
  }

  function renderDetails(a) {
    const dl = $('actor-details');
    const known = new Set(DETAIL_FIELDS.map(([k]) => k));
    const fields = DETAIL_FIELDS.slice();
    for (const key of Object.keys(a)) {
      if (!known.has(key) && key !== 'api_version') fields.push([key, key.replace(/_/g, ' ')]);
    }
    const signature = fields.map(([k]) => k).join(',');
    if (dl._fields !== signature) {
      dl._fields = signature;
      dl._dd = {};
      const nodes = [];
      for (const [key, label] of fields) {
        const dd = el('dd', { dataset: { testid: 'actor-field-' + key, field: key } });
        dl._dd[key] = dd;
        nodes.push(el('div', { className: 'row' }, el('dt', { text: label }), dd));
      }
      dl.replaceChildren(...nodes);
    }
    for (const [key] of fields) {
      const dd = dl._dd[key];
      const value = a[key];
      setText(dd, detailText(key, value, a));
      setAttr(dd, 'data-value', value === null || value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : value);
      dd.classList.toggle('error', (key === 'last_error' || key === 'reason') && !!value);
      dd.classList.toggle('mono', ['job_id', 'client_id', 'worker_id', 'pid'].includes(key));
    }
  }

  const ERROR_LINE = /^(Traceback \(most recent call last\)|[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b)/;

  function renderLog(current) {
    const pre = $('actor-log');
    const info = $('log-info');
    if (current.logError) {
      const e = current.logError;
      const text =
        e.status === 502
          ? "The worker of this job cannot be reached: the log is on it. " + e.message
          : e.status === 404
            ? 'The master has no log for this job. ' + e.message
            : 'Cannot read the log: ' + e.message;
      setText(info, text);
      info.classList.add('warn');
      return;
    }
    info.classList.remove('warn');
    const text = current.log;
    if (text === undefined || text === null) return;
    const lines = text.length ? text.replace(/\n$/, '').split('\n') : [];
    setText(info, lines.length >= LOG_LINES ? 'the last ' + LOG_LINES + ' lines' : lines.length + ' lines');
    if (pre._text === text) return;
    const atBottom = pre._follow !== false;
    pre._text = text;
    const frag = document.createDocumentFragment();
    let plain = [];
    const flush = () => {
      if (plain.length) frag.append(document.createTextNode(plain.join('\n') + '\n'));
      plain = [];
    };
    for (const line of lines) {
      if (ERROR_LINE.test(line)) {
        flush();
        frag.append(el('span', { className: 'err', text: line }), '\n');
      } else {
        plain.push(line);
      }
    }
    flush();
    if (!lines.length) frag.append(el('span', { className: 'dim', text: '(no output yet)' }));
    pre.replaceChildren(frag);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function onLogScroll() {
    const pre = $('actor-log');
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
    pre._follow = atBottom;
    $('log-follow').hidden = atBottom;
  }

  // ---------------------------------------------------------------- start

  function start() {
    makeLoop('main', POLL_MS, pollMain);
    makeLoop('actor', LOG_MS, pollActor);
    $('actor-filter').addEventListener('input', (ev) => {
      state.actorsFilter = ev.target.value;
      renderActors();
    });
    $('actor-state').addEventListener('change', (ev) => {
      state.actorsState = ev.target.value;
      renderActors();
    });
    $('event-filter').addEventListener('input', (ev) => {
      state.eventsFilter = ev.target.value;
      renderEvents();
    });
    $('event-kind').addEventListener('change', (ev) => {
      state.eventsKind = ev.target.value;
      renderEvents();
    });
    $('actors-table').tBodies[0].addEventListener('click', (ev) => {
      // A click anywhere on a row opens the actor (not a drag that selected text).
      if (ev.target.closest('a')) return;
      const row = ev.target.closest('tr');
      if (!row || !row.dataset.jobId) return;
      const selection = window.getSelection();
      if (selection && String(selection).length) return;
      location.hash = actorHref(row.dataset.jobId);
    });
    $('actor-log').addEventListener('scroll', onLogScroll, { passive: true });
    $('log-follow').addEventListener('click', () => {
      const pre = $('actor-log');
      pre.scrollTop = pre.scrollHeight;
      onLogScroll();
    });
    window.addEventListener('hashchange', onRoute);
    onRoute();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
