// Text forms for the audit page: times in UTC as the trail records them, counts grouped.

const NUMBER = new Intl.NumberFormat("en");

/** "2026-11-28T09:14:03.120Z" -> "2026-11-28 09:14:03.120" (UTC, to the millisecond). */
export function formatUtc(ts) {
  const moment = new Date(ts);
  if (Number.isNaN(moment.getTime())) return String(ts);
  return moment.toISOString().replace("T", " ").replace("Z", "");
}

/** 12345 -> "12,345". */
export function groupDigits(n) {
  return NUMBER.format(n);
}
