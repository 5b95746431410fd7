/*
 * Actors (#/actors): the table of every actor the master knows, filtered by state and text,
 * sorted by any column.
 */

import { $, el, setAttr, setClass, setText, syncRows } from './dom.js';
import { fmtBytes, fmtDateTime, fmtDuration, fmtInt } from './format.js';
import { actorHref } from './routes.js';
import { state } from './state.js';

export function stateBadge(a) {
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

export function renderActors() {
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
