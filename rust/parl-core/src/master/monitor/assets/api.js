/*
 * Talking to the master: the JSON API's requests (each with a timeout), whether a failure means
 * the master is not serving us, the banner that says so, and the loops that poll.
 */

import { $, el } from './dom.js';
import { fmtTime } from './format.js';
import { state } from './state.js';

/** How often the page asks the master (and retries while it does not answer), in ms. */
export const POLL_MS = 2000;
const FETCH_TIMEOUT_MS = 10000;

export const apiActor = (jobId) => '/api/v1/actors/' + encodeURIComponent(jobId);

class HttpError extends Error {
  constructor(status, message) {
    super(message || 'HTTP ' + status);
    this.status = status;
  }
}

export async function api(path, asText) {
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
export function isOutage(e) {
  return !(e instanceof HttpError) || e.status === 401 || e.status >= 500;
}

// ---------------------------------------------------------------- reachability

export function markOk() {
  state.lastOk = Date.now();
  if (state.failingSince !== null) {
    state.failingSince = null;
    state.failures = 0;
    state.lastError = null;
  }
  renderBanner();
}

export function markFailure(e) {
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

export function titleBase() {
  const c = state.cluster;
  return c ? 'parl_rs · ' + c.master : 'parl_rs monitor';
}

// ---------------------------------------------------------------- polling

/** A loop that runs `body` every `ms` ms, one run at a time: the next run is scheduled when
 * one ends (after the number of ms `body` returns, if it does; never again if it returns
 * false). `run()` runs it at once, or right after the run in progress. */
export function makeLoop(ms, body) {
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
  return loop;
}
