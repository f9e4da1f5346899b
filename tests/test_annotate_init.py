"""`fgalign annotate init` checks a pairs file the way a team needs: items longer than the reward model's
limit reported (and dropped with a flag), suspicious pairs warned about, guidelines read and refused when
unusable, non-string fields refused without offering chat messages; and the chips' rules (CJK, emoji,
whitespace) against the labels train-rm computes."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from _annotate_server import backend, make_db, new_db, parametrize_backends, sqlite_only, write_pairs  # noqa: F401
from fgalign.annotate import db as annotate_db
from fgalign.annotate.admin import init
from fgalign.annotate.options import InitConfig
from fgalign.cli import main
from fgalign.errors import InputError

pytest_generate_tests = parametrize_backends


def n_items(db: str) -> int:
    engine = annotate_db.open_db(db)
    with engine.begin() as conn:
        n = conn.execute(select(func.count()).select_from(annotate_db.items)).scalar_one()
    engine.dispose()
    return n


def test_items_longer_than_the_limit_are_reported_and_dropped_on_request(tmp_path, tiny_tokenizer_dir, capsys):
    long = " " + ", ".join(f"item{i}" for i in range(60)) + "."
    pairs = [{"prompt": "List:", "chosen": " a, b.", "rejected": " a, c."},
             {"prompt": "List many:", "chosen": " a.", "rejected": long},
             {"prompt": "List:", "chosen": " x.", "rejected": " y."}]
    src = write_pairs(tmp_path / "pairs.jsonl", pairs)
    kept = init(InitConfig(pairs=str(src), db=new_db(tmp_path, "a.db"), tokenizer=str(tiny_tokenizer_dir),
                           max_length=64))
    err = capsys.readouterr().err
    assert kept == {"items": 3, "too_long": 1, "dropped": 0}
    assert "1 pairs longer than the reward model's 64 tokens" in err and "pairs.jsonl:2:" in err
    assert "--drop-too-long drops them" in err
    dropped_db = new_db(tmp_path, "b.db")
    dropped = init(InitConfig(pairs=str(src), db=dropped_db, tokenizer=str(tiny_tokenizer_dir), max_length=64,
                              drop_too_long=True))
    assert dropped == {"items": 2, "too_long": 1, "dropped": 1} and n_items(dropped_db) == 2
    assert "left out (--drop-too-long)" in capsys.readouterr().err
    # the default limit is the model's (config.json next to the tokenizer), as train-rm finds it
    (tiny_tokenizer_dir / "config.json").write_text(json.dumps({"n_positions": 64}))
    try:
        assert init(InitConfig(pairs=str(src), db=new_db(tmp_path, "c.db"),
                               tokenizer=str(tiny_tokenizer_dir)))["too_long"] == 1
    finally:
        (tiny_tokenizer_dir / "config.json").unlink()
    assert main(["annotate", "init", "--pairs", str(src), "--db", new_db(tmp_path, "d.db"), "--drop-too-long"]) == 2
    assert "--drop-too-long" in capsys.readouterr().err  # counting tokens needs --tokenizer


def test_init_warns_about_pairs_with_nothing_to_prefer_or_edit(tmp_path, capsys):
    pairs = [{"prompt": "P1:", "chosen": " same.", "rejected": " same."},
             {"prompt": "P2:", "chosen": " a.", "rejected": "   "},
             {"prompt": "P3:", "chosen": " a.", "rejected": " b."}]
    make_db(tmp_path, pairs)
    err = capsys.readouterr().err
    assert "1 pairs where chosen equals rejected" in err and "pairs.jsonl:1" in err
    assert "1 pairs with an empty rejected response" in err and "pairs.jsonl:2" in err
    assert "pairs.jsonl:3" not in err


def test_guidelines_are_stored_and_a_bad_file_is_refused(tmp_path, capsys):
    src = write_pairs(tmp_path / "pairs.jsonl", [{"prompt": "P:", "chosen": " a.", "rejected": " b."}])
    assert main(["annotate", "init", "--pairs", str(src), "--db", new_db(tmp_path, "x.db"),
                 "--guidelines", str(tmp_path / "missing.md")]) == 2
    assert "missing.md" in capsys.readouterr().err
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe not utf-8")
    assert main(["annotate", "init", "--pairs", str(src), "--db", new_db(tmp_path, "y.db"),
                 "--guidelines", str(tmp_path / "bad.md")]) == 2
    assert "is not UTF-8" in capsys.readouterr().err
    (tmp_path / "ok.md").write_text("# Do this\n")
    db = new_db(tmp_path, "z.db")
    assert main(["annotate", "init", "--pairs", str(src), "--db", db, "--guidelines", str(tmp_path / "ok.md")]) == 0
    engine = annotate_db.open_db(db)
    assert annotate_db.read_settings(engine)["guidelines"] == "# Do this\n"
    engine.dispose()


@sqlite_only  # reads the file only
def test_a_non_string_field_is_refused_without_offering_chat_messages(tmp_path):
    from fgalign.annotate.admin import read_pairs

    path = write_pairs(tmp_path / "p.jsonl", [{"prompt": "P:", "chosen": " a.", "rejected": 42}])
    with pytest.raises(InputError, match="line 1, field 'rejected'.*expected a string, got int") as e:
        read_pairs(str(path))
    assert "message" not in str(e.value)


@sqlite_only  # no database
def test_chips_stand_for_train_rm_labels_token_by_token(tiny_tokenizer):
    from fgalign.annotate.diffview import diff
    from fgalign.labels.project import label_pair

    for original, edited in [(" 苹果, 🍎 土豆.", " 苹果, 🍌 香蕉."), (" a  b\n\tc", " a b\nc"),
                             (" red, beige, green.", " red, blue, green.")]:
        view = diff(original, edited, tiny_tokenizer, "chars")
        lab = label_pair(tiny_tokenizer, "", original, edited, mode="chars")
        for chips, labels in ((view["original_tokens"], lab["rejected_labels"]),
                              (view["edited_tokens"], lab["edited_labels"])):
            assert [x for c in chips for x in c["labels"]] == labels
            assert all("\ufffd" not in c["t"] for c in chips)
            assert all(c["t"].strip() for c in chips)  # nothing invisible: whitespace shows as · ↵ →
    cjk = diff(" 苹果, 🍎 土豆.", " 苹果, 🍌 香蕉.", tiny_tokenizer, "chars")
    assert [c["t"] for c in cjk["edited_tokens"] if len(c["labels"]) > 1][:3] == ["苹", "果", "🍌"]
    ws = diff(" a  b\n\tc", " a  b\n\tc", tiny_tokenizer, "chars")["original_tokens"]
    assert {c["t"] for c in ws if c["ws"]} >= {"·", "↵"} and all(c["l"] == 0 for c in ws)


@sqlite_only  # tests the harness: what happens where no PostgreSQL server can start
def test_a_missing_postgresql_server_skips_here_and_fails_under_ci(monkeypatch):
    import _annotate_server

    monkeypatch.setattr(_annotate_server, "pg_binary", lambda name: None)
    monkeypatch.setattr(_annotate_server, "_POSTGRES", {})
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI: RuntimeError: no PostgreSQL server"):
        _annotate_server.postgres()
    monkeypatch.setattr(_annotate_server, "_POSTGRES", {})
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server"):
        _annotate_server.postgres()
