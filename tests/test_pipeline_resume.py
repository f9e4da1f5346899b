"""Issue 14: a pipeline killed during PPO resumes from its checkpoint and ends where an unbroken run ends; a
rerun with another config is refused, naming the stages and keys."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Smaller than configs/micro.yaml: one method, six PPO iterations with a checkpoint every two.
CONFIG = """\
task: default
seeds: [0]
sft: {num_examples: 2000, epochs: 1, batch_size: 32, tiny: {n_layer: 1, d_model: 64, n_head: 2, max_len: 64}}
sample: {num_prompts: 60, max_new_tokens: 20}
heldout: {num_prompts: 16, max_new_tokens: 20}
rm: {max_steps: 4, batch_size: 8}
ppo: {iterations: 6, batch_size: 8, minibatches: 2, ppo_epochs: 1, max_new_tokens: 20, eval_every: 1, num_prompts: 32,
      checkpoint_every: 2}
eval: {n_valid: 8, n_test: 8}
edit: {max_edit_ratio: 0.9}
"""
PPO = Path("ppo") / "ppo-token" / "seed0"
VOLATILE = ("time_generate", "time_score", "time_train")  # wall-clock seconds differ between any two runs


def _pipeline(cfg: Path, run: Path, *extra: str, **popen) -> list[str]:
    return [sys.executable, "-m", "fgalign.cli", "pipeline", "--config", str(cfg), "--out", str(run),
            "--methods", "ppo-token", *extra]


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in (run / PPO / "ppo_log.jsonl").read_text().splitlines()]


def test_pipeline_killed_during_ppo_resumes_to_the_same_results(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(CONFIG)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_pipeline(cfg, run), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = run / PPO / "checkpoints" / "iter_000002" / "trainer_state.json"
    deadline = time.time() + 400
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "PPO never reached its first checkpoint"
    assert not (run / "results.json").exists() and not (run / PPO / "summary.json").exists()
    killed_at = len(_log(run))
    assert 2 <= killed_at < 6

    # The same prerequisites (SFT, pairs, RM), PPO from scratch, uninterrupted: the reference.
    straight = tmp_path / "straight"
    shutil.copytree(run, straight)
    shutil.rmtree(straight / "ppo")

    done = subprocess.run(_pipeline(cfg, run), cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sft: exists, skipped" in done.stdout
    assert f"[pipeline] ppo ppo-token seed 0: resuming from {run / PPO / 'checkpoints'}/iter_00000" in done.stdout
    ref = subprocess.run(_pipeline(cfg, straight), cwd=REPO, env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "resuming" not in ref.stdout

    assert [r["iteration"] for r in _log(run)] == [1, 2, 3, 4, 5, 6]  # no iteration twice, none missing
    assert _log(run) == _log(straight)  # bit-identical training and validation
    resumed = json.loads((run / "results.json").read_text())["methods"]["ppo-token"]["seeds"]["0"]
    reference = json.loads((straight / "results.json").read_text())["methods"]["ppo-token"]["seeds"]["0"]
    for summary in (resumed, reference):
        for h in summary["history"]:
            for k in VOLATILE:
                h.pop(k, None)
    assert resumed == reference

    # A rerun with another config is refused before anything runs, naming each stage and key that differ.
    cfg.write_text(CONFIG.replace("epochs: 1, batch_size: 32", "epochs: 2, batch_size: 32")
                   .replace("n_valid: 8", "n_valid: 9"))
    before = (run / "results.json").read_bytes()
    changed = subprocess.run(_pipeline(cfg, run), cwd=REPO, env=env, capture_output=True, text=True)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    err = changed.stderr
    assert "holds outputs made with another config: sft (epochs: 1 -> 2)" in err, err
    assert "ppo ppo-token seed 0 (eval.n_valid: 8 -> 9)" in err and "--overwrite" in err
    assert (run / "results.json").read_bytes() == before
    assert (run / "pipeline_config.yaml").read_text() != cfg.read_text()  # still the config of the outputs
