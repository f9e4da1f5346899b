"""Can the policy hold what best-of-n finds? Distil the oracle's best-of-n picks into it and judge the result.

Issue 19: PPO on the world's 2-layer SFT policy reaches 0.52–0.57 against SFT even with the oracle as its
reward, while the oracle's best-of-4 reaches 0.73 at KL ≤ 0.64. Two explanations predict different things:
- the optimiser (PPO's steps, noise, credit) is the limit: then supervised fine-tuning on the best-of-n picks,
  which needs no exploration and no credit assignment, reaches far more at the same KL;
- the policy cannot represent the better distribution (a 0.5M-parameter model has to learn "not the items the
  prompt excludes" and "count to N"): then the distilled policy stays low too.

This samples n answers per training prompt from the SFT policy, keeps the oracle's best (ties broken at random:
rejection sampling, as RAFT / expert iteration do), fine-tunes a copy of the SFT policy on them (response tokens
only), and judges it against SFT on test prompts with the same evaluator as the pipeline (win rate, KL, mistakes).

  python benchmarks/policy_capacity.py --policy runs/rm19/sft --prompts 4096 --n 16 --epochs 1 2 4

Writes OUT/results.json (default: POLICY/../capacity) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from fgalign.eval.winrate import build_evaluator, make_judge
from fgalign.models.policy import load_causal_lm, load_tokenizer
from fgalign.sampling.hf import sample_responses
from fgalign.sampling.rollout import SamplingConfig
from fgalign.tasks import load_task
from fgalign.train.sft import _Collator, tokenize_examples


def best_of_n_picks(model, tokenizer, task, prompts: list[str], n: int, sampling: SamplingConfig, seed: int):
    """The oracle's best of n SFT samples per prompt (random among equals), and the picks' mean score."""
    samples = sample_responses(model, tokenizer, [p for p in prompts for _ in range(n)], sampling, seed=seed)
    rng = random.Random(seed)
    picks, scores = [], []
    for i, prompt in enumerate(prompts):
        group = samples[i * n: (i + 1) * n]
        s = [task.score(prompt, r) for r in group]
        best = rng.choice([r for r, v in zip(group, s) if v == max(s)])
        picks.append((prompt, best))
        scores.append(max(s))
    return picks, float(np.mean(scores))


def fine_tune(model, tokenizer, examples: list[tuple[str, str]], epochs: int, lr: float, batch: int, seed: int):
    """Plain supervised fine-tuning on the picks: AdamW, constant lr, loss on the response tokens."""
    rows = tokenize_examples(tokenizer, examples, getattr(model.config, "n_positions", 1024))
    collate, opt = _Collator(tokenizer.pad_token_id), torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(rows), generator=g).split(batch):
            loss = model(**collate([rows[i] for i in idx.tolist()])).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    model.eval()
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the SFT policy directory")
    ap.add_argument("--task", default="default")
    ap.add_argument("--prompts", type=int, default=4096, help="training prompts (task split 'train')")
    ap.add_argument("--n", type=int, default=16, help="samples per prompt; the oracle keeps the best")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4], help="fine-tuning epochs (one model each)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--test-prompts", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(args.policy).parent / "capacity"
    out.mkdir(parents=True, exist_ok=True)
    task, tokenizer = load_task(args.task), load_tokenizer(args.policy)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    sft = load_causal_lm(args.policy)
    started, load = time.time(), round(os.getloadavg()[0], 2)
    picks, pick_score = best_of_n_picks(sft, tokenizer, task, task.prompts("train", args.prompts, args.seed), args.n,
                                        sampling, args.seed)
    print(f"{len(picks)} picks, oracle score {pick_score:.2f} ({time.time() - started:.0f} s)", flush=True)
    judge = make_judge("task", task)
    evaluate = build_evaluator(task, judge, sft, tokenizer, "test", args.test_prompts, 1234, sampling)
    rows = []
    for epochs in args.epochs:
        t0 = time.time()
        torch.manual_seed(args.seed)
        model = fine_tune(load_causal_lm(args.policy), tokenizer, picks, epochs, args.lr, args.batch_size, args.seed)
        r = evaluate(model)
        row = {"epochs": epochs, "win_rate": r["win_rate"], "ci95": r["ci95"], "kl": r["kl_k1"],
               "oracle_score": r["policy"]["oracle_score"], "sft_oracle_score": r["reference"]["oracle_score"],
               "mistakes": r["policy"]["mistakes"], "sft_mistakes": r["reference"]["mistakes"],
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(f"epochs {epochs}: win {row['win_rate']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] "
              f"KL {row['kl']:.2f} oracle {row['oracle_score']:.2f} (SFT {row['sft_oracle_score']:.2f}) "
              f"mistakes {json.dumps({k: round(v, 2) for k, v in row['mistakes'].items()})}", flush=True)
    result = {"policy": args.policy, "prompts": args.prompts, "n": args.n, "lr": args.lr, "pick_score": pick_score,
              "rows": rows, "load_at_start": load}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"-> {out / 'results.json'}")


if __name__ == "__main__":
    main()
