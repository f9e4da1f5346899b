"""Accounts from the CLI: each `users` action with its own help, expiring login links, a new link ending
the old sessions, `users logout`, `users remove`, and `users list` with the last login. Over real HTTP
(uvicorn on 127.0.0.1), on SQLite and on PostgreSQL."""
from __future__ import annotations

import re
import time

import httpx
import pytest
from sqlalchemy import update

from _annotate_server import (Annotator, add_users, backend, make_db, parametrize_backends,  # noqa: F401
                              server_thread, sqlite_only)
from fgalign.annotate import accounts, db as annotate_db
from fgalign.annotate.admin import export
from fgalign.annotate.options import ExportConfig
from fgalign.cli import main
from fgalign.data import read_records

pytest_generate_tests = parametrize_backends


def row(table: str, name: str) -> str:
    """The line of `name` in a printed table."""
    return next(line for line in table.splitlines() if re.match(rf"│\s*{name}\s", line))


def link_of(out: str) -> str:
    return re.search(r"/login/(\S+)", out).group(1)


@sqlite_only  # no database involved
def test_each_users_action_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["annotate", "users", "add", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "fgalign annotate users add" in out and "--reviewer" in out and "--link-ttl" in out
    assert "logout" not in out  # add's help, not the list of actions
    assert main(["annotate", "users", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(action in out for action in ("add", "link", "list", "remove", "logout"))
    assert main(["annotate", "users", "frobnicate"]) == 2
    assert "unknown users action 'frobnicate'" in capsys.readouterr().err


def test_login_links_expire(tmp_path, capsys):
    db = make_db(tmp_path, [{"prompt": "P:", "chosen": " a.", "rejected": " b."}])
    assert main(["annotate", "users", "add", "ann", "--db", db, "--link-ttl", "0"]) == 2
    assert "--link-ttl" in capsys.readouterr().err
    assert main(["annotate", "users", "add", "ann", "--db", db, "--link-ttl", "1"]) == 0
    out = capsys.readouterr().out
    assert "for 1 hours" in out
    token = link_of(out)
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        assert accounts.link_owner(conn, token) == "ann"
        conn.execute(update(annotate_db.users).values(link_expires_at=time.time() - 1))
        assert accounts.link_owner(conn, token) is None and accounts.login(conn, token) is None
    engine.dispose()
    with server_thread(db) as base:
        r = httpx.get(f"{base}/login/{token}")
        assert r.status_code == 403 and "expired" in r.text and r.headers["content-type"].startswith("text/html")


def test_new_link_and_logout_end_sessions_and_list_shows_the_last_login(tmp_path, capsys):
    db = make_db(tmp_path, [{"prompt": "P:", "chosen": " a.", "rejected": " b."}])
    tokens = add_users(db, ["ann", "bob"])
    tokens.update(add_users(db, ["rita"], role="reviewer"))
    with server_thread(db) as base:
        first = Annotator(base, tokens["ann"])
        assert first.client.get("/api/session").status_code == 200
        assert main(["annotate", "users", "link", "ann", "--db", db]) == 0
        new_token = link_of(capsys.readouterr().out)
        assert first.client.get("/api/session").status_code == 401  # the new link ended the old session
        second, third = Annotator(base, new_token), None
        assert httpx.get(f"{base}/login/{tokens['ann']}").status_code == 403  # the old link is gone too
        assert main(["annotate", "users", "link", "bob", "--db", db, "--link-ttl", "2"]) == 0
        third = Annotator(base, link_of(capsys.readouterr().out))
        assert main(["annotate", "users", "logout", "ann", "--db", db]) == 0
        assert "1 sessions ended" in capsys.readouterr().out
        assert second.client.get("/api/session").status_code == 401
        assert third.client.get("/api/session").json()["user"] == "bob"  # others stay logged in
        for a in (first, second, third):
            a.close()
    assert main(["annotate", "users", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    today = time.strftime("%Y-%m-%d", time.gmtime())
    ann, rita = row(out, "ann"), row(out, "rita")
    assert today in ann and "none" in ann  # logged in today; no unused link left
    assert "reviewer" in rita and "never" in rita and "unused" in rita
    assert main(["annotate", "users", "logout", "nobody", "--db", db]) == 2


def test_removed_annotator_cannot_log_in_and_their_open_items_return(tmp_path, capsys):
    pairs = [{"prompt": f"P{i}:", "chosen": f" a{i}.", "rejected": f" b{i}."} for i in range(2)]
    db = make_db(tmp_path, pairs)
    tokens = add_users(db, ["ann", "bob"])
    with server_thread(db) as base:
        ann = Annotator(base, tokens["ann"])
        assert ann.submit(ann.next()["assignment"], " a0!").status_code == 200
        open_item = ann.next()["assignment"]
        assert main(["annotate", "users", "remove", "ann", "--db", db]) == 0
        assert "1 open items back in the queue" in capsys.readouterr().out
        assert ann.client.get("/api/session").status_code == 401
        assert ann.client.get(f"/item/{open_item}").status_code == 401
        bob = Annotator(base, tokens["bob"])
        assert bob.next()["prompt"] == "P1:"  # ann's open item went back to the queue
        assert main(["annotate", "users", "list", "--db", db]) == 0
        assert "removed" in row(capsys.readouterr().out, "ann")
        assert main(["annotate", "users", "link", "ann", "--db", db]) == 0  # a new link lets her back in
        back = Annotator(base, link_of(capsys.readouterr().out))
        assert back.client.get("/api/session").json()["user"] == "ann"
        ann.close(), bob.close(), back.close()
    export(ExportConfig(db=db, out=str(tmp_path / "e.jsonl")))
    (rec,) = read_records(tmp_path / "e.jsonl")
    assert rec.meta["annotator"] == "ann"  # what she submitted stays
