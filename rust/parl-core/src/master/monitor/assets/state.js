/*
 * The page's state: what the master last said, and what the user chose (filters, sort).
 */

export const state = {
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
