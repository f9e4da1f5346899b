// The edit page: live diff and labels (computed by the server with fgalign's alignment code), drafts saved
// as the annotator types, time on task, skip, comment and flag, keyboard shortcuts. Text from the data is
// only ever set with textContent, never parsed as HTML. Shortcuts read event.code (the key's place), so
// Option+letter works on a Mac, where event.key is then a special character.
(function () {
  "use strict";
  const guidelines = document.getElementById("guidelines");

  // Folded chip rows: a row taller than its box gets a "show all" button.
  function foldRows() {
    document.querySelectorAll(".unfold").forEach(function (button) {
      const row = document.getElementById(button.dataset.for);
      const over = row.classList.contains("folded") && row.scrollHeight > row.clientHeight + 2;
      button.classList.toggle("hidden", !over && row.classList.contains("folded"));
    });
  }
  document.querySelectorAll(".unfold").forEach(function (button) {
    button.addEventListener("click", function () {
      const row = document.getElementById(button.dataset.for);
      const folded = row.classList.toggle("folded");
      button.textContent = folded ? "show all " + row.children.length : "fold";
      foldRows();
    });
  });

  // Editors grow with their text (a long response is edited in one box, not a 5-line slot).
  function grow(area) {
    area.style.height = "0";  // measure the text, not the box: the box then fits it, shrinking too
    area.style.height = (area.scrollHeight + 4) + "px";
  }
  document.querySelectorAll("textarea").forEach(function (area) {
    grow(area);
    area.addEventListener("input", function () { grow(area); });
  });

  const app = document.getElementById("app");
  if (!app) {
    document.addEventListener("keydown", function (ev) {
      if (ev.altKey && ev.code === "KeyG" && guidelines) { guidelines.open = !guidelines.open; ev.preventDefault(); }
    });
    return;
  }
  const id = app.dataset.assignment;
  const csrf = app.dataset.csrf;
  const maxRatio = parseFloat(app.dataset.maxRatio);
  const editor = document.getElementById("editor");
  const form = document.getElementById("edit-form");
  const status = document.getElementById("save-status");
  const errorBox = document.getElementById("error");
  const swappedField = document.getElementById("swapped");
  const comment = document.getElementById("comment");
  const flagged = document.getElementById("flagged");
  let original = app.dataset.original;
  let pendingSeconds = 0;      // visible seconds not yet reported to the server
  let lastSaved = editor.value;
  let overConfirmed = false;   // an over-long edit needs a second click on Submit
  let diffTimer = null, draftTimer = null, noteTimer = null, diffSeq = 0;

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

  function fillRuns(el, runs, cls) {
    el.replaceChildren();
    runs.forEach(function (run) {
      const span = document.createElement("span");
      span.className = cls + " l" + run[1];
      span.textContent = run[0];
      el.appendChild(span);
    });
  }

  function fillChips(el, chips) {
    el.replaceChildren();
    chips.forEach(function (c) {
      const span = document.createElement("span");
      span.className = "chip l" + c.l + (c.ws ? " ws" : "") + (c.sp ? " sp" : "");
      span.textContent = c.t;
      span.title = c.title + " · label " + c.labels.join(" ");
      span.dataset.labels = c.labels.join(" ");
      el.appendChild(span);
    });
    const button = document.querySelector(".unfold[data-for=" + el.id + "]");
    if (button && el.classList.contains("folded")) button.textContent = "show all " + chips.length;
  }

  function render(view) {
    fillRuns(document.getElementById("diff-original"), view.original, "o");
    fillRuns(document.getElementById("diff-edited"), view.edited, "e");
    fillChips(document.getElementById("labels-original"), view.original_tokens);
    fillChips(document.getElementById("labels-edited"), view.edited_tokens);
    foldRows();
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

  function saveNote() {
    const note = document.getElementById("note-status");
    post("/api/item/" + id + "/note", {comment: comment.value, flagged: flagged.checked})
      .then(function () { note.textContent = "note saved"; })
      .catch(function (e) { note.textContent = ""; showError("note not saved: " + e.message); });
  }

  editor.addEventListener("input", function () {
    overConfirmed = false;
    clearTimeout(diffTimer); diffTimer = setTimeout(refreshDiff, 120);
    clearTimeout(draftTimer); draftTimer = setTimeout(saveDraft, 800);
  });
  comment.addEventListener("input", function () { clearTimeout(noteTimer); noteTimer = setTimeout(saveNote, 800); });
  flagged.addEventListener("change", saveNote);

  setInterval(function () { if (document.visibilityState === "visible") pendingSeconds += 1; }, 1000);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") saveDraft(true);
  });
  window.addEventListener("pagehide", function () { saveDraft(true); });

  function submit(action) {
    if (action === "skip" && app.dataset.status !== "open") return;
    if (action === "edited" && app.dataset.over === "1" && !overConfirmed) {
      overConfirmed = true;
      showError("This is more than a minimal edit (over " + Math.round(maxRatio * 100) +
                "% changed). Press Submit again to submit it anyway.");
      return;
    }
    const seconds = pendingSeconds;
    pendingSeconds = 0;
    clearTimeout(noteTimer);
    status.textContent = action === "skip" ? "skipping…" : "submitting…";
    post("/api/item/" + id + "/submit", {action: action, text: editor.value, seconds: seconds,
                                        swapped: swappedField.value === "1", comment: comment.value,
                                        flagged: flagged.checked})
      .then(function (r) {
        if (action !== "skip") app.dataset.status = "submitted";
        status.textContent = action === "skip" ? "skipped for now ✓" : "submitted ✓ (saved)";
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

  function click(elementId) {
    const el = document.getElementById(elementId);
    if (el) el.click();
  }

  document.addEventListener("keydown", function (ev) {
    let handled = true;
    if ((ev.ctrlKey || ev.metaKey) && (ev.code === "Enter" || ev.code === "NumpadEnter")) submit("edited");
    else if (!ev.altKey) handled = false;
    else if (ev.code === "KeyI") submit("identical");
    else if (ev.code === "KeyR") submit("rewrite");
    else if (ev.code === "KeyS") submit("skip");
    else if (ev.code === "KeyU") click("undo");
    else if (ev.code === "KeyP") click("prev");
    else if (ev.code === "KeyN") click("next");
    else if (ev.code === "KeyG" && guidelines) guidelines.open = !guidelines.open;
    else handled = false;
    if (handled) ev.preventDefault();
  });
  foldRows();
})();
