"""Issue 14: every bad input gets exit 2 and one line naming the option or field; nothing is accepted silently.

Each case ran into a traceback, a silent acceptance or minutes of hub connections before.
"""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _rm_data import make_edit_records
from fgalign.cli import main
from fgalign.data.io import write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rms(tiny_policy_dir, tmp_path_factory):
    """An untrained token RM and sequence RM on the tiny policy (a zero head: enough to score and refuse)."""
    from fgalign.models.reward import build_reward_model

    root = tmp_path_factory.mktemp("rms")
    for level in ("token", "sequence"):
        build_reward_model(tiny_policy_dir, level, "mistake-bce" if level == "token" else "bt").save(root / level)
    return root


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_too_long_input_is_refused_or_counted(rms, tmp_path, capsys):
    long = " apple," * 20000  # 140k characters; the tiny RM has 96 positions (its tokenizer claims 1024 once)
    heat = tmp_path / "heat.html"
    assert main(["show", "--rm", str(rms / "token"), "--prompt", "List 3 fruits:", "--response", long,
                 "--out", str(heat)]) == 2
    assert "but the reward model reads at most 96" in _err(capsys) and not heat.exists()
    records = make_edit_records(3)
    records[1]["chosen"] = long
    data = tmp_path / "data.jsonl"
    write_jsonl(data, records)
    assert main(["eval-rm", "--rm", str(rms / "token"), "--data", str(data), "--out", str(tmp_path / "m.json")]) == 0
    assert "skipped 1 of 3 records longer than the reward model's 96 positions" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["n_skipped_too_long"] == 1
    write_jsonl(data, [records[1]])
    assert main(["eval-rm", "--rm", str(rms / "token"), "--data", str(data), "--out", str(tmp_path / "n.json")]) == 2
    assert "every record is longer than the reward model's 96 positions" in _err(capsys)


@pytest.mark.parametrize("argv, field, says", [
    (["sample", "--num-prompts", "0"], "--num-prompts", "expected a number of prompts >= 1, got 0"),
    (["eval", "--num-prompts", "0"], "--num-prompts", "expected a number of prompts >= 1, got 0"),
    (["sft", "--num-examples", "-5"], "--num-examples", "expected an integer >= 1, got -5"),
    (["sft", "--tiny.d-model", "30", "--tiny.n-head", "4"], "--tiny.d-model", "d-model 30 is not divisible by n-head 4"),
    (["sft", "--epochs", "0"], "--epochs", "expected a number > 0, got 0.0"),
    (["train-rm", "--epochs", "0"], "--epochs", "expected a number > 0, got 0.0"),
])
def test_counts_and_shapes_are_checked_first(argv, field, says, tiny_policy_dir, tmp_path, capsys):
    stage = argv[0]
    paths = {"sample": ["--policy", str(tiny_policy_dir), "--out", str(tmp_path / "p.jsonl")],
             "eval": ["--policy", str(tiny_policy_dir), "--reference", str(tiny_policy_dir),
                      "--out", str(tmp_path / "e.json")],
             "sft": ["--out", str(tmp_path / "sft")],
             "train-rm": ["--data", "x.jsonl", "--model", str(tiny_policy_dir), "--out", str(tmp_path / "rm")]}
    assert main([*argv, *paths[stage]]) == 2
    err = _err(capsys)
    assert f"field '{field}': {says}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_pipeline_yaml_types_are_checked_before_any_stage(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("task: default\nsft: {epochs: two}\n")
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = _err(capsys)
    assert f"{cfg}, field 'sft.epochs': expected a number, got 'two'" in err, err
    assert not (tmp_path / "run").exists()  # refused before any stage: nothing written
    cfg.write_text("task: default\nsample: {num_prompts: 0}\n")
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert f"{cfg}, field 'sample.num_prompts': expected a number of prompts >= 1, got 0" in _err(capsys)
    cfg.write_text("task: default\nsample: {max_new_tokens: 0}\n")  # a sampling option, given flat
    assert main(["pipeline", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert f"{cfg}, field 'sample.max_new_tokens': expected an integer >= 1, got 0" in _err(capsys)


class _Marker:
    """Unpickling this creates a file: proof that a pickle was (not) loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickle_only_model_is_refused_unread(tiny_policy_dir, tmp_path, capsys):
    model = tmp_path / "bin_only"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_policy_dir / name, model / name)
    marker = tmp_path / "UNPICKLED"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Marker(marker)))
    data = tmp_path / "edits.jsonl"
    write_jsonl(data, make_edit_records(2))
    for argv in (["sft", "--model", str(model), "--out", str(tmp_path / "sft")],
                 ["train-rm", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "rm")]):
        assert main(argv) == 2
        err = _err(capsys)
        assert "safetensors weights are required; it holds only pytorch_model.bin (a pickle, not loaded)" in err
        assert "save_pretrained" in err  # how to convert
    assert not marker.exists()


def test_missing_local_model_is_named_not_a_hub_repo(tmp_path, capsys):
    assert main(["sft", "--model", "/nonexistent", "--out", str(tmp_path / "sft")]) == 2
    err = _err(capsys)
    assert "/nonexistent: no such local directory" in err and "Repo id" not in err and "--allow-hub" in err


def test_package_is_offline_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    got = subprocess.run([sys.executable, "-c", "import fgalign, os; print(os.environ['HF_HUB_OFFLINE'])"],
                         env=env, capture_output=True, text=True)
    assert got.stdout.strip() == "1"
    # A hub endpoint that refuses every connection: offline, nothing tries it (before, 19 attempts were made).
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-m", "fgalign.cli", "sft", "--model", "gpt2", "--out",
                           str(tmp_path / "sft")], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "gpt2: no such local directory" in done.stderr
    assert "127.0.0.1:9" not in done.stderr and "Retrying" not in done.stderr and "Connection" not in done.stderr


def _unwritable() -> Path:
    import tempfile

    try:
        tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder on this machine")


@pytest.mark.parametrize("stage", ["sample", "label", "show", "eval"])
def test_unwritable_output_is_refused_before_the_work(stage, tiny_policy_dir, tiny_tokenizer_dir, rms, tmp_path,
                                                      capsys):
    data = tmp_path / "edits.jsonl"
    write_jsonl(data, make_edit_records(3))
    for folder, says in ((_unwritable(), "is not writable"), (data, "is a file, not a folder")):
        out = folder / "out.html"
        argv = {"sample": ["sample", "--policy", str(tiny_policy_dir), "--num-prompts", "4"],
                "label": ["label", "--data", str(data), "--tokenizer", str(tiny_tokenizer_dir)],
                "show": ["show", "--rm", str(rms / "token"), "--prompt", "p", "--response", "r"],
                "eval": ["eval", "--policy", str(tiny_policy_dir), "--reference", str(tiny_policy_dir), "--num-prompts", "4"]}
        assert main([*argv[stage], "--out", str(out)]) == 2
        err = _err(capsys)
        assert f"{out}, field '--out': cannot write here" in err and says in err


def test_sequence_rm_on_identical_pairs_warns_and_refuses_when_none_left(tiny_policy_dir, tmp_path, capsys):
    records = make_edit_records(6)
    for r in records[:2]:
        r["rejected"] = r["chosen"]
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, records)
    argv = ["train-rm", "--level", "sequence", "--data", str(data), "--model", str(tiny_policy_dir), "--max-steps",
            "1", "--batch-size", "2", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "rm")]) == 0
    assert "warning: skipped 2 of 6 records whose 'chosen' equals 'rejected'" in capsys.readouterr().out
    write_jsonl(data, records[:2])
    assert main([*argv, "--out", str(tmp_path / "rm2")]) == 2
    assert "field 'chosen': no usable pair: in all 2 records 'chosen' equals 'rejected'" in _err(capsys)


def test_token_reward_from_a_sequence_rm_is_refused(tiny_policy_dir, rms, tmp_path, capsys):
    assert main(["ppo", "--policy", str(tiny_policy_dir), "--rm", str(rms / "sequence"), "--reward", "token",
                 "--out", str(tmp_path / "ppo"), "--device", "cpu"]) == 2
    assert "field '--reward': --reward token needs per-token rewards" in _err(capsys)


def test_eval_rm_writes_null_not_nan(rms, tmp_path):
    records = make_edit_records(3)
    for r in records:  # deletions only: no inserted token, so the AUC "inserted vs deleted" is undefined
        r["edited"] = r["rejected"].split(",")[0] + "."
    data = tmp_path / "dels.jsonl"
    write_jsonl(data, records)
    out = tmp_path / "m.json"
    assert main(["eval-rm", "--rm", str(rms / "token"), "--data", str(data), "--out", str(out)]) == 0

    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    metrics = json.loads(out.read_text(), parse_constant=reject)  # strict: NaN would raise
    assert metrics["auc_inserted_vs_deleted"] is None


@pytest.mark.parametrize("stage", ["sft", "train-rm"])
def test_diverged_training_stops_naming_the_step(stage, tiny_policy_dir, tmp_path, capsys):
    data = tmp_path / "edits.jsonl"
    write_jsonl(data, make_edit_records(16))
    out = tmp_path / "out"
    argv = {"sft": ["sft", "--task", "toy_task:Counting", "--num-examples", "64", "--batch-size", "16",
                    "--tiny.n-layer", "1", "--tiny.d-model", "32", "--tiny.n-head", "2", "--tiny.max-len", "48"],
            "train-rm": ["train-rm", "--data", str(data), "--model", str(tiny_policy_dir), "--batch-size", "4",
                         "--device", "cpu", "--warmup-ratio", "0"]}[stage]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--lr", "1e12", "--out", str(out)])
    message = str(stop.value.code)
    assert message.startswith(f"fgalign {stage}: training diverged: the ") and " at step " in message
    assert "nothing was written to --out" in message and not out.exists()


def test_train_rm_checks_data_before_loading_and_hides_the_new_head_report(tiny_policy_dir, tmp_path, capfd):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c"}\n')
    assert main(["train-rm", "--data", str(bad), "--model", str(tiny_policy_dir), "--out", str(tmp_path / "a")]) == 2
    out, err = capfd.readouterr()
    assert "line 1" in err and "rejected" in err and "LOAD REPORT" not in out + err
    good = tmp_path / "good.jsonl"
    write_jsonl(good, make_edit_records(4))
    assert main(["train-rm", "--data", str(good), "--model", str(tiny_policy_dir), "--out", str(tmp_path / "b"),
                 "--max-steps", "1", "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert "MISSING" not in out + err and "LOAD REPORT" not in out + err


def test_ctrl_c_in_ppo_says_how_to_resume(tiny_policy_dir, tmp_path, monkeypatch, capsys):
    import fgalign.rl.trainer as trainer

    out = tmp_path / "ppo"
    (out / "checkpoints" / "iter_000010").mkdir(parents=True)
    (out / "checkpoints" / "iter_000010" / "trainer_state.json").write_text('{"iteration": 10}')

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_ppo", interrupted)
    assert main(["ppo", "--policy", str(tiny_policy_dir), "--rm", "rm", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"continue from {out}/checkpoints/iter_000010 by rerunning the same command with --resume" in err


def test_long_stages_show_a_progress_bar_with_eta(tiny_policy_dir, rms, tmp_path):
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120", "OMP_NUM_THREADS": "1"}  # as in a terminal
    data = tmp_path / "edits.jsonl"
    write_jsonl(data, make_edit_records(4))
    for argv, title in ((["sample", "--policy", str(tiny_policy_dir), "--num-prompts", "8", "--out", str(tmp_path / "p.jsonl"),
                          "--batch-size", "4"], "sample"),
                        (["eval-rm", "--rm", str(rms / "token"), "--data", str(data), "--out", str(tmp_path / "m.json")],
                         "eval-rm")):
        done = subprocess.run([sys.executable, "-m", "fgalign.cli", *argv], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert title in done.stderr and "eta" in done.stderr, done.stderr[-500:]
