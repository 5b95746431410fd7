/*
 * Formatting: numbers, bytes, durations, times and names as the page shows them ('–' for a
 * value the master does not know).
 */

export function fmtInt(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
  const s = String(Math.round(Number(n)));
  // Thin-space grouping: 1 234 567 (calm, and unambiguous in every locale).
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, '\u2009');
}

export function fmtBytes(b) {
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

export function fmtDuration(s) {
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

export function fmtTime(t) {
  if (t === null || t === undefined) return '–';
  const d = new Date(Number(t) * 1000);
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
}

/** Local HH:MM:SS, with the date before it when that is not today. */
export function fmtDateTime(t) {
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

export function fmtLoad(x) {
  if (x === null || x === undefined) return '–';
  return Number(x).toFixed(2);
}

export function clientName(c) {
  return (c.script || '?') + ' @ ' + (c.hostname || '?');
}
