// The Live profile form's wire preview, kept up to date before saving.
// The server builds it (the admin's preview URL, the same code issuance uses); this only posts
// the form there, debounced, and swaps in the panel it answers. Without this script the page
// shows the preview of the saved profile.
(() => {
  const panel = document.getElementById("wire-preview-panel");
  const form = document.getElementById("liveconstraintprofile_form");
  if (!panel || !form || !panel.dataset.previewUrl) return;
  const content = document.getElementById("wire-preview-content");
  const status = document.getElementById("wire-preview-status");
  const DELAY_MS = 350;
  let timer = null;
  let controller = null;
  let sequence = 0;

  async function refresh() {
    const mine = ++sequence;
    if (controller) controller.abort();
    controller = new AbortController();
    const data = new FormData(form);
    status.textContent = "Updating…";
    try {
      const response = await fetch(panel.dataset.previewUrl, {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { "X-CSRFToken": data.get("csrfmiddlewaretoken"), Accept: "application/json" },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`preview answered ${response.status}`);
      const answer = await response.json();
      if (mine !== sequence) return; // a newer edit is on its way
      content.innerHTML = answer.html; // rendered and escaped by the server's template
      panel.dataset.state = answer.valid ? "unsaved" : "invalid";
      status.textContent = answer.valid
        ? "Preview of your unsaved changes."
        : "Fix the problems below to see the request.";
    } catch (error) {
      if (error.name === "AbortError") return;
      status.textContent = "The preview could not be updated; it shows again after saving.";
    }
  }

  function schedule(event) {
    if (event.target.closest(".inline-group")) return; // quotas do not change the request
    clearTimeout(timer);
    timer = setTimeout(refresh, DELAY_MS);
  }

  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
})();
