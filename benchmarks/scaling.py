"""How the cost grows with the work: PPO iteration and RM epoch, fgalign beside TRL, as the model and the
response grow.

    .venv/bin/python benchmarks/scaling.py [--threads 2] [--rounds 1]

Rows: the model at 2L128d, 4L256d, 6L384d (4 heads, vocab 512) with the benchmarks' 24-token responses, then
2L128d with 64- and 128-token responses. For each row:
- PPO: one iteration (batch 64, 4 epochs x 4 minibatches; generation, scoring, update), `ppo_vs_trl.py`'s two
  sides and settings (fresh processes, TRL 1.12 with bf16 and gradient checkpointing pinned off), 2
  iterations per run of which the second is timed. A random policy rarely samples EOS, so
  responses run to the limit on both sides.
- RM: one epoch of sequence-RM training on 128 pairs (8 steps of 16 pairs), `rm_throughput.py`'s two sides
  and settings (TRL 1.16 RewardTrainer); every response is its demonstration repeated and cut to the row's
  number of tokens, so both responses of a pair have that length (no length grouping gain here).
Few rounds and small data keep it to a few minutes; each row's ratio is one measurement per round (median
over rounds), noisier than the two headline benchmarks. Prints one table; the last line is the PPO ratio of
the largest model's row (`ratio: X.XX`, fgalign / TRL time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROWS = [(2, 128, 24), (4, 256, 24), (6, 384, 24), (2, 128, 64), (2, 128, 128)]
RM_PAIRS, RM_BATCH = 128, 16


def ppo_row(layers: int, d: int, response: int, threads: int, rounds: int) -> dict[str, float]:
    import ppo_vs_trl as P

    args = argparse.Namespace(batch=64, response_length=response, iterations=2, threads=threads, rounds=rounds)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = P.build_models(Path(tmp), args.batch * args.iterations, layers, d)
        runs = P.run_rounds(Path(tmp), prompts, args, echo=lambda line: None)
    return {k: statistics.median(r["per_iteration_s"] for r in v) for k, v in runs.items()}


def rm_row(layers: int, d: int, response: int, threads: int, rounds: int, trl_python: str) -> dict[str, float]:
    import rm_throughput as R

    max_length = 32 + response  # prompts are at most ~20 tokens
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        R.prepare(work, RM_PAIRS, layers, d, response_tokens=response, max_length=max_length)
        runs = R.run_rounds(work, rounds, RM_PAIRS // RM_BATCH, RM_BATCH, threads, trl_python, echo=lambda line: None,
                            max_length=max_length)
    return {k: statistics.median(r["train_runtime"] for r in v) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rows", default=None, help="e.g. 2x128x24,2x128x64 (layers x d x response); default: all five")
    args = ap.parse_args()
    rows = [tuple(int(v) for v in r.split("x")) for r in args.rows.split(",")] if args.rows else ROWS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ppo_vs_trl_trl as T
    import rm_throughput as R

    T.ensure_trl_venv()
    trl_rm = str(R.ensure_trl_venv(R.HERE / f".venv-trl-{R.TRL_VERSION}"))
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {args.threads} thread(s), {args.rounds} round(s)")
    t0 = time.time()
    table = []
    for layers, d, response in rows:
        ppo = ppo_row(layers, d, response, args.threads, args.rounds)
        rm = rm_row(layers, d, response, args.threads, args.rounds, trl_rm)
        table.append((f"{layers}L{d}d", response, ppo, rm))
        print(f"  done {layers}L{d}d, {response} tokens ({time.time() - t0:.0f} s)", flush=True)
    print(f"\n| model | response tokens | PPO s/iteration fgalign | TRL 1.12 | ratio | RM s/epoch ({RM_PAIRS} pairs) "
          f"fgalign | TRL 1.16 | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, response, ppo, rm in table:
        print(f"| {name} | {response} | {ppo['fgalign']:.2f} | {ppo['trl']:.2f} | {ppo['fgalign'] / ppo['trl']:.2f}x | "
              f"{rm['fgalign']:.2f} | {rm['trl']:.2f} | {rm['trl'] / rm['fgalign']:.2f}x |")
    print(f"\n{args.threads} thread(s), total {time.time() - t0:.0f} s, load average after: {os.getloadavg()[0]:.2f}")
    big = max(table, key=lambda row: (int(row[0].split("L")[0]), -row[1]))[2]  # the largest model's row
    print(f"ratio: {big['fgalign'] / big['trl']:.2f}")


if __name__ == "__main__":
    main()
