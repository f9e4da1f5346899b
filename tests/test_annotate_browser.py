"""A real browser (Debian's headless chromium, driven by Playwright) does an annotator's job end to end.

It logs in with a link, edits a response, sees the diff and the token labels appear, leaves, comes back to
its draft, submits, goes back to the submission, and the exported record has the labels the page showed.
The README's screenshot comes from here: FGALIGN_ANNOTATE_SCREENSHOT=docs/img/annotate.png.
Without chromium the test skips with one line (`make test` installs it where it can: root and apt-get);
under CI (CI=true) a missing browser is a failure.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from _annotate_server import add_users, make_db, server_thread

CHROMIUM = os.environ.get("FGALIGN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAIRS = [
    {"prompt": "List 3 fruits, not kiwi:", "chosen": " apple, pear, banana.",
     "rejected": " apple, stupid banana, carrot."},
    {"prompt": "<script>alert('xss')</script> List 2 colors:", "chosen": " red, blue.",
     "rejected": " red, <b>blue</b>."},
]


def browser_or_skip():
    reason = None
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        reason = f"no chromium at {CHROMIUM} (make test installs it with root and apt-get: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run under CI: {reason}")
    pytest.skip(reason)


def screenshot(page, path: Path) -> Path:
    """The README's picture: the whole page with the live diff and labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def test_annotator_edits_in_a_real_browser(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from fgalign.annotate.admin import export
    from fgalign.annotate.commands import ExportConfig
    from fgalign.annotate.diffview import token_view
    from fgalign.data import read_records
    from fgalign.labels.project import label_pair

    db = make_db(tmp_path, PAIRS, tokenizer=str(tiny_tokenizer_dir))
    token = add_users(db, ["alice"])["alice"]
    edit = " apple, banana, pear."
    dialogs: list[str] = []
    with server_thread(db) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_default_timeout(15_000)
            page.goto(f"{base}/login/{token}")
            page.click("#login")
            expect(page).to_have_url(re.compile(r"/item/\d+$"))
            first_url = page.url
            expect(page.locator("#prompt")).to_have_text(PAIRS[0]["prompt"])

            page.fill("#editor", edit)  # fires `input`: the diff and labels update live
            expect(page.locator("#diff-original .o.l-1").first).to_have_text("stupid")
            expect(page.locator("#diff-original .o.l-1").last).to_have_text("carrot")
            expect(page.locator("#diff-edited .e.l1")).to_have_text("pear")
            expect(page.locator("#unit")).to_have_text("token")
            expect(page.locator("#save-status")).to_have_text("draft saved")
            shown = [[c.text_content(), int(c.get_attribute("class").split(" l")[1])]
                     for c in page.locator("#labels-original .chip").all()]
            assert any(lab == -1 for _, lab in shown) and any(lab == 0 for _, lab in shown)
            screenshot(page, Path(os.environ.get("FGALIGN_ANNOTATE_SCREENSHOT", tmp_path / "annotate.png")))

            page.fill("#editor", " nothing like the original at all")  # a rewrite: warned before submitting
            expect(page.locator("#ratio-warning")).to_be_visible()
            page.keyboard.press("Alt+U")  # undo to the original
            expect(page.locator("#editor")).to_have_value(PAIRS[0]["rejected"])
            expect(page.locator("#ratio-warning")).to_be_hidden()
            page.fill("#editor", "")
            page.keyboard.press("Control+Enter")  # an empty edit: a message on the page, nothing submitted
            expect(page.locator("#error")).to_contain_text("the edit is empty")
            page.fill("#editor", edit)
            expect(page.locator("#save-status")).to_have_text("draft saved")

            page.reload()  # a closed tab loses nothing: the draft comes back
            expect(page.locator("#editor")).to_have_value(edit)
            expect(page.locator("#diff-edited .e.l1")).to_have_text("pear")
            page.wait_for_timeout(1500)  # time on task is counted in whole visible seconds

            page.keyboard.press("Control+Enter")
            expect(page.locator("#save-status")).to_have_text("submitted ✓ (saved)")
            expect(page).not_to_have_url(first_url)
            expect(page.locator("#prompt")).to_have_text(PAIRS[1]["prompt"])  # data shown as text, never run
            assert page.locator("#diff-original b").count() == 0
            assert dialogs == []

            page.click("#prev")  # back to the submission: it is kept
            expect(page).to_have_url(first_url)
            expect(page.locator("#editor")).to_have_value(edit)
            expect(page.locator(".status-badge")).to_contain_text("submitted (edited)")
        finally:
            browser.close()

    out = tmp_path / "edits.jsonl"
    export(ExportConfig(db=db, out=str(out), adjudicate="all"))
    (rec,) = read_records(out, require_edited=True)
    assert rec.edited == edit and rec.meta["annotator"] == "alice" and rec.meta["seconds"] >= 1
    labels = label_pair(tiny_tokenizer, rec.prompt, rec.rejected, rec.edited, mode="tokens")
    assert token_view(tiny_tokenizer, labels["rejected_ids"], labels["rejected_labels"]) == shown
