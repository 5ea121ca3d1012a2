// Times in the viewer's own time zone. The server writes each one in UTC, with seconds:
// <time datetime="2026-12-06T08:16:53+00:00" title="2026-12-06 08:16:53 UTC">…</time>.
// This rewrites the text in the browser's zone and leaves the UTC title for the hover.
// Loaded from our own origin (the CSP runs no inline script); without it, UTC shows.
(() => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const thisYear = new Date().getFullYear();
  const clock = { hour: "numeric", minute: "2-digit", second: "2-digit" };
  const withYear = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", ...clock,
  });
  const sameYear = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", ...clock });
  const timeOnly = new Intl.DateTimeFormat(undefined, clock);
  const today = new Date().toDateString();

  function localise(root) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      // An expiry today needs no date: the column reads as "until when".
      const short = element.classList.contains("expires") && moment.toDateString() === today;
      const format = short ? timeOnly : moment.getFullYear() === thisYear ? sameYear : withYear;
      element.textContent = format.format(moment);
      element.dataset.localised = zone;
    }
    const note = root.querySelector("#grants-zone");
    if (note) note.textContent = `Times in your time zone (${zone}); hover a time for UTC.`;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => localise(document));
  } else {
    localise(document);
  }
})();
