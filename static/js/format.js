// Words and numbers for people: durations, clock times, byte counts.

const numberFormat = new Intl.NumberFormat();
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  hour12: false,
});

function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

// "30 seconds", "5 minutes", "1 hour", "1 hour 30 minutes", "2 days": for choosing a TTL.
export function formatDuration(seconds) {
  if (seconds < 60) return plural(seconds, "second");
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  const parts = [];
  if (days) parts.push(plural(days, "day"));
  if (hours) parts.push(plural(hours, "hour"));
  if (minutes && !days) parts.push(plural(minutes, "minute"));
  if (rest && !hours && !days) parts.push(plural(rest, "second"));
  return parts.join(" ");
}

// A countdown: "2:05:09", "4:59", "0:07".
export function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return `${h ? `${h}:` : ""}${mm}:${String(s).padStart(2, "0")}`;
}

// The same, read out: "2 hours 5 minutes left", for assistive technology.
export function describeCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  if (total < 60) return `${plural(total, "second")} left`;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  return `${[h && plural(h, "hour"), m && plural(m, "minute")].filter(Boolean).join(" ")} left`;
}

// Local HH:MM.
export function formatClock(ms) {
  return clockFormat.format(new Date(ms));
}

export function formatNumber(n) {
  return numberFormat.format(n);
}
