"""Sequence-RM training throughput: fgalign's train-rm vs TRL's RewardTrainer, same model/data/batch/lengths.

    .venv/bin/python benchmarks/rm_throughput.py [--rounds 3 --steps 60 --batch 16 --threads 2]

TRL lives in its own virtualenv (benchmarks/.venv-trl-1.16.0, created on first use with trl==1.16.0 and the same
torch/transformers/accelerate versions as ours, torch pinned in the same pip command so pip never pulls a
CUDA build). Both sides are the HF Trainer on the CPU, so `train_runtime` means the same thing in both;
each measurement is a fresh process, and the two run alternately so that machine load hits both alike.
Prints pairs/s for each, the median of the rounds, and the ratio fgalign / TRL.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VERSION = "1.16.0"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    return {n: md.version(n) for n in ("torch", "transformers", "accelerate")}


def ensure_trl_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", f"import trl; assert trl.__version__ == '{TRL_VERSION}'"],
                                          capture_output=True).returncode == 0:
        return python
    v = versions()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = [f"torch=={v['torch'].split('+')[0]}", f"trl=={TRL_VERSION}", f"transformers=={v['transformers']}",
            f"accelerate=={v['accelerate']}", "datasets"]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


def prepare(work: Path, n_pairs: int) -> None:
    """A tiny GPT-2 (2 layers, d=128, the default world's 512-token BPE) and preference pairs."""
    import random

    import torch

    from fgalign.data.io import write_jsonl
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer
    from fgalign.tasks.base import load_task

    task = load_task("default")
    tokenizer = load_tokenizer(task.tokenizer(work / "tok"))
    torch.manual_seed(0)
    model = build_tiny_causal_lm(TinyModelConfig(n_layer=2, d_model=128, n_head=4, max_len=128), tokenizer)
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    rng, rows = random.Random(0), []
    for prompt in task.prompts("train", 4 * n_pairs, 0):
        a, b = task.demonstrate(prompt, rng), task.demonstrate(prompt, rng)
        if task.score(prompt, a) != task.score(prompt, b):
            chosen, rejected = (a, b) if task.score(prompt, a) > task.score(prompt, b) else (b, a)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(rows) == n_pairs:
            break
    write_jsonl(work / "pairs.jsonl", rows)


def worker_fgalign(work: Path, steps: int, batch: int) -> dict:
    from fgalign.train.reward import RewardConfig, run

    cfg = RewardConfig(data=str(work / "pairs.jsonl"), out=str(work / "out-fgalign"), model=str(work / "model"),
                       level="sequence", pairs="preference", max_steps=steps, batch_size=batch, device="cpu",
                       logging_steps=10**6)
    run(cfg)
    metrics = json.loads((work / "out-fgalign" / "fgalign_config.json").read_text())["train"]
    return {"train_runtime": metrics["train_runtime"]}


def worker_trl(work: Path, steps: int, batch: int) -> dict:
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForSequenceClassification.from_pretrained(work / "model", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    data = load_dataset("json", data_files=str(work / "pairs.jsonl"))["train"]
    args = RewardConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=batch, max_steps=steps,
                        learning_rate=1e-3, use_cpu=True, report_to="none", save_strategy="no",
                        logging_steps=10**6, disable_tqdm=True, max_length=128)
    result = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=data).train()
    return {"train_runtime": result.metrics["train_runtime"]}


def measure(python: str, which: str, work: Path, steps: int, batch: int, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TOKENIZERS_PARALLELISM="false")
    cmd = [python, __file__, "--worker", which, "--work", str(work), "--steps", str(steps), "--batch", str(batch)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return steps * batch / result["train_runtime"]  # pairs per second of training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fgalign_rm_throughput")
    ap.add_argument("--trl-venv", type=Path, default=HERE / f".venv-trl-{TRL_VERSION}")
    ap.add_argument("--worker", choices=["fgalign", "trl"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        fn = worker_fgalign if a.worker == "fgalign" else worker_trl
        print(json.dumps(fn(a.work, a.steps, a.batch)))
        return
    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.work / "pairs.jsonl").exists():
        prepare(a.work, a.pairs)
    trl_python = str(ensure_trl_venv(a.trl_venv))
    rates: dict[str, list[float]] = {"fgalign": [], "trl": []}
    for r in range(a.rounds):
        for which, python in (("fgalign", sys.executable), ("trl", trl_python)):
            t = time.time()
            rates[which].append(measure(python, which, a.work, a.steps, a.batch, a.threads))
            print(f"round {r + 1} {which:8s} {rates[which][-1]:8.1f} pairs/s   ({time.time() - t:.0f} s with start-up)")
    fg, trl = statistics.median(rates["fgalign"]), statistics.median(rates["trl"])
    print(f"\nsequence RM training, {a.steps} steps x {a.batch} pairs, {a.threads} threads, median of {a.rounds}:")
    print(f"  fgalign train-rm    {fg:8.1f} pairs/s")
    print(f"  TRL {TRL_VERSION} RewardTrainer {trl:8.1f} pairs/s")
    print(f"  ratio fgalign / TRL {fg / trl:8.2f}x")


if __name__ == "__main__":
    main()
