/*
 * parl_rs web monitor: one page built only on the master's JSON API, version 1
 * (docs/monitor-api.md). Plain JavaScript modules, no library, nothing fetched from anywhere but
 * this origin; the server's Content-Security-Policy allows no inline script or style, so every
 * element is made with createElement and every string from the API goes in as textContent.
 *
 * This module is the page's entry (index.html loads it as a module): the router, and the loops
 * that poll the master and render the view shown. The other modules, one concept each:
 *   format.js (numbers, bytes, times), dom.js (building and updating elements), routes.js (the
 *   page's addresses), state.js (what the master said, what the user chose), api.js (requests,
 *   the unreachable banner, loops), charts.js (charts and sparklines), and one per view:
 *   overview.js, actors.js, actor.js (one actor and its log), events.js.
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

import { LOG_LINES, onLogScroll, renderActor, resetActorView } from './actor.js';
import { renderActors } from './actors.js';
import { POLL_MS, api, apiActor, isOutage, makeLoop, markFailure, markOk, titleBase } from './api.js';
import { $, setAttr, setText } from './dom.js';
import { renderEvents } from './events.js';
import { fmtDateTime, fmtDuration, fmtTime } from './format.js';
import { renderOverview } from './overview.js';
import { actorHref, parseRoute } from './routes.js';
import { state } from './state.js';

const LOG_MS = 1000;
const MAX_EVENTS = 1000;

const loops = {};

// ---------------------------------------------------------------- polling

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

// ---------------------------------------------------------------- start

function start() {
  loops.main = makeLoop(POLL_MS, pollMain);
  loops.actor = makeLoop(LOG_MS, pollActor);
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
