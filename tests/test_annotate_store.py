"""fgalign annotate without a server: init, assignment with overlap and timeout, agreement, export, bad input."""
from __future__ import annotations

import json
import re
import time

import pytest
from sqlalchemy import func, select, update

from _annotate_server import (PAIRS, add_users, backend, make_db, new_db, parametrize_backends,  # noqa: F401
                              sqlite_only, write_pairs)
from fgalign.annotate import db as annotate_db, queue
from fgalign.annotate.admin import export, stats
from fgalign.annotate.agreement import cohen_kappa
from fgalign.annotate.options import DEFAULT_MAX_EDIT_RATIO, ExportConfig, StatsConfig
from fgalign.cli import main
from fgalign.errors import InputError

pytest_generate_tests = parametrize_backends


def user_ids(db: str) -> dict[str, int]:
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        out = {r.name: r.id for r in conn.execute(select(annotate_db.users.c.name, annotate_db.users.c.id))}
    engine.dispose()
    return out


def test_init_refuses_an_existing_database_and_bad_pairs(tmp_path, capsys):
    db = make_db(tmp_path)
    assert main(["annotate", "init", "--pairs", str(tmp_path / "pairs.jsonl"), "--db", db]) == 2
    assert "already exists" in capsys.readouterr().err
    engine = annotate_db.open_db(db)  # the first database is untouched
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(annotate_db.items)).scalar_one() == len(PAIRS)
    engine.dispose()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + '{"prompt": "p", "chosen": "c"}\n')
    assert main(["annotate", "init", "--pairs", str(bad), "--db", str(tmp_path / "new.db")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 2, field 'rejected'" in err
    assert not (tmp_path / "new.db").exists()
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p",\n')
    assert main(["annotate", "init", "--pairs", str(tmp_path / "broken.jsonl"), "--db", str(tmp_path / "n2.db")]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["annotate", "init", "--pairs", str(tmp_path / "pairs.jsonl"), "--db", str(tmp_path / "n3.db"),
                 "--overlap", "0"]) == 2
    assert main(["annotate", "stats", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no such annotation database" in capsys.readouterr().err


def test_schema_version_guards_the_database(tmp_path):
    db = make_db(tmp_path)
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        conn.execute(update(annotate_db.settings).where(annotate_db.settings.c.key == "schema_version")
                     .values(value="999"))
    engine.dispose()
    with pytest.raises(InputError, match="schema version 999"):
        annotate_db.open_db(db)


@sqlite_only
def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError):
        annotate_db.open_db(str(tmp_path / "junk.db"))


def test_overlap_distinct_annotators_and_timeout(tmp_path):
    db = make_db(tmp_path, PAIRS[:2], overlap=2)
    add_users(db, ["a", "b", "c"])
    ids = user_ids(db)
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        a1 = queue.claim_next(conn, ids["a"], 2, timeout=60)
        assert queue.claim_next(conn, ids["a"], 2, timeout=60) == a1  # the open one comes back
        b1 = queue.claim_next(conn, ids["b"], 2, timeout=60)
        c1 = queue.claim_next(conn, ids["c"], 2, timeout=60)
        item = {x: queue.get(conn, ids[u], x).item_id for u, x in (("a", a1), ("b", b1), ("c", c1))}
        assert item[a1] == item[b1] != item[c1]  # item 1 is full (2 places), c gets item 2
        assert queue.get(conn, ids["b"], a1) is None  # not b's
        queue.submit(conn, queue.get(conn, ids["a"], a1), "edited", " apple, pear, plum.", 2)
        a2 = queue.claim_next(conn, ids["a"], 2, timeout=60)
        assert queue.get(conn, ids["a"], a2).item_id == item[c1]
        assert queue.claim_next(conn, ids["c"], 2, timeout=60) == c1
        # c abandons: after the timeout b (who still needs an item) gets c's place
        queue.submit(conn, queue.get(conn, ids["b"], b1), "identical", None, 2)
        assert queue.claim_next(conn, ids["b"], 2, timeout=60) is None  # item 2 is full (a, c)
        conn.execute(update(annotate_db.assignments).where(annotate_db.assignments.c.id == c1)
                     .values(active_at=time.time() - 120))
        b2 = queue.claim_next(conn, ids["b"], 2, timeout=60)
        assert queue.get(conn, ids["b"], b2).item_id == item[c1]
        assert queue.get(conn, ids["c"], c1).status == "expired"
        queue.submit(conn, queue.get(conn, ids["b"], b2), "rewrite", None, 2)
        with pytest.raises(queue.Refused, match="handed to another annotator") as e:
            queue.submit(conn, queue.get(conn, ids["c"], c1), "edited", " red, blue.", 2)
        assert e.value.status == 409
        queue.submit(conn, queue.get(conn, ids["a"], a2), "edited", " red, blue.", 2)
        assert queue.claim_next(conn, ids["c"], 2, timeout=60) is None
    engine.dispose()


def test_bad_submissions_are_refused_with_a_message(tmp_path):
    db = make_db(tmp_path, PAIRS[:1])
    add_users(db, ["a"])
    uid = user_ids(db)["a"]
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        a = queue.get(conn, uid, queue.claim_next(conn, uid, 1, 60))
        with pytest.raises(queue.Refused, match="empty"):
            queue.submit(conn, a, "edited", "   ", 1)
        with pytest.raises(queue.Refused, match="at most 20,000"):
            queue.submit(conn, a, "edited", "x" * 20_001, 1)
        with pytest.raises(queue.Refused, match="unknown action"):
            queue.submit(conn, a, "delete-everything", "x", 1)
        queue.submit(conn, a, "edited", a.rejected, 1)  # unchanged text: the "nothing to fix" verdict
        assert queue.get(conn, uid, a.id).verdict == "identical"
    engine.dispose()


@sqlite_only
def test_cohen_kappa_by_hand():
    a = [0, 0, -1, 0, -1, 0, 0, 0, -1, 0]
    b = [0, -1, -1, 0, 0, 0, 0, 0, -1, 0]
    # observed 8/10; chance (3·3 + 7·7)/100 = 0.58; kappa (0.8 − 0.58)/(1 − 0.58) (sklearn gives the same)
    assert cohen_kappa(a, b) == pytest.approx(0.22 / 0.42)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) is None  # chance agreement 1: undefined, not 1 or NaN


def _submit_all(db: str, edits: dict[str, list[tuple[str, str | None]]]) -> None:
    ids = user_ids(db)
    engine = annotate_db.open_db(db)
    settings = annotate_db.read_settings(engine)
    for user, todo in edits.items():
        for verdict, text in todo:
            with engine.begin() as conn:
                a = queue.get(conn, ids[user], queue.claim_next(conn, ids[user], int(settings["overlap"]), 60))
                queue.submit(conn, a, verdict, text, int(settings["overlap"]), seconds=3.0)
    engine.dispose()


def test_stats_agreement_and_export_feed_train_rm_reader(tmp_path, capsys):
    from fgalign.data import ReadStats, read_records

    db = make_db(tmp_path, PAIRS[:3], overlap=2)
    add_users(db, ["ann", "bob"])
    _submit_all(db, {
        "ann": [("edited", " apple, pear, plum."), ("edited", " red, blue."), ("rewrite", None)],
        "bob": [("edited", " apple, pear, plum."), ("edited", " red blue."), ("edited", " cat, dog, cow.")],
    })
    result = stats(StatsConfig(db=db))
    assert result["submissions"] == 6 and result["items_complete"] == 3
    ag = result["agreement"]
    assert ag["annotator_pairs"] == 2 and ag["identical_share"] == 0.5  # item 3 has a rewrite: not compared
    assert 0.0 < ag["kappa"] < 1.0  # "stupid" deleted by both; bob also dropped the comma
    assert result["annotators"]["ann"]["rewrite"] == 1
    assert [(p["source"], p["identical_share"]) for p in result["pairs"]] == [("pairs.jsonl:1", 1.0),
                                                                             ("pairs.jsonl:2", 0.0)]
    assert result["pairs"][0]["kappa"] == pytest.approx(1.0) and 0 < result["pairs"][1]["kappa"] < 1
    assert ag["item_agreement"] == pytest.approx((1.0 + result["pairs"][1]["kappa"]) / 2)
    out = capsys.readouterr().out
    assert "Cohen's kappa, pooled over labels" in out and "agreement per item" in out
    assert "{" not in out  # tables, no Python dict (the verdicts used to print as one)
    assert re.search(r"verdict: rewrite\s*│\s*1", out) and re.search(r"pairs\.jsonl:2\s*│\s*0\.571", out)

    out = tmp_path / "edits.jsonl"
    summary = export(ExportConfig(db=db, out=str(out), adjudicate="majority"))
    assert summary["records"] == 1  # item 1 agreed; item 2 and 3 tie 1:1
    assert summary["left_out"] == {"pairs without a majority (tie)": 2}
    recs = read_records(out, require_edited=True)
    assert recs[0].edited == " apple, pear, plum." and recs[0].meta["votes"] == "2/2"
    saved = json.loads((tmp_path / "edits.jsonl.config.json").read_text())
    assert "\"label_mode_shown\": \"chars\"" in json.dumps(saved) and "train-rm --label-mode chars" in capsys.readouterr().out

    export(ExportConfig(db=db, out=str(out), adjudicate="all"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5  # 6 submissions, one rewrite left out
    assert {"annotator", "seconds", "edit_ratio"} <= set(rows[0]["meta"])
    assert rows[0]["meta"]["seconds"] == 3.0 and 0 < rows[0]["meta"]["edit_ratio"] < 1
    stats_ = ReadStats()
    assert len(read_records(out, require_edited=True, stats=stats_)) == 5
    first = export(ExportConfig(db=db, out=str(out), adjudicate="first"))
    assert first["records"] == 2 and first["left_out"] == {"rewrite verdicts (not edits)": 1}


def test_export_of_nothing_is_an_error_and_leaves_no_file(tmp_path, capsys):
    db = make_db(tmp_path, PAIRS[:1])
    assert main(["annotate", "export", "--db", db, "--out", str(tmp_path / "e.jsonl")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "e.jsonl").exists()


def test_users_cli_prints_a_one_time_link(tmp_path, capsys):
    db = make_db(tmp_path, PAIRS[:1])
    assert main(["annotate", "users", "add", "alice", "--db", db]) == 0
    link = capsys.readouterr().out.strip().splitlines()[-1]
    token = link.rsplit("/", 1)[1]
    assert link.startswith("http://127.0.0.1:8000/login/") and len(token) >= 40
    assert main(["annotate", "users", "add", "alice", "--db", db]) == 2
    assert main(["annotate", "users", "add", "bad name!", "--db", db]) == 2
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        stored = [str(v) for row in conn.execute(select(annotate_db.users)) for v in row]
    engine.dispose()
    assert token not in " ".join(stored)  # stored hashed only
    assert main(["annotate", "users", "link", "nobody", "--db", db]) == 2


@sqlite_only
def test_minimality_threshold_is_the_edit_stage_default():
    from fgalign.editors.stage import EditConfig

    assert DEFAULT_MAX_EDIT_RATIO == EditConfig.__dataclass_fields__["max_edit_ratio"].default


@sqlite_only
def test_pairs_with_chat_messages_are_refused_with_their_line(tmp_path):
    from fgalign.annotate.admin import read_pairs

    msgs = [{"role": "user", "content": "hi"}]
    path = write_pairs(tmp_path / "chat.jsonl", [PAIRS[0], {"prompt": msgs, "chosen": [{"role": "assistant",
                       "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}])
    with pytest.raises(InputError, match="line 2"):
        read_pairs(str(path))


def test_export_trains_a_reward_model_and_feeds_the_pipeline(tmp_path, tiny_policy_dir, backend):
    from fgalign.pipeline import PipelineConfig, check_same_edits, use_edits
    from fgalign.train.reward import RewardConfig, run as train_rm

    db = make_db(tmp_path, PAIRS, overlap=1)
    add_users(db, ["ann"])
    _submit_all(db, {"ann": [("edited", " apple, pear, plum."), ("edited", " red, blue."),
                             ("edited", " cat, dog, cow."), ("identical", None)]})
    out = tmp_path / "edits.jsonl"
    export(ExportConfig(db=db, out=str(out)))
    if backend == "postgresql":
        return  # the rest does not read the database
    rm = tmp_path / "rm"
    train_rm(RewardConfig(data=str(out), out=str(rm), model=str(tiny_policy_dir), batch_size=2, max_steps=2,
                          warmup_ratio=0.0, logging_steps=100, device="cpu"))
    assert (rm / "model.safetensors").exists()

    assert "edits" in PipelineConfig.__dataclass_fields__
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    use_edits(str(out), run_dir / "edits.jsonl")
    check_same_edits(str(out), run_dir / "edits.jsonl")
    other = write_pairs(tmp_path / "other.jsonl", [{**PAIRS[0], "edited": " apple, kiwi, plum."}])
    with pytest.raises(InputError, match="differs from --edits"):
        check_same_edits(str(other), run_dir / "edits.jsonl")
    bad = tmp_path / "bad_edits.jsonl"
    bad.write_text(out.read_text() + '{"prompt": "p", "chosen": 3, "rejected": "r"}\n')
    with pytest.raises(InputError, match="line 5, field 'chosen'"):
        use_edits(str(bad), tmp_path / "x.jsonl")
    no_edits = write_pairs(tmp_path / "pairs_only.jsonl", PAIRS)
    with pytest.raises(InputError, match="no record has an edit"):
        use_edits(str(no_edits), tmp_path / "y.jsonl")


@sqlite_only
def test_pipeline_refuses_a_bad_edits_file_before_training(tmp_path, capsys):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    bad = tmp_path / "edits.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c", "rejected": "r", "edited": "e"}\n{oops\n')
    assert main(["pipeline", "--config", str(config), "--out", str(tmp_path / "run"), "--edits", str(bad)]) == 2
    assert f"{bad}, line 2" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sft").exists()


@sqlite_only
def test_any_sqlalchemy_url_is_accepted(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'by_url.db'}"
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS[:2])
    assert main(["annotate", "init", "--pairs", str(pairs), "--db", url]) == 0
    assert main(["annotate", "init", "--pairs", str(pairs), "--db", url]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["annotate", "users", "add", "ann", "--db", url]) == 0
    engine = annotate_db.open_db(url)
    assert annotate_db.read_settings(engine)["schema_version"] == str(annotate_db.SCHEMA_VERSION)
    assert engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()
