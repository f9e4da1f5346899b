"""Sequence-RM training throughput: fgalign's train-rm vs TRL's RewardTrainer, same model/data/batch/lengths.

    .venv/bin/python benchmarks/rm_throughput.py [--rounds 5 --steps 60 --batch 16 --threads 2]

TRL lives in its own virtualenv (benchmarks/.venv-trl-1.16.0, created on first use with trl==1.16.0 and the same
torch/transformers/accelerate versions as ours, torch pinned in the same pip command so pip never pulls a
CUDA build). Both sides are the HF Trainer on the CPU, so `train_runtime` means the same thing in both; each
measurement is a fresh process with the same environment (threads pinned through OMP_NUM_THREADS, MKL_NUM_THREADS
and torch.set_num_threads), and the two alternate round by round so that machine load hits both alike.

Every setting that decides the work is pinned on both sides and printed from the objects themselves (not from
this script's arguments): fp32 (no bf16/fp16 autocast), no gradient checkpointing, max_length 128, AdamW
(each side's default implementation: the fused kernel on both), lr 1e-3, linear schedule, no dropout, no dataloader workers, no torch.compile. TRL 1.16 defaults to bf16=True
and gradient_checkpointing=True even on the CPU: on a CPU without native bf16 (this machine kind's Zen 3 has
AVX2 only) bf16 autocast is emulated, and that alone made TRL 7x slower (11 against 81 pairs/s); gradient
checkpointing recomputes every forward (81 against 120 pairs/s). Those unpinned defaults are the 20x swing of
issue 15. Each side also reports the tokens it actually fed the model (padding included): fgalign batches pairs
of similar length (its default `group_by_length`), TRL pads each batch to its longest pair.

Prints the per-round pairs/s, each side's median and, last, `ratio: X.XX` (fgalign / TRL, higher is better).
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
MAX_LENGTH = 128
LR = 1e-3
# Settings printed from each side's TrainingArguments, to show they agree.
SHOWN = ("bf16", "fp16", "gradient_checkpointing", "optim", "learning_rate", "lr_scheduler_type", "weight_decay",
         "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "dataloader_num_workers",
         "torch_compile", "use_cpu", "group_by_length")


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


def prepare(work: Path, n_pairs: int, n_layer: int = 2, d_model: int = 128, response_tokens: int = 0,
            max_length: int = MAX_LENGTH) -> None:
    """A tiny GPT-2 (default 2 layers, d=128, the default world's 512-token BPE) and preference pairs.

    `response_tokens` > 0: every response is its demonstration repeated and cut to that many tokens (the
    scaling benchmark's longer responses); 0 keeps the world's own lengths."""
    import random

    import torch

    from fgalign.data.io import write_jsonl
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer
    from fgalign.tasks.base import load_task

    task = load_task("default")
    tokenizer = load_tokenizer(task.tokenizer(work / "tok"))
    torch.manual_seed(0)
    model = build_tiny_causal_lm(TinyModelConfig(n_layer=n_layer, d_model=d_model, n_head=4, max_len=max_length),
                                 tokenizer)

    def sized(text: str) -> str:
        if not response_tokens:
            return text
        ids: list[int] = []
        while len(ids) < response_tokens:  # repeat the text until it is long enough, then cut
            ids += tokenizer(" " + text if ids else text, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:response_tokens])

    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    rng, rows = random.Random(0), []
    for prompt in task.prompts("train", 4 * n_pairs, 0):
        a, b = task.demonstrate(prompt, rng), task.demonstrate(prompt, rng)
        if task.score(prompt, a) != task.score(prompt, b):
            chosen, rejected = (a, b) if task.score(prompt, a) > task.score(prompt, b) else (b, a)
            rows.append({"prompt": prompt, "chosen": sized(chosen), "rejected": sized(rejected)})
        if len(rows) == n_pairs:
            break
    write_jsonl(work / "pairs.jsonl", rows)


def counting(collate, counter: dict):
    """Wrap a collator to count the (padded) tokens it hands the model."""
    def wrapped(features):
        batch = collate(features)
        counter["padded_tokens"] += batch["input_ids"].numel()
        counter["real_tokens"] += int(batch["attention_mask"].sum())
        counter["batches"] += 1
        return batch
    return wrapped


def effective(args, model, threads: int) -> dict:
    """What the run really used, read from the objects."""
    import torch

    dropout = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    return {**{k: getattr(args, k, None) for k in SHOWN}, "torch_threads": torch.get_num_threads(),
            "requested_threads": threads, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "active_dropout_modules": len(dropout), "params": sum(p.numel() for p in model.parameters()),
            "model_gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False))}


def worker_fgalign(work: Path, steps: int, batch: int, threads: int, max_length: int = MAX_LENGTH) -> dict:
    import fgalign.train.reward as R

    counter = {"padded_tokens": 0, "real_tokens": 0, "batches": 0}
    seen: dict = {}
    original_call = R.PairCollator.__call__
    R.PairCollator.__call__ = lambda self, f: counting(lambda x: original_call(self, x), counter)(f)
    original_train = R._train

    def spy(cfg, rm, pairs, loss, ckpt, resume):  # record the effective settings of the real run
        seen.update(effective(R.training_args(cfg, ckpt), rm.model, threads), max_length=cfg.max_length,
                    n_pairs=len(pairs), schedule="one (2B, L) pass")
        return original_train(cfg, rm, pairs, loss, ckpt, resume)

    R._train = spy
    cfg = R.RewardConfig(data=str(work / "pairs.jsonl"), out=str(work / "out-fgalign"), model=str(work / "model"),
                         level="sequence", pairs="preference", max_steps=steps, batch_size=batch, device="cpu",
                         lr=LR, weight_decay=0.0, bf16=False, max_length=max_length,
                         save_steps=0, logging_steps=10**6, overwrite=True)
    R.run(cfg)
    metrics = json.loads((work / "out-fgalign" / "fgalign_config.json").read_text())["train"]
    seen["group_by_length"] = cfg.group_by_length
    return {"train_runtime": metrics["train_runtime"], "settings": seen, **counter}


def worker_trl(work: Path, steps: int, batch: int, threads: int, max_length: int = MAX_LENGTH) -> dict:
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForSequenceClassification.from_pretrained(work / "model", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    data = load_dataset("json", data_files=str(work / "pairs.jsonl"))["train"]
    # Every TRL default that changes the work is pinned: bf16 and gradient_checkpointing default to True.
    args = RewardConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=batch, max_steps=steps,
                        learning_rate=LR, weight_decay=0.0, lr_scheduler_type="linear",
                        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, max_length=max_length,
                        pad_to_multiple_of=None, center_rewards_coefficient=None, disable_dropout=True,
                        torch_compile=False, dataloader_num_workers=0, report_to="none", save_strategy="no",
                        logging_steps=10**6, disable_tqdm=True, seed=0)
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=data)
    counter = {"padded_tokens": 0, "real_tokens": 0, "batches": 0}
    trainer.data_collator = counting(trainer.data_collator, counter)
    result = trainer.train()
    settings = {**effective(trainer.args, trainer.model, threads), "max_length": args.max_length,
                "n_pairs": len(trainer.train_dataset), "schedule": "one (2B, L) pass",
                "group_by_length": "no (random batches)"}  # TrainingArguments 5.x has no such option
    return {"train_runtime": result.metrics["train_runtime"], "settings": settings, **counter}


def thread_env(threads: int) -> dict[str, str]:
    """The same environment for both sides' processes."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
                ACCELERATE_MIXED_PRECISION="no")


def measure(python: str, which: str, work: Path, steps: int, batch: int, threads: int,
            max_length: int = MAX_LENGTH) -> dict:
    cmd = [python, __file__, "--worker", which, "--work", str(work), "--steps", str(steps), "--batch", str(batch),
           "--threads", str(threads), "--max-length", str(max_length)]
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["pairs_per_s"] = steps * batch / result["train_runtime"]
    return result


def run_rounds(work: Path, rounds: int, steps: int, batch: int, threads: int, trl_python: str,
               echo=print, max_length: int = MAX_LENGTH) -> dict[str, list[dict]]:
    """Alternate the two sides for `rounds` rounds (the first side alternates too); every run's result."""
    runs: dict[str, list[dict]] = {"fgalign": [], "trl": []}
    sides = [("fgalign", sys.executable), ("trl", trl_python)]
    for r in range(rounds):
        for which, python in (sides if r % 2 == 0 else sides[::-1]):
            t = time.time()
            runs[which].append(measure(python, which, work, steps, batch, threads, max_length))
            res = runs[which][-1]
            echo(f"round {r + 1} {which:8s} {res['pairs_per_s']:8.1f} pairs/s  ({time.time() - t:.0f} s with "
                 f"start-up; {res['padded_tokens'] / max(res['batches'], 1):.0f} tokens/batch fed, "
                 f"{res['real_tokens'] / max(res['padded_tokens'], 1):.0%} real)")
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=MAX_LENGTH, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help="data and model folder (default: a fresh temp dir)")
    ap.add_argument("--trl-venv", type=Path, default=HERE / f".venv-trl-{TRL_VERSION}")
    ap.add_argument("--worker", choices=["fgalign", "trl"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        fn = worker_fgalign if a.worker == "fgalign" else worker_trl
        print(json.dumps(fn(a.work, a.steps, a.batch, a.threads, a.max_length)))
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="fgalign_rm_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "pairs.jsonl").exists():
        prepare(work, a.pairs)
    trl_python = str(ensure_trl_venv(a.trl_venv))
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    runs = run_rounds(work, a.rounds, a.steps, a.batch, a.threads, trl_python)
    print("\neffective settings (read back from each run's objects):")
    keys = list(runs["fgalign"][0]["settings"])
    for k in keys + [k for k in runs["trl"][0]["settings"] if k not in keys]:
        print(f"  {k:30s} fgalign={runs['fgalign'][0]['settings'].get(k)!s:24s} trl={runs['trl'][0]['settings'].get(k)!s}")
    fg = statistics.median(r["pairs_per_s"] for r in runs["fgalign"])
    trl = statistics.median(r["pairs_per_s"] for r in runs["trl"])
    print(f"\nsequence RM training, {a.steps} steps x {a.batch} pairs, {a.threads} threads, median of {a.rounds} rounds:")
    for name, label, med in (("fgalign", "fgalign train-rm         ", fg), ("trl", f"TRL {TRL_VERSION} RewardTrainer", trl)):
        per_round = " ".join(f"{r['pairs_per_s']:.1f}" for r in runs[name])
        print(f"  {label} {med:8.1f} pairs/s  (rounds: {per_round})")
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    print(f"ratio: {fg / trl:.2f}")


if __name__ == "__main__":
    main()
