"""The pages and API added for a team (over real HTTP, uvicorn on 127.0.0.1, SQLite and PostgreSQL): error
pages instead of raw JSON, guidelines rendered safely, skip/note/history, All done, and the reviewer pages
(role-gated, CSRF-checked)."""
from __future__ import annotations

from _annotate_server import (Annotator, add_users, backend, csrf_of, make_db,  # noqa: F401 - fixture
                              parametrize_backends, server_thread)

pytest_generate_tests = parametrize_backends
PAIRS = [{"prompt": f"List {i}:", "chosen": f" good {i}.", "rejected": f" bad {i} here."} for i in range(3)]


def test_bad_addresses_give_pages_and_the_api_gives_json(tmp_path):
    db = make_db(tmp_path, PAIRS[:1])
    tokens = add_users(db, ["ann"])
    with server_thread(db) as base:
        ann = Annotator(base, tokens["ann"])
        for path in ("/item/abc", "/item/99999", "/no/such/page", "/review/abc"):
            r = ann.client.get(path)
            assert r.status_code in (403, 404) and r.headers["content-type"].startswith("text/html"), path
            assert "<h1>" in r.text and '{"detail"' not in r.text, path
        r = ann.client.get("/api/item/abc/history")
        assert r.status_code == 404 and "error" in r.json()
        ann.close()


def test_guidelines_are_rendered_safely_on_every_page(tmp_path):
    guide = tmp_path / "guide.md"
    guide.write_text("# Rules\n\n* keep **names**\n\n<img src=x onerror=alert(1)> [click](javascript:alert(2))\n")
    db = make_db(tmp_path, PAIRS[:1], guidelines=str(guide))
    (tmp_path / "plain").mkdir()
    plain = make_db(tmp_path / "plain", PAIRS[:1])
    tokens = add_users(db, ["ann"])
    with server_thread(db) as base:
        ann = Annotator(base, tokens["ann"])
        for path in ("/guidelines", "/next", "/mine"):
            html = ann.client.get(path, follow_redirects=True).text
            panel = '<details class="guidelines-panel" id="guidelines">' in html
            assert panel == (path != "/guidelines"), path  # the page itself shows them once, not twice
            assert "<strong>names</strong>" in html and "<h1>Rules</h1>" in html
            assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
            assert 'href="javascript:' not in html
        ann.close()
    tokens = add_users(plain, ["bob"])
    with server_thread(plain) as base:
        bob = Annotator(base, tokens["bob"])
        html = bob.client.get("/next", follow_redirects=True).text
        assert 'id="guidelines"' not in html and 'id="guidelines-link"' not in html
        bob.close()


def test_skip_note_history_left_and_all_done_over_http(tmp_path):
    db = make_db(tmp_path, PAIRS[:2])
    tokens = add_users(db, ["ann"])
    with server_thread(db) as base:
        ann = Annotator(base, tokens["ann"])
        first = ann.next()["assignment"]
        assert "2 left for you" in ann.client.get(f"/item/{first}").text
        r = ann.post(f"/api/item/{first}/submit", {"action": "skip", "text": " bad 0 hm", "seconds": 2})
        assert r.status_code == 200 and r.json()["skipped"]
        second = ann.next()["assignment"]
        assert second != first
        assert ann.post(f"/api/item/{second}/note", {"comment": "odd one", "flagged": True}).json()["saved"]
        assert ann.post(f"/api/item/{second}/note", {"comment": 5}, csrf=True).status_code == 400
        assert ann.post(f"/api/item/{second}/note", {"comment": "x"}, csrf=False).status_code == 403
        html = ann.client.get(f"/item/{second}").text
        assert ">odd one</textarea>" in html and 'id="flagged" value="1" checked' in html
        assert ann.submit(second, " good 1.").status_code == 200
        assert ann.submit(second, " good 1!").status_code == 200  # a resubmission
        history = ann.client.get(f"/api/item/{second}/history").json()["submissions"]
        assert [h["edited"] for h in history] == [" good 1.", " good 1!"]
        back = ann.next()
        assert back["assignment"] == first and back["draft"] == " bad 0 hm"
        assert ann.submit(first, None, action="identical").status_code == 200
        r = ann.client.get("/next")
        assert r.status_code == 303 and r.headers["location"] == "/done"
        done = ann.client.get("/done").text
        assert "All done" in done and 'href="/mine"' in done and 'action="/logout"' in done
        mine = ann.client.get("/mine").text
        assert f'href="/item/{first}"' in mine and f'href="/item/{second}"' in mine and "flagged" in mine
        # the page's form without script: an unticked box unflags, the comment is kept with the submission
        assert ann.post(f"/api/item/{first}/note", {"flagged": True}).json()["saved"]
        r = ann.client.post(f"/item/{first}", data={"csrf": ann.csrf, "edited": " good 0.", "action": "edited",
                                                     "comment": "fixed by form"})
        assert r.status_code == 303
        html = ann.client.get(f"/item/{first}").text
        assert ">fixed by form</textarea>" in html and 'id="flagged" value="1" checked' not in html
        ann.close()


def test_review_pages_need_the_role_and_the_csrf_token(tmp_path):
    db = make_db(tmp_path, PAIRS[:1], overlap=2)
    tokens = add_users(db, ["ann", "bob"])
    tokens.update(add_users(db, ["rita"], role="reviewer"))
    with server_thread(db) as base:
        ann, bob = Annotator(base, tokens["ann"]), Annotator(base, tokens["bob"])
        aid = ann.next()["assignment"]
        assert ann.submit(aid, " good 0.").status_code == 200
        assert bob.submit(bob.next()["assignment"], " fine 0 here.").status_code == 200
        assert ann.client.get("/review").status_code == 403
        assert ann.client.post("/review/1", data={"csrf": ann.csrf, "accept": str(aid)}).status_code == 403
        assert 'id="review-link"' not in ann.client.get(f"/item/{aid}").text
        rita = Annotator(base, tokens["rita"])
        queue_page = rita.client.get("/review").text
        assert "1 to review" in queue_page and "ann, bob" in queue_page
        item = rita.client.get("/review/1")
        assert item.status_code == 200 and item.text.count('class="card"') == 2
        assert rita.client.post("/review/1", data={"accept": str(aid)}).status_code == 403  # no CSRF token
        r = rita.client.post("/review/1", data={"csrf": csrf_of(item.text), "accept": "abc"})
        assert r.status_code == 400
        r = rita.client.post("/review/1", data={"csrf": rita.csrf, "action": "final", "final": " "})
        assert r.status_code == 400 and "the final edit is empty" in r.text
        r = rita.client.post("/review/1", data={"csrf": rita.csrf, "accept": str(aid)})
        assert r.status_code == 303 and r.headers["location"] == "/review"
        assert "reviewed by rita" in rita.client.get("/review").text
        for a in (ann, bob, rita):
            a.close()
