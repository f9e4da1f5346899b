"""The annotation server over real HTTP (uvicorn on 127.0.0.1): security, bad input, 20 concurrent
annotators, and a SIGKILL in the middle of a stream of submissions."""
from __future__ import annotations

import os
import signal
import threading

import httpx
import pytest
from sqlalchemy import func, select

from _annotate_server import (PAIRS, Annotator, add_users, backend, csrf_of, make_db,  # noqa: F401
                              parametrize_backends, server_process, server_thread, sqlite_only)
from fgalign.annotate import db as annotate_db

pytest_generate_tests = parametrize_backends


def submissions(db: str) -> list[tuple[int, int, str]]:
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        rows = conn.execute(select(annotate_db.assignments.c.item_id, annotate_db.assignments.c.user_id,
                                   annotate_db.assignments.c.edited)
                            .where(annotate_db.assignments.c.status == "submitted")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_login_link_is_one_time_and_every_page_needs_the_session(tmp_path):
    db = make_db(tmp_path, PAIRS[:2])
    tokens = add_users(db, ["alice"])
    with server_thread(db) as base, httpx.Client(base_url=base) as anon:
        for path in ("/", "/next", "/item/1", "/api/next", "/api/session"):
            assert anon.get(path).status_code == 401, path
        assert anon.post("/api/item/1/submit", json={"text": "x"}).status_code == 401
        assert anon.get("/login/not-a-token").status_code == 403
        assert anon.post("/login/not-a-token").status_code == 403
        for _ in range(2):  # a link preview (GET) does not spend the link
            page = anon.get(f"/login/{tokens['alice']}")
            assert page.status_code == 200 and "Log in as alice" in page.text and "set-cookie" not in page.headers
        alice = Annotator(base, tokens["alice"])
        assert httpx.post(f"{base}/login/{tokens['alice']}").status_code == 403  # used already
        assert httpx.get(f"{base}/login/{tokens['alice']}").status_code == 403
        page = alice.client.get("/next", follow_redirects=True)
        assert page.status_code == 200 and "apple, dog, plum." in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert "set-cookie" not in page.headers
        alice.close()


def test_another_annotators_work_is_404_and_posts_need_csrf(tmp_path):
    db = make_db(tmp_path, PAIRS[:2], overlap=1)
    tokens = add_users(db, ["alice", "bob"])
    with server_thread(db) as base:
        alice, bob = Annotator(base, tokens["alice"]), Annotator(base, tokens["bob"])
        a_item = alice.next()["assignment"]
        assert bob.client.get(f"/item/{a_item}").status_code == 404
        for path in ("submit", "draft", "diff"):
            r = bob.post(f"/api/item/{a_item}/{path}", {"text": "hacked", "action": "edited"})
            assert r.status_code == 404, path
        r = bob.client.post(f"/item/{a_item}", data={"csrf": bob.csrf, "edited": "hacked", "action": "edited"})
        assert r.status_code == 404
        # the owner without the CSRF token, or with bob's: 403
        assert alice.post(f"/api/item/{a_item}/submit", {"text": "x"}, csrf=False).status_code == 403
        r = alice.client.post(f"/api/item/{a_item}/submit", json={"text": "x"}, headers={"X-CSRF-Token": bob.csrf})
        assert r.status_code == 403
        r = alice.client.post(f"/item/{a_item}", data={"edited": "x", "action": "edited"})
        assert r.status_code == 403
        assert submissions(db) == []
        alice.close(), bob.close()


def test_script_in_the_data_shows_as_text(tmp_path):
    evil = {"prompt": "<script>alert('p')</script> List:", "chosen": " ok <b>bold</b>",
            "rejected": " bad <img src=x onerror=alert(1)>\" data-x='1'"}
    db = make_db(tmp_path, [evil])
    tokens = add_users(db, ["alice"])
    with server_thread(db) as base:
        alice = Annotator(base, tokens["alice"])
        html = alice.client.get("/next", follow_redirects=True).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
        assert "&lt;script&gt;alert(&#39;p&#39;)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;&#34;" in html
        assert html.count("<script") == 1  # ours only: <script src="/static/annotate.js">
        alice.close()


def test_bad_submissions_get_a_message_not_a_500(tmp_path):
    db = make_db(tmp_path, PAIRS[:1])
    tokens = add_users(db, ["alice"])
    with server_thread(db) as base:
        alice = Annotator(base, tokens["alice"])
        aid = alice.next()["assignment"]
        r = alice.submit(aid, "   ")
        assert r.status_code == 400 and "empty" in r.json()["error"]
        r = alice.submit(aid, "x" * 20_001)
        assert r.status_code == 400 and "at most 20,000" in r.json()["error"]
        r = alice.client.post(f"/api/item/{aid}/submit", content=b"{not json", headers={
            "X-CSRF-Token": alice.csrf, "Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = alice.submit(aid, 42)
        assert r.status_code == 400
        r = alice.post(f"/api/item/{aid}/draft", {"text": "x", "seconds": "nan"})
        assert r.status_code == 200 and alice.next()["draft"] == "x"  # a nonsense time adds nothing
        r = alice.client.post(f"/item/{aid}", files={"csrf": ("f.txt", b"x")}, data={"edited": "x"})
        assert r.status_code == 403  # an uploaded file is no CSRF token
        r = alice.client.post(f"/api/item/{aid}/submit", content=b"x" * 300_000, headers={
            "X-CSRF-Token": alice.csrf, "Content-Type": "application/json"})
        assert r.status_code == 413
        # the form path (no script) shows the message on the page, with the text kept
        r = alice.client.post(f"/item/{aid}", data={"csrf": alice.csrf, "edited": "", "action": "edited"})
        assert r.status_code == 400 and "the edit is empty" in r.text and "<textarea" in r.text
        r = alice.client.post(f"/item/{aid}", data={"csrf": alice.csrf, "edited": " apple, pear, plum.",
                                                     "action": "edited"})
        assert r.status_code == 303
        assert submissions(db)[0][2] == " apple, pear, plum."
        alice.close()


def test_diff_endpoint_labels_what_the_edit_changes(tmp_path):
    db = make_db(tmp_path, PAIRS[:1])
    tokens = add_users(db, ["alice"])
    with server_thread(db) as base:
        alice = Annotator(base, tokens["alice"])
        aid = alice.next()["assignment"]
        view = alice.post(f"/api/item/{aid}/diff", {"text": " apple, pear, plum."}).json()
        assert [c["t"] for c in view["original_tokens"] if c["l"] == -1] == ["dog"]
        assert [c["t"] for c in view["edited_tokens"] if c["l"] == 1] == ["pear"]
        assert ["dog", -1] in view["original"] and ["pear", 1] in view["edited"]
        assert not view["over"]
        assert alice.post(f"/api/item/{aid}/diff", {"text": "completely different text here"}).json()["over"]
        assert alice.post(f"/api/item/{aid}/draft", {"text": " apple, pe", "seconds": 4}).json()["saved"]
        assert alice.next()["draft"] == " apple, pe"
        alice.close()


def test_twenty_concurrent_annotators_fill_every_pair_exactly_to_its_overlap(tmp_path):
    pairs = [{"prompt": f"List {i}:", "chosen": f" item{i} good.", "rejected": f" item{i} bad."} for i in range(30)]
    db = make_db(tmp_path, pairs, overlap=3)
    names = [f"ann{i:02d}" for i in range(20)]
    tokens = add_users(db, names)
    errors: list[str] = []
    with server_thread(db) as base:
        def work(name: str) -> None:
            annotator = Annotator(base, tokens[name], timeout=60)
            try:
                for _ in range(len(pairs) + 2):  # bounded: at most every pair once, plus the final "done"
                    nxt = annotator.next()
                    if nxt["assignment"] is None:
                        return
                    r = annotator.submit(nxt["assignment"], nxt["original"].replace("bad", f"good {name}"))
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text[:100]}")
                errors.append(f"{name}: still had work after the bound")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{name}: {type(e).__name__}: {e}")
            finally:
                annotator.close()

        threads = [threading.Thread(target=work, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[:5]
    subs = submissions(db)
    per_item: dict[int, list[int]] = {}
    for item_id, user_id, _ in subs:
        per_item.setdefault(item_id, []).append(user_id)
    assert len(subs) == 30 * 3
    assert all(len(users) == 3 and len(set(users)) == 3 for users in per_item.values())
    assert len(per_item) == 30


def test_sigkill_loses_no_acknowledged_submission(tmp_path):
    pairs = [{"prompt": f"P{i}:", "chosen": f" c{i}.", "rejected": f" r{i} wrong."} for i in range(400)]
    db = make_db(tmp_path, pairs)
    tokens = add_users(db, ["a", "b", "c", "d"])
    acknowledged: list[str] = []
    lock = threading.Lock()
    with server_process(db) as (base, proc):
        annotators = [Annotator(base, tokens[n]) for n in "abcd"]
        stop = threading.Event()

        def work(annotator: Annotator, name: str) -> None:
            for k in range(400):  # bounded
                if stop.is_set():
                    return
                try:
                    nxt = annotator.next()
                    text = f" {name}-{k} fixed."
                    r = annotator.submit(nxt["assignment"], text)
                except httpx.HTTPError:
                    return  # the server died under us: this one was not acknowledged
                if r.status_code == 200 and r.json().get("saved"):
                    with lock:
                        acknowledged.append(text)

        threads = [threading.Thread(target=work, args=(a, n)) for a, n in zip(annotators, "abcd")]
        for t in threads:
            t.start()
        deadline = threading.Event()
        for _ in range(200):  # kill once some submissions are acknowledged and more are in flight
            with lock:
                if len(acknowledged) >= 40:
                    break
            deadline.wait(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for a in annotators:
            a.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 40
    stored = {text for _, _, text in submissions(db)}
    lost = [t for t in acknowledged if t not in stored]
    assert not lost, f"{len(lost)} acknowledged submissions lost: {lost[:3]}"


def test_annotator_can_choose_the_preferred_response_and_it_is_recorded(tmp_path):
    from fgalign.annotate.admin import export
    from fgalign.annotate.options import ExportConfig
    from fgalign.data import read_records

    db = make_db(tmp_path, PAIRS[:2], choose_preferred=True)
    (tmp_path / "fixed").mkdir()
    fixed = make_db(tmp_path / "fixed", PAIRS[:1])
    tokens = add_users(db, ["alice"])
    with server_thread(db) as base:
        alice = Annotator(base, tokens["alice"])
        first = alice.next()
        html = alice.client.get(f"/item/{first['assignment']}").text
        assert 'name="better"' in html
        # alice finds the file's chosen response worse: she edits that one
        view = alice.post(f"/api/item/{first['assignment']}/diff", {"text": " apple, pear, plum!", "swapped": True}).json()
        assert ["!", 1] in view["edited"]
        assert alice.post(f"/api/item/{first['assignment']}/draft", {"text": " apple, pear", "swapped": True}).json()["saved"]
        assert 'value="1" checked' in alice.client.get(f"/item/{first['assignment']}").text
        r = alice.post(f"/api/item/{first['assignment']}/submit", {"action": "edited", "text": " apple, pear, plum!",
                                                                    "swapped": True})
        assert r.status_code == 200
        second = alice.next()["assignment"]
        assert alice.submit(second, " red, blue.").status_code == 200
        alice.close()
    export(ExportConfig(db=db, out=str(tmp_path / "e.jsonl"), adjudicate="all"))
    swapped, kept = read_records(tmp_path / "e.jsonl")
    assert (swapped.chosen, swapped.rejected, swapped.edited) == (PAIRS[0]["rejected"], PAIRS[0]["chosen"],
                                                                   " apple, pear, plum!")
    assert swapped.meta["preference"] == "annotator (swapped)" and "preference" not in kept.meta

    tokens = add_users(fixed, ["bob"])  # without --choose-preferred, a swap is refused
    with server_thread(fixed) as base:
        bob = Annotator(base, tokens["bob"])
        aid = bob.next()["assignment"]
        r = bob.post(f"/api/item/{aid}/submit", {"action": "edited", "text": "x", "swapped": True})
        assert r.status_code == 400 and "preference from the pairs file" in r.json()["error"]
        bob.close()
