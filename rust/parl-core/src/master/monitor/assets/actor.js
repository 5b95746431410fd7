/*
 * One actor (#/actors/<job_id>): its details, and the last lines of its output (following new
 * lines while the view is scrolled to the bottom).
 */

import { stateBadge } from './actors.js';
import { apiActor } from './api.js';
import { $, el, setAttr, setClass, setText } from './dom.js';
import { clientName, fmtBytes, fmtDateTime, fmtDuration, fmtInt } from './format.js';
import { state } from './state.js';

/** How many of the last lines of its output an actor's view shows. */
export const LOG_LINES = 500;

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

export function resetActorView() {
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

export function renderActor() {
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

export function onLogScroll() {
  const pre = $('actor-log');
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
  pre._follow = atBottom;
  $('log-follow').hidden = atBottom;
}
