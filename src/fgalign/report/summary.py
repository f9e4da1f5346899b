"""The pipeline's report: a table, curves, the mistakes left per method, and token heatmaps."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from fgalign.models.reward import load_reward_model
from fgalign.report.heatmap import heatmap_html


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if stat.get("std") else f"{stat['mean']:.{digits}f}"


def results_table(results: dict) -> str:
    """Markdown table: method, test win rate vs SFT and its length-controlled form (mean ± std over seeds), RM
    accuracy, the KL target and the KL measured on the evaluated policy, length, truncation."""
    rms = results.get("reward_models", {})
    lines = ["| method | reward model | reward | win rate vs SFT (test) | LC win rate | RM pair acc. | KL target | "
             "KL (nats) | length | truncated |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, agg in results["methods"].items():
        first = next(iter(agg["seeds"].values()))
        rm = rms.get(first["rm"], {})
        acc = rm.get("pair_accuracy")
        target = first.get("kl_target")
        lines.append(f"| {name} | {first['rm']} | {first['reward']} | {_fmt(agg['win_rate'])} | "
                     f"{_fmt(agg.get('lc_win_rate'))} | {'–' if acc is None else f'{acc:.3f}'} | "
                     f"{'–' if target is None else target} | {_fmt(agg['kl'], 2)} | {_fmt(agg['length'], 1)} | "
                     f"{_fmt(agg['truncation'], 2)} |")
    return "\n".join(lines)


def rm_table(results: dict) -> str:
    keys = [("pair_accuracy", "pair acc."), ("edit_accuracy", "edit acc."), ("auc_inserted_vs_deleted", "AUC +1/−1"),
            ("auc_kept_vs_deleted_in_rejected", "AUC kept/−1"), ("kept_mean_over_edited_abs_mean", "kept mean ÷ mean abs edited"),
            ("corr_total_reward_length", "corr(sum r, len)")]
    lines = ["| reward model | " + " | ".join(k[1] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in results.get("reward_models", {}).items():
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), (int, float)) else "–" for k, _ in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves(results: dict, key: str, series: str = "history") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method: iterations and the mean over seeds of a quantity logged in each seed's `series` (the training
    `history`, or the `valid_curve` of validation points); methods without that series are left out."""
    out = {}
    for name, agg in results["methods"].items():
        runs = [s.get(series) or [] for s in agg["seeds"].values()]
        n = min(map(len, runs))
        if n:
            its = np.array([h["iteration"] for h in runs[0][:n]])
            vals = np.array([[h.get(key) if h.get(key) is not None else np.nan for h in r[:n]] for r in runs],
                            dtype=float)
            out[name] = (its, np.nanmean(vals, axis=0))
    return out


def iterations_table(results: dict, baseline: str = "ppo-seq") -> str | None:
    """How fast each method gets where the baseline ends: the first validation point at which its win rate
    (mean over seeds) reaches the baseline's best, beside the iteration of that best. The paper's "reaches
    the baseline in a fraction of the steps" claim, read from the validation curves (DESIGN §6)."""
    curves = _curves(results, "win_rate", "valid_curve")
    if baseline not in curves or len(curves) < 2:
        return None
    its, wins = curves[baseline]
    target, at = float(np.max(wins)), int(its[int(np.argmax(wins))])
    lines = [f"Baseline `{baseline}`: best validation win rate {target:.3f} at iteration {at}.", "",
             "| method | best validation win rate | first iteration at ≥ the baseline's best "
             "| ratio to the baseline's |",
             "|---|---|---|---|"]
    for name, (its, wins) in curves.items():
        reached = np.flatnonzero(wins >= target)
        first = int(its[reached[0]]) if reached.size else None
        lines.append(f"| {name} | {np.max(wins):.3f} | {'not reached' if first is None else first} | "
                     f"{'–' if first is None else f'{first / at:.2f}'} |")
    return "\n".join(lines)


def _own_curve(results: dict, method: str) -> tuple[str, list[dict]] | None:
    """The best-of-n curve of the RM a method trained on, ranked as that method reads it: a token reward by the
    token sum, a sequence reward by the sequence score. None when the run has no best-of-n for that RM."""
    first = next(iter(results["methods"][method]["seeds"].values()))
    kind = "token sum" if first["reward"].startswith("token") else "sequence"
    for name, curve in results.get("best_of_n", {}).get("curves", {}).items():
        if Path(name.rsplit(" (", 1)[0]).name == first["rm"] and name.endswith(f"({kind})"):
            return f"{first['rm']} ({kind})", curve
    return None


def best_of_n_at(curve: list[dict], kl: float) -> float:
    """Best-of-n win rate at a KL, linear between the curve's n (its KL bound log n − (n−1)/n); past the largest n
    the last point stands, so a PPO that spends more KL than best-of-n's largest n is compared with that n."""
    kls, wins = [p["kl_bound"] for p in curve], [p["win_rate"] for p in curve]
    return float(np.interp(kl, kls, wins))


def optimizer_table(results: dict) -> str | None:
    """How much of its own RM's best-of-n gain over 0.5 each PPO run gets at the KL it spent (issue 19's
    "optimizer" target): (win − 0.5) / (best-of-n(KL) − 0.5), with the oracle's best-of-n beside it. Every KL
    target of the frontier when there is one, the main comparison otherwise; means over seeds."""
    bon = results.get("best_of_n", {}).get("curves", {})
    oracle = next((c for name, c in bon.items() if name.startswith("oracle")), None)
    points = results.get("frontier") or {name: [{"kl_target": next(iter(agg["seeds"].values())).get("kl_target"),
                                                 "win_rate": agg["win_rate"], "kl": agg["kl"]}]
                                         for name, agg in results["methods"].items()}
    lines = ["| method | KL target | win rate vs SFT | KL (nats) | own RM's best-of-n at that KL | share of its gain "
             "| oracle's best-of-n at that KL | share of the oracle's gain |", "|---|---|---|---|---|---|---|---|"]
    for name, pts in points.items():
        own = _own_curve(results, name)
        for p in pts:
            win, kl = p["win_rate"]["mean"], p["kl"]["mean"]
            if own is None or win is None or kl is None:
                continue
            cells = []
            for curve in (own[1], oracle):
                if curve is None:
                    cells += ["–", "–"]
                    continue
                ceiling = best_of_n_at(curve, kl)
                share = (win - 0.5) / (ceiling - 0.5) if ceiling > 0.5 else float("nan")
                cells += [f"{ceiling:.3f}", f"{share:.0%}"]
            lines.append(f"| {name} | {p['kl_target']} | {_fmt(p['win_rate'])} | {_fmt(p['kl'], 2)} | {own[0]}: "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else None


def plot_all(results: dict, run_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, agg in results["methods"].items():
        curves = [s["valid_curve"] for s in agg["seeds"].values()]
        n = min(map(len, curves))
        its = [c["iteration"] for c in curves[0][:n]]
        win = np.mean([[c["win_rate"] for c in cur[:n]] for cur in curves], axis=0)
        ax.plot(its, win, marker="o", label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="PPO iteration", ylabel="win rate vs SFT (validation)", title="Win rate vs iteration")
    ax.legend(fontsize=8)
    files.append(_save(fig, run_dir / "plots" / "winrate_vs_iteration.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, agg in results["methods"].items():
        pts = [(c["kl"], c["win_rate"]) for s in agg["seeds"].values() for c in s["valid_curve"] if c["kl"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=name, s=14)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="KL to SFT (nats per response)", ylabel="win rate vs SFT (validation)", title="Win rate vs KL")
    ax.legend(fontsize=8)
    files.append(_save(fig, run_dir / "plots" / "winrate_vs_kl.png"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label) in zip(axes, [("task_score", "oracle score of rollouts"), ("kl_k1", "KL (k1, nats)"),
                                       ("response_length", "response length (tokens)")]):
        for name, (its, vals) in _curves(results, key).items():
            ax.plot(its, vals, label=name)
        ax.set(xlabel="PPO iteration", title=label)
    axes[0].legend(fontsize=7)
    files.append(_save(fig, run_dir / "plots" / "training_curves.png"))
    files += plot_diagnostics(results, run_dir)
    if results.get("frontier"):
        files.append(plot_frontier(results["frontier"], run_dir))
    return files


# What each validation evaluation logs beside the win rate (issue 10: is it RM exploitation, the length term,
# the optimiser, or something else?). Keys of a `valid_curve` entry.
DIAGNOSTICS = [("win_rate", "win rate vs SFT (valid)"), ("lc_win_rate", "length-controlled win rate"),
               ("kl", "KL of the evaluated policy (nats)"), ("rm_score", "RM score of training rollouts"),
               ("oracle_score", "oracle score (valid)"), ("length", "length (tokens)"),
               ("truncation", "truncated share"), ("mistakes", "mistakes per response")]


def plot_diagnostics(results: dict, run_dir: Path) -> list[str]:
    """One figure per method: every diagnostic against the iteration, one line per seed, the KL target dashed."""
    import matplotlib.pyplot as plt

    files = []
    for name, agg in results["methods"].items():
        fig, axes = plt.subplots(2, 4, figsize=(15, 6))
        for ax, (key, label) in zip(axes.flat, DIAGNOSTICS):
            for seed, s in agg["seeds"].items():
                its = [c["iteration"] for c in s["valid_curve"]]
                if key == "mistakes":
                    vals = [sum((c.get("mistakes") or {}).values()) if c.get("mistakes") else np.nan
                            for c in s["valid_curve"]]
                else:
                    vals = [np.nan if c.get(key) is None else c[key] for c in s["valid_curve"]]
                ax.plot(its, vals, marker=".", label=f"seed {seed}")
            if key == "kl" and next(iter(agg["seeds"].values())).get("kl_target"):
                ax.axhline(next(iter(agg["seeds"].values()))["kl_target"], color="grey", ls="--", lw=0.8)
            ax.set(xlabel="PPO iteration", title=label)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"{name}: what moves as the win rate moves")
        files.append(_save(fig, run_dir / "plots" / f"diagnostics_{name}.png"))
    return files


def plot_frontier(frontier: dict, run_dir: Path) -> str:
    """Test win rate vs the measured KL, one line per method across KL targets (mean ± sd over seeds)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, points in frontier.items():
        points = sorted(points, key=lambda p: p["kl"]["mean"])
        ax.errorbar([p["kl"]["mean"] for p in points], [p["win_rate"]["mean"] for p in points],
                    yerr=[p["win_rate"]["std"] for p in points], marker="o", capsize=3, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="KL to SFT of the evaluated policy (nats per response, test prompts)",
           ylabel="win rate vs SFT (test)", title="Win rate–KL frontier")
    ax.legend(fontsize=8)
    return _save(fig, run_dir / "plots" / "frontier.png")


def frontier_table(frontier: dict) -> str:
    """Per KL target: each method's test win rate and measured KL (mean ± sd over seeds)."""
    targets = sorted({p["kl_target"] for points in frontier.values() for p in points})
    lines = ["| method | " + " | ".join(f"target {t:g}: win rate (LC) · KL" for t in targets) + " |",
             "|---" * (len(targets) + 1) + "|"]
    for name, points in frontier.items():
        by_target = {p["kl_target"]: p for p in points}
        cells = []
        for t in targets:
            p = by_target.get(t)
            cells.append("–" if p is None else
                         f"{_fmt(p['win_rate'])} ({_fmt(p.get('lc_win_rate'))}) · {_fmt(p['kl'], 2)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_best_of_n(results: dict, run_dir: Path) -> str:
    """Each RM's best-of-n win rate against the KL bound, with PPO's (measured KL, win rate) per method on top:
    PPO below its RM's curve leaves reward on the table; an RM's curve low is the RM's limit."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, curve in results["best_of_n"]["curves"].items():
        style = dict(color="black", ls="--") if name.startswith("oracle") else {}
        ax.plot([p["kl_bound"] for p in curve], [p["win_rate"] for p in curve], marker=".", label=Path(name).name,
                **style)
    for name, agg in results.get("methods", {}).items():
        if agg["kl"]["mean"] is not None:
            ax.errorbar(agg["kl"]["mean"], agg["win_rate"]["mean"], xerr=agg["kl"]["std"], yerr=agg["win_rate"]["std"],
                        marker="*", ms=11, ls="none", capsize=3, label=f"PPO {name}")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="KL to SFT (nats; best-of-n: the bound log n − (n−1)/n)", ylabel="win rate vs SFT (test)",
           title="Best-of-n by each reward model, and PPO")
    ax.legend(fontsize=7)
    return _save(fig, run_dir / "plots" / "best_of_n.png")


def best_of_n_table(bon: dict) -> str:
    """Win rate by n for each ranking, and which mistakes each RM sees (the two AUCs per kind of mistake_sensitivity)."""
    curves = bon["curves"]
    ns = [p["n"] for p in next(iter(curves.values()))]
    lines = ["| ranked by | " + " | ".join(f"n = {n} (KL ≤ {p['kl_bound']:.2f})"
                                         for n, p in zip(ns, next(iter(curves.values())))) + " |",
             "|---" * (len(ns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{p['win_rate']:.3f}" for p in curve) + " |" for name, curve in curves.items()]
    if bon.get("mistake_sensitivity"):
        kinds = sorted({k for v in bon["mistake_sensitivity"].values() for k in v})
        for field, title in (("auc", "AUC, mistake-free vs one mistake of a kind"),
                             ("auc_one_more", "AUC, one more mistake of a kind, every other count equal")):
            rows = [(name, [by_kind.get(k, {}).get(field) for k in kinds])
                    for name, by_kind in bon["mistake_sensitivity"].items()]
            if all(v is None for _, cells in rows for v in cells):
                continue  # no mistake-free samples (long answers), or stored before this AUC existed
            lines += ["", f"| {title} | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
            lines += [f"| {name} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cells) + " |"
                      for name, cells in rows]
    return "\n".join(lines)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def mistakes_table(results: dict) -> str | None:
    rows = {}
    for name, agg in results["methods"].items():
        per_seed = [s["test"]["policy"].get("mistakes") for s in agg["seeds"].values()]
        if all(per_seed):
            kinds = sorted(per_seed[0])
            rows[name] = {k: float(np.mean([m.get(k, 0.0) for m in per_seed])) for k in kinds}
    if not rows:
        return None
    kinds = sorted(next(iter(rows.values())))
    first = next(iter(next(iter(results["methods"].values()))["seeds"].values()))
    rows = {"SFT (reference)": first["test"]["reference"].get("mistakes", {}), **rows}
    lines = ["| policy | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row.get(k, 0.0):.3f}" for k in kinds) + " |")
    return "\n".join(lines)


def heatmaps(results: dict, run_dir: Path, n: int = 4) -> str | None:
    """HTML page: token-RM rewards on SFT responses and on the token-PPO policy's responses to the same prompts."""
    rm_dir = run_dir / "rm-token"
    if not (rm_dir / "config.json").exists():
        return None
    rm = load_reward_model(rm_dir)
    sections = []
    for name in ("ppo-token", "ppo-token-shaped", "ppo-seq"):
        agg = results["methods"].get(name)
        if not agg:
            continue
        examples = next(iter(agg["seeds"].values()))["test"]["examples"][:n]
        for ex in examples:
            for who in ("reference", "policy"):
                out = rm.score_texts([ex["prompt"]], [ex[who]])
                ids = rm.tokenizer(ex[who], add_special_tokens=False)["input_ids"] + [rm.tokenizer.eos_token_id]
                pieces = [rm.tokenizer.decode([i]) for i in ids]
                rewards = out.token_rewards[0, : len(ids)].tolist()
                label = "SFT" if who == "reference" else name
                sections.append(f"<p><b>{label}</b> — <code>{_esc(ex['prompt'])}</code><br>{heatmap_html(pieces, rewards)}</p>")
    path = run_dir / "heatmaps.html"
    path.write_text("<html><meta charset='utf-8'><body style='font-family:sans-serif'><h2>Token RM rewards, "
                    "before (SFT) and after PPO</h2>" + "\n".join(sections) + "</body></html>")
    return str(path)


def _esc(s: str) -> str:
    import html

    return html.escape(s)


def write_report(run_dir: Path, results: dict, cfgs: dict | None = None) -> Path:
    plots = plot_all(results, run_dir)
    try:
        heat = heatmaps(results, run_dir)
    except Exception as e:  # noqa: BLE001 - a report must not fail because of a picture
        heat, _ = None, print(f"[report] heatmaps skipped: {e}")
    mistakes = mistakes_table(results)
    seeds = results.get("seeds", [])
    parts = [
        f"# fgalign report — {results['config'].get('task', 'default')} world",
        f"Generated {dt.date.today().isoformat()}; seeds {seeds}; total {results['total_seconds']:.0f} s.",
        "## Policies (win rate against the SFT model on held-out test prompts, best validation checkpoint)",
        results_table(results),
        "## Reward models (held-out edit pairs)", rm_table(results),
    ]
    if results.get("frontier"):
        parts += ["## Win rate–KL frontier (test prompts; every method at every KL target)",
                  frontier_table(results["frontier"])]
    if results.get("best_of_n"):
        plots = plots + [plot_best_of_n(results, run_dir)]
        parts += ["## Best-of-n: each reward model's ceiling (SFT samples, test prompts, oracle judge)",
                  best_of_n_table(results["best_of_n"])]
        optimizer = optimizer_table(results)
        if optimizer:
            parts += ["## How much of its own RM's best-of-n each PPO run gets, at the KL it spent", optimizer]
    iterations = iterations_table(results)
    if iterations:
        parts += ["## Iterations to reach the baseline (validation prompts)", iterations]
    if mistakes:
        parts += ["## Mistakes left per response (test prompts, task diagnosis)", mistakes]
    parts += ["## Curves"] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in plots]
    if heat:
        parts.append(f"Token heatmaps before/after PPO: [heatmaps.html](heatmaps.html)")
    parts += ["## Reproduce", f"```\n{results['command']}\n```", "Config:",
              f"```yaml\n{(run_dir / 'pipeline_config.yaml').read_text()}```",
              "## Wall time and peak memory per stage", "| stage | seconds | peak RSS (GiB) |\n|---|---|---|\n" +
              "\n".join(f"| {k} | {v} | {results.get('stage_peak_rss_gib', {}).get(k, '—')} |"
                        for k, v in results["stage_seconds"].items()),
              "## Library versions", "```\n" + json.dumps(results["versions"], indent=1) + "\n```"]
    path = run_dir / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


