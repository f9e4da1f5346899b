"""A real browser (Debian's headless chromium, driven by Playwright) does an annotator's and a reviewer's job.

The annotator logs in with a link, reads the guidelines, edits a response and sees the diff and the token
chips appear (the chips are what train-rm computes for the exported record), edits CJK and emoji text
(no "\ufffd" anywhere), skips an item and gets it back last, comes back to a draft, resubmits an item
(both submissions kept), and reaches the All done page. The reviewer resolves a disagreement, and the
export takes the reviewed edit. The README's screenshot comes from here:
FGALIGN_ANNOTATE_SCREENSHOT=docs/img/annotate.png.
Without chromium the tests skip with one line (`make test` installs it where it can: root and apt-get);
under CI (CI=true) a missing browser is a failure.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from _annotate_server import Annotator, add_users, backend, make_db, parametrize_backends, server_thread  # noqa: F401

pytest_generate_tests = parametrize_backends

CHROMIUM = os.environ.get("FGALIGN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAIRS = [
    {"prompt": "List 3 colors, not green:", "chosen": " red, blue, pink.", "rejected": " red, beige, stupid green."},
    {"prompt": "列出两种水果:", "chosen": " 苹果, 🍌 香蕉.", "rejected": " 苹果, 🍎 土豆."},
    {"prompt": "<script>alert('xss')</script> List 2 colors:", "chosen": " red, blue.",
     "rejected": " red, <b>blue</b>."},
    {"prompt": "List 2 animals:", "chosen": " cat, dog.", "rejected": " cat, dog."},
]
GUIDELINES = "# How to edit\n\nChange **only** what is wrong.\n\n<script>alert('g')</script>\n"


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


def chip_labels(page, row: str) -> list[int]:
    """The per-token labels the chips of one row stand for, in order (a chip may hold several tokens)."""
    return [int(x) for c in page.locator(f"#{row} .chip").all() for x in c.get_attribute("data-labels").split()]


def train_rm_labels(tokenizer, record, label_mode: str) -> tuple[list[int], list[int]]:
    """What train-rm's own pair builder gives the reward model for this exported record."""
    from fgalign.data import ReadStats
    from fgalign.data.tokenize import encode_prompt, encode_response
    from fgalign.train.reward import RewardConfig, build_pairs

    rm = SimpleNamespace(tokenizer=tokenizer, encode_prompt=lambda p: encode_prompt(tokenizer, p),
                         encode_response=lambda r: encode_response(tokenizer, r),
                         model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1024)))
    cfg = RewardConfig(data="exported", out="unused", model="unused", label_mode=label_mode)
    (pair,) = build_pairs(cfg, rm, [record], ReadStats())
    return pair["worse_labels"], pair["better_labels"]


def launch(pw):
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


def test_annotator_edits_in_a_real_browser(tmp_path, tiny_tokenizer_dir, tiny_tokenizer):
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from fgalign.annotate.admin import export
    from fgalign.annotate.diffview import DEFAULT_LABEL_MODE
    from fgalign.annotate.options import ExportConfig
    from fgalign.data import read_records

    assert DEFAULT_LABEL_MODE == "chars"  # issue 21: one default, the mode that marks a replaced word whole
    (tmp_path / "guide.md").write_text(GUIDELINES)
    db = make_db(tmp_path, PAIRS, tokenizer=str(tiny_tokenizer_dir), guidelines=str(tmp_path / "guide.md"))
    token = add_users(db, ["alice"])["alice"]
    edit, revised, cjk = " red, blue, stupid green.", " red, blue, pink.", " 苹果, 🍌 香蕉."
    dialogs: list[str] = []
    with server_thread(db) as base, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_default_timeout(15_000)
            page.goto(f"{base}/login/{token}")
            page.click("#login")
            expect(page).to_have_url(re.compile(r"/item/\d+$"))
            first_url = page.url
            expect(page.locator("#prompt")).to_have_text(PAIRS[0]["prompt"])
            expect(page.locator("#left")).to_have_text("4 left for you")

            # guidelines: one click away, Markdown rendered, raw HTML shown as text
            expect(page.locator("#guidelines .md")).to_be_hidden()
            page.click("#guidelines summary")
            expect(page.locator("#guidelines .md strong")).to_have_text("only")
            expect(page.locator("#guidelines .md")).to_contain_text("<script>alert('g')</script>")
            page.click("#guidelines summary")

            page.fill("#editor", edit)  # fires `input`: the diff and labels update live
            expect(page.locator("#diff-original .o.l-1")).to_have_text("beige")
            expect(page.locator("#diff-edited .e.l1")).to_have_text("blue")
            expect(page.locator("#unit")).to_have_text("token")
            expect(page.locator("#save-status")).to_have_text("draft saved")
            # "beige" → "blue": the diff strikes the whole word, and so do the chips (chars mode)
            chips = [(c.text_content(), c.get_attribute("data-labels")) for c in page.locator("#labels-original .chip").all()]
            texts = [t for t, _ in chips]
            k = next(i for i in range(len(texts)) if "".join(texts[i:i + 5]) == " beige")
            assert [lab for _, lab in chips[k:k + 5]] == ["-1"] * 5 and chips[k - 1][1] == chips[k + 5][1] == "0"
            expect(page.locator(".chip-row .row-label")).to_have_text(["original", "your revision"])
            expect(page.locator("#labels-original .chip.ws").first).to_have_text("·")  # a space token, visible
            screenshot(page, Path(os.environ.get("FGALIGN_ANNOTATE_SCREENSHOT", tmp_path / "annotate.png")))

            height = page.locator("#editor").bounding_box()["height"]
            page.fill("#editor", "\n".join(["a longer line of text that goes on"] * 12))
            assert page.locator("#editor").bounding_box()["height"] > 3 * height  # the editor grows
            expect(page.locator("#ratio-warning")).to_be_visible()
            page.keyboard.press("Alt+U")  # undo to the original (event.code: KeyU)
            expect(page.locator("#editor")).to_have_value(PAIRS[0]["rejected"])
            expect(page.locator("#ratio-warning")).to_be_hidden()
            page.fill("#editor", "")
            page.keyboard.press("Control+Enter")  # an empty edit: a message on the page, nothing submitted
            expect(page.locator("#error")).to_contain_text("the edit is empty")
            page.fill("#editor", edit)
            expect(page.locator("#save-status")).to_have_text("draft saved")
            page.reload()  # a closed tab loses nothing: the draft comes back
            expect(page.locator("#editor")).to_have_value(edit)
            page.wait_for_timeout(1100)  # time on task is counted in whole visible seconds
            page.keyboard.press("Control+Enter")
            expect(page.locator("#save-status")).to_have_text("submitted ✓ (saved)")

            # CJK and emoji: characters split over byte tokens are drawn once, never as "\ufffd"
            expect(page.locator("#prompt")).to_have_text(PAIRS[1]["prompt"])
            page.fill("#editor", cjk)
            expect(page.locator("#diff-edited .e.l1").first).to_contain_text("🍌")
            expect(page.locator("#labels-edited .chip", has_text="🍌")).to_have_count(1)
            for row in ("#labels-original", "#labels-edited", "#diff-original", "#diff-edited"):
                assert "\ufffd" not in page.locator(row).text_content(), row
            assert len(page.locator("#labels-edited .chip", has_text="🍌").get_attribute("data-labels").split()) == 4
            cjk_chips = chip_labels(page, "labels-original"), chip_labels(page, "labels-edited")
            page.click("#submit")
            expect(page.locator("#prompt")).to_have_text(PAIRS[2]["prompt"])  # data shown as text, never run
            assert page.locator("#diff-original b").count() == 0 and dialogs == []

            page.keyboard.press("Alt+S")  # skip for now: the next item first, this one comes back last
            expect(page.locator("#prompt")).to_have_text(PAIRS[3]["prompt"])
            expect(page.locator("#left")).to_have_text("2 left for you")
            page.fill("#comment", "chosen and rejected are the same")
            page.check("#flagged")
            page.keyboard.press("Alt+I")  # nothing to fix
            expect(page.locator("#prompt")).to_have_text(PAIRS[2]["prompt"])
            page.keyboard.press("Alt+R")  # needs a rewrite
            expect(page).to_have_url(re.compile(r"/done$"))
            expect(page.locator("main h1")).to_have_text("All done")
            expect(page.locator("#done-logout")).to_be_visible()
            page.click("#done-mine")

            page.click(f"a[href='{first_url.replace(base, '')}']")  # back to the first item: resubmit it
            expect(page.locator("#editor")).to_have_value(edit)
            expect(page.locator(".status-badge")).to_contain_text("submitted (edited)")
            page.fill("#editor", revised)
            expect(page.locator("#diff-edited .e.l1").last).to_have_text("pink")
            first_chips = chip_labels(page, "labels-original"), chip_labels(page, "labels-edited")
            page.click("#submit")
            expect(page.locator("#save-status")).to_have_text("submitted ✓ (saved)")
            page.goto(first_url)
            expect(page.locator("#history li")).to_have_count(2)  # both submissions kept, with their time
            expect(page.locator("#history li").last).to_contain_text("(current)")
            expect(page.locator("#history li").first).to_contain_text("UTC")
        finally:
            browser.close()

    out = tmp_path / "edits.jsonl"
    export(ExportConfig(db=db, out=str(out), adjudicate="all"))
    recs = {r.prompt: r for r in read_records(out)}
    first, second, fourth = recs[PAIRS[0]["prompt"]], recs[PAIRS[1]["prompt"]], recs[PAIRS[3]["prompt"]]
    assert first.edited == revised and first.meta["revisions"] == 2 and first.meta["seconds"] >= 1
    assert PAIRS[2]["prompt"] not in recs  # "needs a rewrite" is never exported as an edit
    assert fourth.edited == fourth.rejected and fourth.meta["comment"] == "chosen and rejected are the same"
    assert fourth.meta["flagged"] is True
    assert first_chips == train_rm_labels(tiny_tokenizer, first, DEFAULT_LABEL_MODE)
    assert cjk_chips == train_rm_labels(tiny_tokenizer, second, DEFAULT_LABEL_MODE)


def test_reviewer_resolves_a_disagreement_in_a_real_browser(tmp_path):
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from fgalign.annotate.admin import export
    from fgalign.annotate.options import ExportConfig
    from fgalign.data import read_records

    pairs = [{"prompt": "List 3 fruits:", "chosen": " apple, pear, plum.", "rejected": " apple, dog, plum."},
             {"prompt": "List 2 colors:", "chosen": " red, blue.", "rejected": " red, stupid blue."}]
    db = make_db(tmp_path, pairs, overlap=2)
    tokens = add_users(db, ["ann", "bob"])
    tokens.update(add_users(db, ["rita"], role="reviewer"))
    with server_thread(db) as base:
        for name, first_edit in (("ann", " apple, pear, plum."), ("bob", " apple, kiwi, plum.")):
            a = Annotator(base, tokens[name])
            assert a.submit(a.next()["assignment"], first_edit).status_code == 200
            assert a.submit(a.next()["assignment"], " red, blue.").status_code == 200  # they agree here
            a.close()
        with sync_playwright() as pw:
            browser = launch(pw)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.set_default_timeout(15_000)
                page.goto(f"{base}/login/{tokens['rita']}")
                page.click("#login")
                page.click("#review-link")
                expect(page.locator("#review-queue tbody tr")).to_have_count(1)  # only the disagreement
                expect(page.locator("#review-queue tbody tr")).to_contain_text("ann, bob")
                page.click("#review-queue tbody a")
                cards = page.locator(".card")
                expect(cards).to_have_count(2)  # side by side, each with its own diff
                expect(cards.nth(0).locator(".diff-edited .e.l1")).to_have_text("pear")
                expect(cards.nth(1).locator(".diff-edited .e.l1")).to_have_text("kiwi")
                expect(cards.nth(1).locator(".diff-original .o.l-1")).to_have_text("dog")
                cards.nth(1).locator("button.accept").click()  # accept bob's
                expect(page.locator("#review-queue tbody tr.reviewed")).to_contain_text("reviewed by rita")
                export(ExportConfig(db=db, out=str(tmp_path / "accepted.jsonl")))
                page.click("#review-queue tbody a")
                expect(page.locator("#current-review")).to_contain_text("accepted a submission")
                page.fill("#final", " apple, banana, plum.")  # then writes the final edit herself
                page.click("#save-final")
                expect(page.locator("#review-queue tbody tr.reviewed")).to_have_count(1)
            finally:
                browser.close()
    accepted = {r.prompt: r for r in read_records(tmp_path / "accepted.jsonl")}
    assert accepted["List 3 fruits:"].edited == " apple, kiwi, plum."  # majority would tie 1:1 and leave it out
    assert accepted["List 3 fruits:"].meta["reviewed_by"] == "rita" and accepted["List 3 fruits:"].meta["accepted"] == "bob"
    export(ExportConfig(db=db, out=str(tmp_path / "final.jsonl"), adjudicate="all"))
    final = [r for r in read_records(tmp_path / "final.jsonl") if r.prompt == "List 3 fruits:"]
    assert [r.edited for r in final] == [" apple, banana, plum."]  # the reviewed edit, once, even with `all`
    assert final[0].meta["accepted"] == "reviewer's own edit"


def test_a_long_response_keeps_the_page_usable(tmp_path, tiny_tokenizer_dir):
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    long = " " + ", ".join(f"item number {i}" for i in range(200)) + "."  # ~3,000 characters
    db = make_db(tmp_path, [{"prompt": "List many:", "chosen": " a.", "rejected": long}],
                 tokenizer=str(tiny_tokenizer_dir))
    token = add_users(db, ["ann"])["ann"]
    with server_thread(db) as base, sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{base}/login/{token}")
            page.click("#login")
            editor = page.locator("#editor")
            assert editor.evaluate("el => el.scrollHeight <= el.clientHeight + 6")  # no scrolling inside: it grew
            assert editor.bounding_box()["height"] > 300
            row = page.locator("#labels-original")
            n_chips = row.locator(".chip").count()
            assert n_chips > 500
            assert row.bounding_box()["height"] < 200  # folded to a few lines
            assert page.evaluate("document.body.scrollHeight") < 2400  # the diff panels scroll inside
            unfold = page.locator(".unfold[data-for=labels-original]")
            expect(unfold).to_have_text(f"show all {n_chips}")
            unfold.click()
            assert row.bounding_box()["height"] > 600
            expect(unfold).to_have_text("fold")
            page.fill("#editor", long.replace("item number 7,", "item number 8,"))  # typing keeps the fold state
            expect(page.locator("#diff-edited .e.l1").first).to_have_text("8")
            assert row.bounding_box()["height"] > 600
        finally:
            browser.close()
