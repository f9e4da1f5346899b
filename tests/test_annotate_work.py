"""The annotation work beyond one edit: resubmission history, skip for now, comments and flags, the
reviewer's decisions and what export makes of them, per-item agreement, and the schema migration.
Each test runs on SQLite and on PostgreSQL (see _annotate_server.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from _annotate_server import add_users, backend, make_db, parametrize_backends  # noqa: F401 - fixture
from fgalign.annotate import db as annotate_db, queue, review
from fgalign.annotate.admin import export, stats
from fgalign.annotate.agreement import compute, pair_agreement
from fgalign.annotate.options import ExportConfig, StatsConfig
from fgalign.cli import main
from fgalign.data import read_records
from fgalign.errors import InputError

pytest_generate_tests = parametrize_backends
PAIRS = [{"prompt": f"List {i}:", "chosen": f" good {i}.", "rejected": f" bad {i} here."} for i in range(4)]


class Work:
    """Annotators working through the queue functions, one transaction per step (as the server does)."""

    def __init__(self, db: str, overlap: int = 1):
        self.engine, self.overlap = annotate_db.open_db(db), overlap
        with self.engine.begin() as conn:
            self.ids = {r.name: r.id for r in conn.execute(select(annotate_db.users.c.name, annotate_db.users.c.id))}

    def tx(self, fn, *args):
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def next(self, user: str) -> queue.Assignment | None:
        aid = self.tx(queue.claim_next, self.ids[user], self.overlap, 600)
        return None if aid is None else self.tx(queue.get, self.ids[user], aid)

    def get(self, user: str, aid: int) -> queue.Assignment:
        return self.tx(queue.get, self.ids[user], aid)

    def submit(self, user: str, a: queue.Assignment, text: str | None, verdict: str = "edited") -> None:
        self.tx(queue.submit, self.get(user, a.id), verdict, text, self.overlap, 2.0)

    def close(self) -> None:
        self.engine.dispose()


def test_resubmission_keeps_history_export_takes_the_latest_and_stats_counts_it(tmp_path):
    db = make_db(tmp_path, PAIRS[:2])
    add_users(db, ["ann"])
    w = Work(db)
    a = w.next("ann")
    w.submit("ann", a, " fixed 0 here.")
    w.submit("ann", a, " better 0 here.")  # went back and changed it
    w.submit("ann", a, None, "identical")  # then "nothing to fix" after all, then a last edit
    w.submit("ann", a, " good 0.")
    history = w.tx(queue.history, a.id)
    assert [h["edited"] for h in history] == [" fixed 0 here.", " better 0 here.", a.rejected, " good 0."]
    assert [h["verdict"] for h in history] == ["edited", "edited", "identical", "edited"]
    assert all(h["submitted_at"] > 0 for h in history)
    assert [h["submitted_at"] for h in history] == sorted(h["submitted_at"] for h in history)
    w.submit("ann", w.next("ann"), " good 1.")
    w.close()
    out = tmp_path / "e.jsonl"
    export(ExportConfig(db=db, out=str(out), adjudicate="all"))
    recs = {r.prompt: r for r in read_records(out)}
    assert recs["List 0:"].edited == " good 0." and recs["List 0:"].meta["revisions"] == 4
    assert recs["List 1:"].meta["revisions"] == 1
    result = stats(StatsConfig(db=db))
    assert result["submissions"] == 2 and result["revisions"] == 3


def test_skip_for_now_hands_out_the_rest_first_and_keeps_the_place(tmp_path):
    db = make_db(tmp_path, PAIRS[:3], overlap=1)
    add_users(db, ["ann", "bob"])
    w = Work(db)
    first = w.next("ann")
    assert w.tx(queue.progress, w.ids["ann"], 1)["left"] == 3
    w.tx(queue.skip, first, " bad 0 half-fixed", 3.0)
    second = w.next("ann")
    assert second.item_id != first.item_id
    assert w.next("bob").item_id not in (first.item_id, second.item_id)  # ann's skipped item keeps its place
    w.submit("ann", second, " good.")
    back = w.next("ann")  # nothing new left for ann: the skipped one comes back, draft included
    assert back.id == first.id and back.draft == " bad 0 half-fixed" and not back.skipped
    assert w.tx(queue.progress, w.ids["ann"], 1)["left"] == 1
    w.submit("ann", back, None, "rewrite")
    with pytest.raises(queue.Refused, match="only an open item"):
        w.tx(queue.skip, w.get("ann", back.id))
    assert w.next("ann") is None and w.tx(queue.progress, w.ids["ann"], 1)["left"] == 0
    w.close()


def test_comment_and_flag_are_kept_exported_and_counted(tmp_path):
    db = make_db(tmp_path, PAIRS[:2])
    add_users(db, ["ann"])
    w = Work(db)
    a = w.next("ann")
    w.tx(queue.note, a, "  the prompt is ambiguous  ", True)
    with pytest.raises(queue.Refused, match="at most 2,000"):
        w.tx(queue.note, a, "x" * 2001, None)
    w.submit("ann", a, " good 0.")
    b = w.next("ann")
    w.submit("ann", b, " good 1.")
    w.tx(queue.note, w.get("ann", b.id), "", False)  # an empty comment is no comment
    w.close()
    export(ExportConfig(db=db, out=str(tmp_path / "e.jsonl")))
    recs = {r.prompt: r for r in read_records(tmp_path / "e.jsonl")}
    assert recs["List 0:"].meta["comment"] == "the prompt is ambiguous" and recs["List 0:"].meta["flagged"] is True
    assert "comment" not in recs["List 1:"].meta and "flagged" not in recs["List 1:"].meta
    result = stats(StatsConfig(db=db))
    assert result["flagged"] == 1 and result["commented"] == 1


def test_reviewer_decisions_win_over_adjudication(tmp_path):
    db = make_db(tmp_path, PAIRS[:3], overlap=2)
    add_users(db, ["ann", "bob"])
    add_users(db, ["rita"], role="reviewer")
    w = Work(db, overlap=2)
    for user, edits in {"ann": [" good 0.", " good 1.", " good 2."],
                        "bob": [" fine 0.", " good 1.", None]}.items():
        for text in edits:
            w.submit(user, w.next(user), text, "edited" if text else "rewrite")
    todo = w.tx(review.disagreements)
    assert [(q["source"], q["annotators"], q["reviewed"]) for q in todo] == [
        ("pairs.jsonl:1", ["ann", "bob"], False), ("pairs.jsonl:3", ["ann", "bob"], False)]
    found = w.tx(review.item_for_review, todo[0]["item"])
    bobs = next(s for s in found["submissions"] if s.user == "bob")
    w.tx(review.resolve, w.ids["rita"], todo[0]["item"], bobs.id)
    w.tx(review.resolve, w.ids["rita"], todo[1]["item"], None, None, "rewrite")
    with pytest.raises(queue.Refused, match="not one of this item's"):
        w.tx(review.resolve, w.ids["rita"], todo[0]["item"], 10_000)
    with pytest.raises(queue.Refused, match="empty"):
        w.tx(review.resolve, w.ids["rita"], todo[0]["item"], None, "  ")
    assert [q["reviewed"] for q in w.tx(review.disagreements)] == [True, True]
    w.close()
    out = tmp_path / "e.jsonl"
    summary = export(ExportConfig(db=db, out=str(out), adjudicate="majority"))
    recs = {r.prompt: r for r in read_records(out)}
    assert recs["List 0:"].edited == " fine 0." and recs["List 0:"].meta["reviewed_by"] == "rita"
    assert recs["List 0:"].meta["accepted"] == "bob" and recs["List 0:"].meta["annotator"] == "bob"
    assert recs["List 1:"].edited == " good 1." and "reviewed_by" not in recs["List 1:"].meta  # agreed: no review
    assert "List 2:" not in recs and summary["left_out"] == {"reviewed as needing a rewrite": 1}


def test_item_agreement_is_not_swamped_by_one_long_item(tmp_path):
    long_text = " " + " ".join(f"word{i}" for i in range(300)) + "."
    fixed_long = " " + " ".join(f"word{i}" for i in range(300) if i % 5) + "."  # 60 words out
    pairs = [{"prompt": "Long:", "chosen": " x.", "rejected": long_text}] + PAIRS
    db = make_db(tmp_path, pairs, overlap=2)
    add_users(db, ["ann", "bob"])
    w = Work(db, overlap=2)
    for user in ("ann", "bob"):
        w.submit(user, w.next(user), fixed_long)  # both fix the long one the same way
        for i in range(4):  # on the short ones they differ every time
            w.submit(user, w.next(user), f" good {i} here." if user == "ann" else f" bad {i} there.")
    result = w.tx(compute, 2)
    w.close()
    ag = result["agreement"]
    assert ag["kappa"] > 0.8  # pooled: the long item's 300 agreeing labels dominate
    assert ag["items_compared"] == 5 and ag["items_with_different_edits"] == 4
    assert ag["item_agreement"] < 0.5  # per item: 4 of 5 items disagree
    assert pair_agreement([0, 0, 0], [0, 0, 0]) == 1.0 and pair_agreement([0, 0], [0, -1]) == 0.0


def test_a_version_1_database_is_refused_then_migrated(tmp_path, capsys):
    db = make_db(tmp_path, PAIRS[:2], overlap=1)
    add_users(db, ["ann"])
    w = Work(db)
    w.submit("ann", w.next("ann"), " good 0.")
    w.close()
    engine = annotate_db.open_db(db)  # back to version 1: what that release's tables looked like
    with engine.begin() as conn:
        for table in ("reviews", "submissions"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        for table, columns in {"users": ("role", "link_expires_at", "last_login_at", "removed_at"),
                               "assignments": ("skipped_at", "comment", "flagged")}.items():
            for column in columns:
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute(update(annotate_db.settings).where(annotate_db.settings.c.key == "schema_version")
                     .values(value="1"))
    engine.dispose()
    with pytest.raises(InputError, match="schema version 1.*back it up, then run `fgalign annotate migrate"):
        annotate_db.open_db(db)
    assert main(["annotate", "migrate", "--db", db]) == 0
    assert "1 → 2" in capsys.readouterr().out
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(annotate_db.submissions)).scalar_one() == 1
        assert conn.execute(select(annotate_db.users.c.role)).scalar_one() == "annotator"
    engine.dispose()
    assert main(["annotate", "migrate", "--db", db]) == 0
    assert "nothing to do" in capsys.readouterr().out
    export(ExportConfig(db=db, out=str(tmp_path / "e.jsonl")))
    (rec,) = read_records(tmp_path / "e.jsonl")
    assert rec.edited == " good 0." and rec.meta["revisions"] == 1
