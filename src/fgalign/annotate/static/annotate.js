// The edit page: live diff and labels (computed by the server with fgalign's alignment code), drafts saved
// as the annotator types, time on task, keyboard shortcuts. Text from the data is only ever set with
// textContent, never parsed as HTML.
(function () {
  "use strict";
  const app = document.getElementById("app");
  if (!app) return;
  const id = app.dataset.assignment;
  const csrf = app.dataset.csrf;
  const maxRatio = parseFloat(app.dataset.maxRatio);
  const editor = document.getElementById("editor");
  const form = document.getElementById("edit-form");
  const status = document.getElementById("save-status");
  const errorBox = document.getElementById("error");
  const swappedField = document.getElementById("swapped");
  let original = app.dataset.original;
  let pendingSeconds = 0;      // visible seconds not yet reported to the server
  let lastSaved = editor.value;
  let overConfirmed = false;   // an over-long edit needs a second click on Submit
  let diffTimer = null, draftTimer = null, diffSeq = 0;

  function post(path, payload, keepalive) {
    return fetch(path, {
      method: "POST", credentials: "same-origin", keepalive: !!keepalive,
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(payload),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
        return data;
      });
    });
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.classList.toggle("hidden", !message);
  }

  function fill(el, runs, cls) {
    el.replaceChildren();
    runs.forEach(function (run) {
      const span = document.createElement("span");
      span.className = cls + " l" + run[1];
      span.textContent = run[0];
      if (cls === "chip") span.title = "label " + run[1];
      el.appendChild(span);
    });
  }

  function render(view) {
    fill(document.getElementById("diff-original"), view.original, "o");
    fill(document.getElementById("diff-edited"), view.edited, "e");
    fill(document.getElementById("labels-original"), view.original_tokens, "chip");
    fill(document.getElementById("labels-edited"), view.edited_tokens, "chip");
    document.getElementById("unit").textContent = view.unit;
    document.getElementById("ratio").textContent = Math.round(view.ratio * 100);
    document.getElementById("ratio-warning").classList.toggle("hidden", !view.over);
    app.dataset.over = view.over ? "1" : "0";
  }

  function refreshDiff() {
    const seq = ++diffSeq;
    post("/api/item/" + id + "/diff", {text: editor.value, swapped: swappedField.value === "1"})
      .then(function (view) { if (seq === diffSeq) { render(view); showError(""); } })
      .catch(function (e) { showError(e.message); });
  }

  function saveDraft(keepalive) {
    if (app.dataset.status !== "open" || (editor.value === lastSaved && pendingSeconds < 1)) return;
    const text = editor.value, seconds = pendingSeconds;
    pendingSeconds = 0;
    status.textContent = "saving draft…";
    post("/api/item/" + id + "/draft", {text: text, seconds: seconds, swapped: swappedField.value === "1"}, keepalive)
      .then(function (r) { lastSaved = text; status.textContent = r.saved ? "draft saved" : ""; })
      .catch(function (e) { pendingSeconds += seconds; status.textContent = ""; showError("draft not saved: " + e.message); });
  }

  editor.addEventListener("input", function () {
    overConfirmed = false;
    clearTimeout(diffTimer); diffTimer = setTimeout(refreshDiff, 120);
    clearTimeout(draftTimer); draftTimer = setTimeout(saveDraft, 800);
  });

  setInterval(function () { if (document.visibilityState === "visible") pendingSeconds += 1; }, 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") saveDraft(true);
  });
  window.addEventListener("pagehide", function () { saveDraft(true); });

  function submit(action) {
    if (action === "edited" && app.dataset.over === "1" && !overConfirmed) {
      overConfirmed = true;
      showError("This is more than a minimal edit (over " + Math.round(maxRatio * 100) +
                "% changed). Press Submit again to submit it anyway.");
      return;
    }
    const seconds = pendingSeconds;
    pendingSeconds = 0;
    status.textContent = "submitting…";
    post("/api/item/" + id + "/submit", {action: action, text: editor.value, seconds: seconds,
                                        swapped: swappedField.value === "1"})
      .then(function (r) {
        app.dataset.status = "submitted";
        status.textContent = "submitted ✓ (saved)";
        setTimeout(function () { window.location.assign(r.next); }, 400);
      })
      .catch(function (e) { pendingSeconds += seconds; status.textContent = ""; showError(e.message); });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    submit(ev.submitter ? ev.submitter.value : "edited");
  });

  document.getElementById("undo").addEventListener("click", function () {
    editor.value = original;
    editor.dispatchEvent(new Event("input"));
  });

  document.querySelectorAll("input[name=better]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      swappedField.value = radio.value;
      original = radio.value === "1" ? app.dataset.chosen : app.dataset.rejected;
      editor.value = original;
      lastSaved = null;
      editor.dispatchEvent(new Event("input"));
    });
  });

  document.addEventListener("keydown", function (ev) {
    const key = ev.key.toLowerCase();
    let handled = true;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") submit("edited");
    else if (ev.altKey && key === "i") submit("identical");
    else if (ev.altKey && key === "r") submit("rewrite");
    else if (ev.altKey && key === "u") document.getElementById("undo").click();
    else if (ev.altKey && key === "p" && document.getElementById("prev")) document.getElementById("prev").click();
    else if (ev.altKey && key === "n" && document.getElementById("next")) document.getElementById("next").click();
    else handled = false;
    if (handled) ev.preventDefault();
  });
})();
