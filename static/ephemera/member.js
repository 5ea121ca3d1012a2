// The member's "Get a token" (templates/tenants/home.html). Each button asks the API's session
// path, POST /api/v1/tokens with the session cookie and Django's CSRF token, for the profile it
// names; the server makes the member the end user. The answer is shown once: nothing keeps the
// token, and reloading the page forgets it. Errors show in the API's own terms, with a wait on
// the button when the answer says when to try again. Loaded from our origin (the CSP runs no
// inline script); text from the server is only ever set as text, never as markup.
(() => {
  const section = document.getElementById("profiles");
  if (!section) return;
  const tokensUrl = section.dataset.tokensUrl;
  const csrfInput = section.querySelector("input[name=csrfmiddlewaretoken]");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const moment = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "numeric", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  const TITLES = {
    invalid_request: "The request was refused as malformed",
    unauthenticated: "You are signed out",
    forbidden: "Not allowed",
    profile_not_found: "This profile is no longer offered",
    quota_exceeded: "A quota is used up",
    internal_error: "Something went wrong on our side",
    upstream_error: "Google refused the token",
    upstream_unavailable: "Google is briefly unavailable",
    quota_backend_unavailable: "Quotas cannot be checked right now",
    upstream_timeout: "Google did not answer in time",
  };

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function fromNow(date) {
    const seconds = Math.round((date.getTime() - Date.now()) / 1000);
    if (Math.abs(seconds) < 90) return relative.format(seconds, "second");
    const minutes = Math.round(seconds / 60);
    if (Math.abs(minutes) < 90) return relative.format(minutes, "minute");
    return relative.format(Math.round(minutes / 60), "hour");
  }

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return el("span", {}, String(iso));
    return el(
      "span", {},
      el("time", { datetime: iso, title: `${date.toISOString()} (UTC)`, "data-localised": zone },
        moment.format(date)),
      ` (${fromNow(date)})`,
    );
  }

  function lockText(answer) {
    const fields = Array.isArray(answer.locked_fields) ? answer.locked_fields : [];
    const list = el("ul", { class: "locked-fields" },
      ...fields.map((name) => el("li", {}, el("code", {}, name))));
    if (answer.lock === "whole_setup") {
      return [
        el("strong", {}, "The whole setup"), ": the token's setup replaces the client's.",
        el("details", { class: "locked-all" },
          el("summary", {}, `All ${fields.length} setup fields are locked`), list),
      ];
    }
    // In the words of templates/policies/_token_lock.html, which the cards use.
    const fieldsLock = [el("strong", {}, "Fields"), ": the token's values win for these; the rest is the client's."];
    if (!fields.length) return [...fieldsLock, el("span", { class: "fine" }, "No field is locked.")];
    return [...fieldsLock, list];
  }

  function showToken(box, answer) {
    const slug = box.id.replace(/^token-/, "");
    const valueId = `token-value-${slug}`;
    const uses = answer.uses === 0
      ? "any number of sessions"
      : `${answer.uses} session${answer.uses === 1 ? "" : "s"}`;
    box.replaceChildren(
      el("p", { class: "token-heading" },
        el("strong", {}, "Your token"), " — shown once: copy it now, Ephemera keeps no copy."),
      el("div", { class: "token-value" },
        el("code", { id: valueId }, answer.token),
        el("button", { type: "button", "data-copy-target": valueId }, "Copy")),
      el("dl", { class: "token-facts" },
        el("dt", {}, "Expires"), el("dd", { class: "token-expires" }, when(answer.expire_time)),
        el("dt", {}, "New sessions until"),
        el("dd", { class: "token-new-sessions" }, when(answer.new_session_expire_time)),
        el("dt", {}, "Uses"), el("dd", { class: "token-uses" }, `starts ${uses}`),
        el("dt", {}, "Locked"), el("dd", { class: "token-lock" }, ...lockText(answer))),
      el("p", { class: "fine token-fine" },
        `Times in your time zone (${zone}); hover one for UTC. Model `,
        el("code", {}, answer.model || ""),
        answer.grant_id ? "; recorded as grant " : null,
        answer.grant_id ? el("code", {}, answer.grant_id) : null,
        ".",
        answer.sandbox ? " A sandbox token: it will not open a real Live session." : null),
    );
    box.className = "token-result issued";
    box.hidden = false;
  }

  function showError(box, status, body, retryAfter) {
    const error = (body && typeof body.error === "object" && body.error) || {};
    const code = typeof error.code === "string" ? error.code : "";
    const message = typeof error.message === "string" ? error.message
      : `Ephemera answered HTTP ${status} without an explanation.`;
    const title = TITLES[code] || (status ? `Refused (HTTP ${status})` : "No answer");
    const lines = [
      el("p", { class: "token-error-title" }, el("strong", {}, title),
        code ? " " : null, code ? el("code", {}, code) : null),
      el("p", { class: "token-error-message" }, message),
    ];
    if (typeof error.limit === "string" && !message.includes(error.limit)) {
      lines.push(el("p", { class: "token-error-limit" }, "Limit: ", error.limit));
    }
    if (retryAfter) {
      lines.push(el("p", { class: "token-error-retry" }, `Try again in ${retryAfter} s.`));
    }
    if (code === "unauthenticated" || status === 401) {
      lines.push(el("p", {}, el("a", { href: section.dataset.signInUrl }, "Sign in again")));
    }
    box.replaceChildren(el("div", { class: "token-error", role: "alert" }, ...lines));
    box.className = "token-result refused";
    box.hidden = false;
  }

  // The wait the answer named, counted down on the button and in the refusal's own words.
  function waitOut(button, box, seconds) {
    let left = seconds;
    const note = box.querySelector(".token-error-retry");
    const tick = () => {
      if (left <= 0) {
        button.disabled = false;
        button.textContent = "Get a token";
        if (note) note.textContent = "You may try again now.";
        return;
      }
      button.textContent = `Try again in ${left} s`;
      if (note) note.textContent = `Try again in ${left} s.`;
      left -= 1;
      window.setTimeout(tick, 1000);
    };
    button.disabled = true;
    tick();
  }

  async function getToken(button) {
    const slug = button.dataset.profile;
    const box = document.getElementById(`token-${slug}`);
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = "Getting a token…";
    let retryAfter = 0;
    try {
      const response = await fetch(tokensUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": csrfInput ? csrfInput.value : "",
        },
        body: JSON.stringify({ profile: slug }),
      });
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null; // a proxy's HTML page, say: shown by its status
      }
      if (response.status === 201 && body && typeof body.token === "string") {
        showToken(box, body);
      } else {
        retryAfter = parseInt(response.headers.get("Retry-After") || "0", 10) || 0;
        showError(box, response.status, body, retryAfter);
      }
    } catch {
      showError(box, 0, { error: { message: "Ephemera could not be reached. Check your connection and try again." } }, 0);
    } finally {
      button.removeAttribute("aria-busy");
      if (retryAfter > 0) {
        waitOut(button, box, retryAfter);
      } else {
        button.disabled = false;
        button.textContent = "Get a token";
      }
    }
  }

  section.addEventListener("click", (event) => {
    const button = event.target.closest("button.get-token");
    if (button && !button.disabled) getToken(button);
  });
})();
