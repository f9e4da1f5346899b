"""Where a PPO iteration's time goes on a real model, and what each saving buys: SmolLM2-135M-Instruct with LoRA.

    python benchmarks/ppo_real_model.py --policy runs/smollm2/sft --rm runs/smollm2/rm-token [--iterations 4]

Runs `fgalign ppo` with LoRA (r 8, all linear layers) for a few iterations per variant, each in a fresh process
one after the other, and reports the median seconds per phase over the iterations after the first (warm-up):
rollout (generation with the KV cache), scoring (RM, π_old, π_ref and V forward passes) and update, with the
process's peak RSS. Variants, each one change from the one before:

  gae+critic fp32      today's default: a value model initialised from the policy (a second 135M model, fully
                       trained), 4 PPO epochs
  gae+critic 1 epoch   one pass over each rollout batch (benchmarks/ppo_signal.py: more rollouts, fewer epochs)
  critic-free fp32     --value-init none --advantage reinforce++: no value model to run and train
  critic-free bf16     the same under bf16 autocast (only where the CPU has native bf16)

`--rm task` scores with the task's oracle (no RM forward pass) when no RM is at hand. Prints one table and, last,
`ratio: X` (the cheapest variant's iteration time over today's default).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "gae+critic fp32": ["--value-init", "policy", "--advantage", "gae", "--ppo-epochs", "4"],
    "gae+critic 1 epoch": ["--value-init", "policy", "--advantage", "gae", "--ppo-epochs", "1"],
    "critic-free fp32": ["--value-init", "none", "--advantage", "reinforce++", "--ppo-epochs", "1"],
    "critic-free bf16": ["--value-init", "none", "--advantage", "reinforce++", "--ppo-epochs", "1", "--bf16"],
}
PEAK = "import resource, runpy, sys; sys.argv = ['fgalign'] + sys.argv[1:]\n" \
       "try:\n    runpy.run_module('fgalign.cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n" \
       "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def run_variant(name: str, args, out: Path) -> dict:
    cmd = [sys.executable, "-c", PEAK, "ppo", "--policy", args.policy, "--rm", args.rm, "--out", str(out),
           "--task", args.task, "--lora", "--lora-r", "8", "--lora-alpha", "16", "--iterations", str(args.iterations),
           "--batch-size", str(args.batch_size), "--minibatches", "4", "--max-new-tokens", str(args.max_new_tokens),
           "--num-prompts", "512", "--save-steps", "0", "--overwrite", *VARIANTS[name]]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{name}: fgalign ppo failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "time_generate" in r][1:]  # the first iteration warms up
    peak = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB")))
    med = {k: statistics.median(r[f"time_{k}"] for r in rows) for k in ("generate", "score", "train")}
    return {**med, "iteration": sum(med.values()), "peak_gib": peak / 2**20, "load": load,
            "wall": time.perf_counter() - started, "kl": rows[-1]["kl_k1"] if rows else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the SFT policy folder (or .gguf)")
    ap.add_argument("--rm", default="task", help="a reward model folder, or 'task' (the oracle)")
    ap.add_argument("--task", default="default")
    ap.add_argument("--iterations", type=int, default=4, help="per variant, the first is warm-up")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_ppo_real"))
    args = ap.parse_args()
    from fgalign.models.precision import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        args.variants = [v for v in args.variants if "bf16" not in v]
        print("no native bf16 on this CPU: the bf16 variant is left out")
    results = {}
    for name in args.variants:
        results[name] = run_variant(name, args, args.out / name.replace(" ", "_").replace("+", "_"))
        r = results[name]
        print(f"{name:20s} rollout {r['generate']:6.1f} s  scoring {r['score']:6.1f} s  update {r['train']:6.1f} s  "
              f"iteration {r['iteration']:6.1f} s  peak RSS {r['peak_gib']:.2f} GiB  (load {r['load']:.2f})",
              flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    base, best = results[args.variants[0]], min(results.values(), key=lambda r: r["iteration"])
    print(f"batch {args.batch_size} x {args.max_new_tokens} tokens, LoRA r 8, {args.iterations - 1} timed iterations "
          f"per variant, rm {args.rm}")
    print(f"ratio: {best['iteration'] / base['iteration']:.2f}")


if __name__ == "__main__":
    main()
