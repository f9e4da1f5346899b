"""benchmarks/gpu_check.sh --dry-run: every step's command line parses (so the one GPU run a lent machine gives
is not lost to a typo), and a command line that does not parse is reported and fails the dry run."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _dry_run(script: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "SCRATCH": str(tmp_path / "scratch")}
    return subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, env=env, timeout=300)


def test_dry_run_checks_every_step(tmp_path):
    result = _dry_run(SCRIPT, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for step in ("sft", "sample", "edit", "train-rm", "ppo-hf", "ppo-hf-lora", "ppo-bf16-saved", "ppo-fp16",
                 "ppo-bf16", "micro", "ppo-vllm"):
        assert any(line.startswith(f"{step}: ok") for line in lines), (step, result.stdout)
    assert any(line.startswith("sft-to-bf16: ok") for line in lines)
    assert any(line.startswith("tests: ok") for line in lines)
    assert "--lora" in next(line for line in lines if line.startswith("ppo-hf-lora:"))
    assert (tmp_path / "scratch" / "out" / "times.txt").is_file()  # a dry run writes under SCRATCH only


def test_dry_run_fails_on_an_option_that_does_not_parse(tmp_path):
    tree = tmp_path / "tree"
    (tree / "benchmarks").mkdir(parents=True)
    for name in ("src", "configs", "tests", "examples"):
        (tree / name).symlink_to(ROOT / name)
    broken = SCRIPT.read_text().replace("--num-examples 4000", "--num-exampels 4000")
    assert broken != SCRIPT.read_text()
    (tree / "benchmarks" / "gpu_check.sh").write_text(broken)
    result = _dry_run(tree / "benchmarks" / "gpu_check.sh", tmp_path)
    assert result.returncode != 0
    assert any(line.startswith("sft: FAILED") for line in result.stdout.splitlines()), result.stdout
    assert any(line.startswith("ppo-hf: ok") for line in result.stdout.splitlines())  # the others still checked
