"""The `edit` stage with the task oracle and a local HF model: counts, filters, outputs, resume, bad input."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from fgalign.cli import main
from fgalign.data import read_records
from fgalign.editors.base import check_edit
from fgalign.editors.progress import progress_path
from fgalign.editors.stage import EditConfig, run
from fgalign.errors import InputError
from fgalign.eval.judges import TaskJudge

FRUITS = {"apple", "banana", "cherry", "pear", "plum"}


class FruitTask:
    """A tiny world: a list of fruits; any other word is a mistake the oracle replaces by 'apple'.

    Responses containing REWRITE are "fixed" by rewriting everything (an over-edit); BOOM crashes the
    oracle unless `FruitTask.healed` (a failure that a rerun with --retry-failed can fix).
    """

    name = "fruits"
    healed = False

    def prompts(self, split, n, seed):
        return [f"List {k} fruits:" for k in range(n)]

    def sft_examples(self, n, seed):
        return [("List fruits:", "apple, pear")] * n

    def score(self, prompt, response):
        words = [w.strip(" ,.") for w in response.split()]
        return sum(1 if w in FRUITS else -1 for w in words if w)

    def minimal_edit(self, prompt, response):
        if "REWRITE" in response:
            return "banana, cherry, plum, pear, apple, apple and more apples"
        if "BOOM" in response and not FruitTask.healed:
            raise RuntimeError("the oracle crashed")
        return ", ".join(w if w.strip(" ,.") in FRUITS else "apple" for w in response.split(", "))


def pair(rejected, prompt="List 3 fruits:", **meta):
    return {"prompt": prompt, "chosen": "apple, pear, plum", "rejected": rejected, "meta": meta}


ROWS = [
    pair("apple, pear, plum"),  # nothing wrong: no-op
    pair("banana, cherry, pear"),  # no-op
    pair("apple, rock, plum", source="a"),  # one wrong item: kept
    pair("stone, pear, banana, cherry"),  # kept
    pair("pear, dog, plum, cherry, banana"),  # kept
    pair("apple REWRITE"),  # the oracle rewrites everything: over-edit
]


@pytest.fixture
def fruit_task(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setattr(FruitTask, "healed", False)
    return f"{__name__}:FruitTask"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_task_editor_counts_fields_and_filters(tmp_path, fruit_task):
    src = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "edits.jsonl"
    counts = run(EditConfig(data=str(src), out=str(out), task=fruit_task, concurrency=2))
    assert (counts["kept"], counts["noop"], counts["overedit"], counts["failed"]) == (3, 2, 1, 0)
    assert counts["done"] == 6 and counts["reasked"] == 0  # the task oracle is never re-asked

    recs = read_records(out, require_edited=True)
    assert [r.rejected for r in recs] == [ROWS[i]["rejected"] for i in (2, 3, 4)]  # input order kept
    assert [r.edited for r in recs] == ["apple, apple, plum", "apple, pear, banana, cherry",
                                        "pear, apple, plum, cherry, banana"]
    for r in recs:
        assert r.meta["editor"] == "task:fruits"
        assert r.meta["edit_ratio"] == pytest.approx(check_edit(r.rejected, r.edited, 0.5).ratio, abs=1e-6)
        assert 0 < r.meta["edit_ratio"] <= 0.5
    assert recs[0].meta["source"] == "a"  # the input's meta survives
    saved = json.loads((tmp_path / "edits.jsonl.config.json").read_text())
    assert saved["stage"] == "edit" and saved["counts"]["kept"] == 3 and saved["config"]["task"] == fruit_task


def test_max_edit_ratio_decides_what_is_an_overedit(tmp_path, fruit_task):
    src = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    loose = run(EditConfig(data=str(src), out=str(tmp_path / "loose.jsonl"), task=fruit_task, max_edit_ratio=1.0))
    strict = run(EditConfig(data=str(src), out=str(tmp_path / "strict.jsonl"), task=fruit_task, max_edit_ratio=0.1))
    assert (loose["kept"], loose["overedit"]) == (4, 0)
    # "apple, rock, plum" -> "apple, apple, plum" changes 4 of 17 chars (0.24 > 0.1); the others change more
    assert (strict["kept"], strict["overedit"]) == (0, 4)


def test_failures_are_recorded_resume_skips_done_and_retry_failed(tmp_path, fruit_task):
    rows = ROWS + [pair("BOOM, pear")]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "edits.jsonl"
    cfg = EditConfig(data=str(src), out=str(out), task=fruit_task)
    first = run(cfg)
    assert first["failed"] == 1 and first["kept"] == 3 and first["edited_now"] == 7
    log = [json.loads(x) for x in progress_path(out).read_text().splitlines()]
    assert "settings" in log[0] and len(log) == 1 + 7
    assert [e["error"] for e in log[1:] if e["status"] == "failed"] == ["RuntimeError: the oracle crashed"]

    FruitTask.healed = True
    with pytest.raises(InputError, match="exists; pass --overwrite"):  # the output is never replaced silently
        run(cfg)
    again = run(dataclasses.replace(cfg, overwrite=True))  # finished entries (failed too) are not edited again
    assert again["edited_now"] == 0 and again["failed"] == 1
    retried = run(EditConfig(data=str(src), out=str(out), task=fruit_task, retry_failed=True))
    assert retried["edited_now"] == 1 and retried["failed"] == 0 and retried["kept"] == 4
    assert read_records(out)[-1].edited == "apple, pear"
    # a rerun under other settings must not mix two editors' work
    assert main(["edit", "--data", str(src), "--out", str(out), "--task", fruit_task, "--max-edit-ratio", "0.3"]) == 2


def test_bad_input_exits_2_and_writes_nothing(tmp_path, fruit_task, capsys):
    src = write_jsonl(tmp_path / "pairs.jsonl", [ROWS[0], {"prompt": "p", "chosen": "c"}])
    out = tmp_path / "edits.jsonl"
    assert main(["edit", "--data", str(src), "--out", str(out), "--task", fruit_task]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "rejected" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]  # no output, progress or config


def test_existing_output_untouched_when_a_run_fails(tmp_path, fruit_task):
    src = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "edits.jsonl"
    out.write_text("OLD\n")
    assert main(["edit", "--data", str(src), "--out", str(out), "--task", "no_such_module:Task"]) == 2
    assert main(["edit", "--data", str(src), "--out", str(out), "--task", fruit_task,
                 "--max-edit-ratio", "0"]) == 2
    assert main(["edit", "--data", str(src), "--out", str(out), "--editor", "openai", "--model", "m"]) == 2
    assert main(["edit", "--data", str(src), "--out", str(out), "--editor", "openai", "--base-url", "http://x/v1",
                 "--model", "m", "--template", str(tmp_path / "missing.txt")]) == 2
    assert out.read_text() == "OLD\n"


def test_conversational_records_keep_their_form(tmp_path, fruit_task):
    row = {"prompt": [{"role": "user", "content": "List 2 fruits:"}],
           "chosen": [{"role": "assistant", "content": "apple, pear"}],
           "rejected": [{"role": "assistant", "content": "apple, rock"}]}
    src = write_jsonl(tmp_path / "pairs.jsonl", [row])
    out = tmp_path / "edits.jsonl"
    assert run(EditConfig(data=str(src), out=str(out), task=fruit_task))["kept"] == 1
    assert read_records(out)[0].edited == [{"role": "assistant", "content": "apple, apple"}]


def test_default_world_oracle_edits_improve_the_score(tmp_path):
    pytest.importorskip("fgalign.tasks.lists")
    from fgalign.tasks.base import load_task

    task = load_task("default")
    demos = task.sft_examples(60, seed=1)  # the noisy demonstrator makes local mistakes
    rows = [{"prompt": p, "chosen": r, "rejected": r} for p, r in demos]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "edits.jsonl"
    counts = run(EditConfig(data=str(src), out=str(out), task="default"))
    assert counts["kept"] + counts["noop"] + counts["overedit"] == counts["records"] == 60
    assert counts["kept"] > 0 and counts["failed"] == 0
    judge = TaskJudge(task)
    for rec in read_records(out):
        assert rec.edited == task.minimal_edit(rec.prompt, rec.rejected)
        assert judge.compare(rec.prompt, rec.edited, rec.rejected) >= 0.5  # an oracle fix never makes it worse


def test_task_judge():
    judge = TaskJudge(FruitTask())
    assert judge.compare_many(["p"] * 3, ["apple", "rock", "pear"], ["rock", "apple", "plum"]) == [1.0, 0.0, 0.5]


def test_hf_editor_plumbing_and_minimality_filter(tmp_path, tiny_policy_dir):
    from fgalign.editors.hf import HFEditor

    rows = [pair(r) for r in ("apple, banana, cherry.", "cat, dog, horse, cow.", "red, blue.")]
    src = write_jsonl(tmp_path / "pairs.jsonl", rows)
    # A random model writes garbage: with ratio 1.0 every non-identical reply is kept ...
    loose = run(EditConfig(data=str(src), out=str(tmp_path / "loose.jsonl"), editor="hf", model=str(tiny_policy_dir),
                           max_edit_ratio=1.0, max_new_tokens=12, batch_size=2, device="cpu"))
    assert loose["kept"] + loose["noop"] == 3 and loose["overedit"] == loose["failed"] == 0
    for rec in read_records(tmp_path / "loose.jsonl"):
        assert rec.meta["editor"] == f"hf:{Path(tiny_policy_dir).name}" and isinstance(rec.edited, str)
    # ... and with a tight ratio the garbage is re-asked once, then dropped as over-edits.
    tight = run(EditConfig(data=str(src), out=str(tmp_path / "tight.jsonl"), editor="hf", model=str(tiny_policy_dir),
                           max_edit_ratio=0.05, max_new_tokens=12, batch_size=2, device="cpu"))
    assert tight["kept"] == 0 and tight["overedit"] + tight["noop"] == 3 and tight["reasked"] == tight["overedit"]

    # Batched greedy generation equals one-by-one generation (left padding does not change the answer).
    editor = HFEditor(tiny_policy_dir, device="cpu", batch_size=3, max_new_tokens=8)
    assert str(editor.model.dtype) == "torch.float32"  # "auto": the dtype the checkpoint was saved in
    items = [(r["prompt"], r["rejected"], None) for r in rows]
    assert editor.edit_many(items) == [editor.edit(*it) for it in items]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
