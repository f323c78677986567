// The audit page's filters in their three forms: the form's fields, the page's own
// query string (so a reload keeps them: ids, types and times, never a token), and the
// query of GET /v1/audit/events. Times are entered and shown in UTC.

const TYPE = /^[a-z0-9_.]{1,64}\*?$/;
const ID = /^[\x21-\x7e]{1,128}$/; // printable ASCII, as the API takes ids
const LIMITS = ["25", "50", "100", "250"];
export const DEFAULT_LIMIT = "50";

// The page's query-string names (not the API's, whose since/until are RFC 3339).
const KEYS = ["user", "type", "from", "to", "request", "limit"];

/** The empty selection. */
export function noFilters() {
  return { user: "", type: "", from: "", to: "", request: "", limit: DEFAULT_LIMIT };
}

/** Filters from the page's address (unknown or malformed values are dropped). */
export function fromLocation(search) {
  const params = new URLSearchParams(search);
  const filters = noFilters();
  for (const key of KEYS) {
    const value = params.get(key);
    if (value !== null) filters[key] = value.trim();
  }
  if (!LIMITS.includes(filters.limit)) filters.limit = DEFAULT_LIMIT;
  for (const key of ["from", "to"]) {
    if (filters[key] && toInstant(filters[key]) === null) filters[key] = "";
  }
  return filters;
}

/** The page's query string for these filters ("" when none is set). */
export function toSearch(filters) {
  const params = new URLSearchParams();
  for (const key of KEYS) {
    const value = filters[key];
    if (value && !(key === "limit" && value === DEFAULT_LIMIT)) params.set(key, value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

export function readForm(form) {
  const filters = noFilters();
  for (const key of KEYS) filters[key] = String(form.elements[key].value).trim();
  return filters;
}

export function writeForm(form, filters) {
  for (const key of KEYS) form.elements[key].value = filters[key];
}

/** The types typed in the field: separated by spaces or commas. */
function typeList(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

/**
 * A datetime-local value ("2026-11-28T09:14" or with ":03" or ".120") read as UTC:
 * the instant in milliseconds, and the last millisecond the value still covers (so
 * "to 09:14:03" includes 09:14:03.999). A value without seconds is the second :00,
 * not the minute: the fields show seconds (step 1), and the browser drops ":00" from
 * their value, so "to 09:14:00" as shown must not reach 09:14:59. null when it is no
 * such value.
 */
export function toInstant(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(value);
  if (!match) return null;
  const [, y, mo, d, h, mi, s, ms] = match;
  const start = Date.UTC(+y, +mo - 1, +d, +h, +mi, s ? +s : 0, ms ? +ms.padEnd(3, "0") : 0);
  if (Number.isNaN(start)) return null;
  const span = ms ? 0 : 999;
  return { start, end: start + span };
}

/** Problems a person can fix before asking the API: {field key: message}. */
export function validate(filters) {
  const problems = {};
  if (filters.user && !ID.test(filters.user)) {
    problems.user = "A user id is 1 to 128 printable characters without spaces.";
  }
  if (filters.request && !ID.test(filters.request)) {
    problems.request = "A request id is 1 to 128 printable characters without spaces.";
  }
  const bad = typeList(filters.type).find((t) => !TYPE.test(t));
  if (bad !== undefined) {
    problems.type = `"${bad}" is not an event type: use a-z, 0-9, "_" and ".", or end a prefix with "*".`;
  }
  const from = filters.from ? toInstant(filters.from) : null;
  const to = filters.to ? toInstant(filters.to) : null;
  if (filters.from && from === null) problems.from = "Enter a date and time.";
  if (filters.to && to === null) problems.to = "Enter a date and time.";
  if (from && to && to.end < from.start) problems.to = "The end must not be before the start.";
  return problems;
}

/** The selection as GET /v1/audit/events query parameters (without limit or cursor). */
export function apiParams(filters) {
  const params = new URLSearchParams();
  if (filters.user) params.set("user_id", filters.user);
  for (const type of typeList(filters.type)) params.append("type", type);
  if (filters.from) params.set("since", new Date(toInstant(filters.from).start).toISOString());
  if (filters.to) params.set("until", new Date(toInstant(filters.to).end).toISOString());
  if (filters.request) params.set("request_id", filters.request);
  return params;
}

/** The API's field names back to the form's, for a 422 that names one. */
export const FIELD_OF_PARAM = {
  user_id: "user",
  type: "type",
  since: "from",
  until: "to",
  request_id: "request",
  limit: "limit",
};

/** A few words on what is selected, for the position line and announcements. */
export function describe(filters) {
  const parts = [];
  if (filters.user) parts.push(`user ${filters.user}`);
  if (filters.type) parts.push(`type ${typeList(filters.type).join(" or ")}`);
  if (filters.from) parts.push(`from ${filters.from.replace("T", " ")}`);
  if (filters.to) parts.push(`to ${filters.to.replace("T", " ")}`);
  if (filters.request) parts.push(`request ${filters.request}`);
  return parts.join(", ");
}
