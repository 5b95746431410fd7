/*
 * The page's addresses: #/ (overview), #/actors, #/actors/<job_id>, #/events.
 */

/** The address of one actor's view. */
export const actorHref = (jobId) => '#/actors/' + encodeURIComponent(jobId);

/** The view the address names (and its job id): the overview for any other address. */
export function parseRoute() {
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
