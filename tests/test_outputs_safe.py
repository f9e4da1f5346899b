"""Issue 14, data loss: no stage destroys an existing output; reruns need --overwrite; killed runs resume.

Every case runs the real CLI and asserts the exit code, the one-line message and that nothing was lost.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _rm_data import make_edit_records
from fgalign.cli import main
from fgalign.data.io import write_jsonl
from fgalign.runinfo import atomic_path, clean_stale_temporaries

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    write_jsonl(path, [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in make_edit_records(8)])
    return path


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_edit_onto_an_existing_folder_is_refused(pairs_file, tmp_path, capsys):
    folder = tmp_path / "DIR"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("keep me")
    (folder / "sub" / "b.txt").write_text("and me")
    before = _tree(folder)
    for extra in ([], ["--overwrite"]):  # not even --overwrite turns a folder into a file
        assert main(["edit", "--data", str(pairs_file), "--out", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{folder}, field '--out': is an existing folder" in err and "give a file name" in err
        assert _tree(folder) == before


def test_sft_onto_a_finished_run_is_refused_even_with_overwrite(tmp_path, capsys):
    run = tmp_path / "RUN"
    (run / "sft").mkdir(parents=True)
    (run / "results.json").write_text("{}")
    (run / "pipeline_config.yaml").write_text("task: default\n")
    (run / "sft" / "fgalign_config.json").write_text(json.dumps({"stage": "sft"}))
    before = _tree(run)
    assert main(["sft", "--out", str(run), "--num-examples", "50"]) == 2
    assert "exists; pass --overwrite to replace this output of `fgalign sft`" in capsys.readouterr().err
    assert main(["sft", "--out", str(run), "--num-examples", "50", "--overwrite"]) == 2
    assert "is not an output of fgalign; --overwrite replaces only an output of `fgalign sft`" in capsys.readouterr().err
    assert _tree(run) == before


def test_a_stage_rerun_needs_overwrite(pairs_file, tmp_path, capsys):
    out = tmp_path / "edits.jsonl"
    argv = ["edit", "--data", str(pairs_file), "--out", str(out)]
    assert main(argv) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert f"{out}, field '--out': exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == first
    assert main(argv + ["--overwrite"]) == 0  # replaced: it was written by `fgalign edit`
    # --overwrite never replaces another stage's output (here: the input pairs, written by hand).
    assert main(["edit", "--data", str(pairs_file), "--out", str(pairs_file), "--overwrite"]) == 2
    assert "is not an output of fgalign" in capsys.readouterr().err


def test_label_rerun_needs_overwrite(tiny_tokenizer_dir, tmp_path, capsys):
    edits = tmp_path / "edits.jsonl"
    write_jsonl(edits, make_edit_records(4))
    out = tmp_path / "labels.jsonl"
    argv = ["label", "--data", str(edits), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_atomic_path_never_removes_an_existing_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # and no temporary is left
    with atomic_path(target, replace=True) as tmp:  # what a stage passes after --overwrite was checked
        tmp.mkdir()
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".sft.{dead.stdout.strip()}.abcd.tmp"
    legacy = tmp_path / ".sft.k3j2h1.tmp"  # the name older versions used (no pid)
    live = tmp_path / f".sft.{os.getpid()}.efgh.tmp"
    for p in (stale, legacy, live):
        p.mkdir()
    removed = clean_stale_temporaries(tmp_path / "sft")
    assert set(removed) == {stale, legacy} and live.exists()


def test_ppo_into_an_existing_run_is_refused(tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "P"
    ckpt = out / "checkpoints" / "iter_000030"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"iteration": 30}')
    log = "".join(json.dumps({"iteration": i}) + "\n" for i in range(1, 39))
    (out / "ppo_log.jsonl").write_text(log)
    (out / "ppo_log.jsonl.config.json").write_text(json.dumps({"stage": "ppo"}))
    argv = ["ppo", "--policy", str(tiny_policy_dir), "--rm", str(tmp_path / "rm"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out}, field '--out': holds a PPO run: pass --resume to continue it from iter_000030, or --overwrite" in err
    assert (out / "ppo_log.jsonl").read_text() == log and ckpt.exists()  # the log is not cut
    # A folder of something else is never cleared, not even with --overwrite.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("keep")
    assert main(["ppo", "--policy", str(tiny_policy_dir), "--rm", "r", "--out", str(other), "--overwrite"]) == 2
    assert "not a PPO run" in capsys.readouterr().err and (other / "x.txt").exists()


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


SFT = ["sft", "--task", "toy_task:Counting", "--num-examples", "800", "--epochs", "2", "--batch-size", "16",
       "--tiny.n-layer", "1", "--tiny.d-model", "32", "--tiny.n-head", "2", "--tiny.max-len", "48", "--save-steps", "5"]
# `fgalign sft` in a process that says so on stdout once checkpoint-10 is saved, then waits to be killed: the kill
# lands between two checkpoints however fast or slow the machine is (no polling interval to tune).
STOP_AFTER_CHECKPOINT_10 = """
import sys, threading, transformers
class Stop(transformers.TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 10:
            print("SAVED checkpoint-10", flush=True)
            threading.Event().wait()
init = transformers.Trainer.__init__
def with_stop(self, *a, **k):
    init(self, *a, **k)
    self.add_callback(Stop())
transformers.Trainer.__init__ = with_stop
from fgalign.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_sft_leaves_no_stale_temporary_and_resumes(tmp_path, capsys):
    import torch

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", STOP_AFTER_CHECKPOINT_10, *SFT, "--out", str(killed)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ckpts = tmp_path / "killed.checkpoints"
    for line in proc.stdout:  # blocks until the event (or the process ends without it)
        if line.startswith("SAVED checkpoint-10"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (ckpts / "checkpoint-10").exists(), "no checkpoint before the kill"
    assert not killed.exists() and list(tmp_path.glob(".killed.*.tmp"))  # the killed run's temporary
    # Rerun without --resume: refused (the checkpoints are not dropped silently); the stale temporary is gone.
    assert main([*SFT, "--out", str(killed)]) == 2
    assert "holds checkpoints of an interrupted `fgalign sft` run: pass --resume" in capsys.readouterr().err
    assert not list(tmp_path.glob(".killed.*.tmp"))
    # Both runs in fresh processes with one thread, as the killed one: the same float sums, bit for bit.
    runs = [subprocess.run([sys.executable, "-m", "fgalign.cli", *argv], cwd=REPO, env=env, capture_output=True,
                           text=True) for argv in ([*SFT, "--out", str(killed), "--resume"], [*SFT, "--out", str(straight)])]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    assert f"sft: resuming from {ckpts}/checkpoint-" in runs[0].stdout
    assert not ckpts.exists()  # removed after success
    a, b = _weights(killed), _weights(straight)
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(killed).model_max_length == 48  # the model's real positions
