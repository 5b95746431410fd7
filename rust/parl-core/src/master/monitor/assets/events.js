/*
 * Events (#/events): the list of the events this page has read, filtered by kind and text; and
 * the item that shows one event (here and in the overview's recent events).
 */

import { $, el, fill, setText } from './dom.js';
import { fmtDateTime, fmtTime } from './format.js';
import { actorHref } from './routes.js';
import { state } from './state.js';

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

export function eventItem(e, compact) {
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

export function renderEvents() {
  const shown = state.events.filter(eventMatches).reverse();
  const key = state.eventsVersion + '|' + state.eventsKind + '|' + state.eventsFilter;
  setText($('events-shown'), shown.length + ' of ' + state.events.length + ' kept by this page');
  $('events-empty').hidden = shown.length > 0;
  fill($('events-list'), key, () => shown.map((e) => eventItem(e, false)));
}
