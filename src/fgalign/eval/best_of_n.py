"""`fgalign best-of-n`: how far can a reward model move a policy at all? Rank n samples, keep the best.

Best-of-n sampling is the RM's own ceiling at a known KL: keeping the best of n i.i.d. samples is a policy
whose KL to the sampler is at most log n − (n − 1)/n nats (Beirami et al., 2024; 0.64 at n = 4, 1.2 at n = 8,
1.84 at n = 16). PPO at a KL target should roughly reach the best-of-n win rate at the same KL; if it does
and the win rate is still low, the reward model is the bottleneck, not the optimiser (issue 10, section 1).

For each RM (and, when the task has a gold `score`, for the oracle ranking: the ceiling of any RM) this
reports the judge's win rate against a separate reference sample at n = 1, 2, 4, …, N. Token RMs rank by
what PPO's `token` mode sums (Σ_t of median-centred r_t) and by their sequence score (what `ppo-token-eos`
gets). With the task's `diagnose()`, it also reports which mistakes each RM sees: the AUC of its score between
mistake-free samples and samples with exactly one mistake of a kind, and between samples that differ by one
mistake of a kind and nothing else (the only one readable where every answer has some mistake).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Annotated, ClassVar
from pathlib import Path

import numpy as np
import torch
import tyro

from fgalign.configfile import accepts_old_names
from fgalign.data.outputs import check_output
from fgalign.errors import InputError, require_int
from fgalign.eval.rm_eval import auc
from fgalign.eval.winrate import bootstrap_interval, make_judge
from fgalign.models.policy import load_causal_lm, load_tokenizer, resolve_device
from fgalign.models.reward import load_reward_model
from fgalign.rl.rewards import RewardSettings, rm_rewards
from fgalign.runinfo import save_run_config, seed_everything, write_json
from fgalign.sampling.hf import progress, sample_responses
from fgalign.sampling.rollout import SamplingConfig
from fgalign.tasks import load_task


@accepts_old_names
@dataclass
class BestOfNConfig:
    """Best-of-n win rate of each reward model's pick against a reference sample, by n."""

    RENAMED: ClassVar[dict[str, str]] = {"prompts": "num_prompts"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""
    FLAT: ClassVar[tuple[str, ...]] = ("sampling",)
    """Nested settings given flat (`--max-new-tokens`, YAML `max_new_tokens`), as `fgalign ppo` takes them."""

    policy: str
    """The sampling policy (usually the SFT model); its own sample is the reference."""
    rms: list[str]
    """Reward model directories to rank the candidates by (may be empty with --judge task: the oracle alone)."""
    task: str = "default"
    """Task name or import path: the prompts, and the judge when --judge task."""
    judge: str = "task"
    """"task" (the gold score) or "rm:PATH" (a held-out reward model)."""
    n: int = 16
    """Most candidates per prompt; win rates are reported at 1, 2, 4, … up to n."""
    num_prompts: int = 300
    """Number of held-out prompts."""
    split: str = "test"
    """Prompt split."""
    seed: int = 1234
    """Seed of the prompts and of every sample (the reference is drawn with this seed, candidate i with seed+1+i)."""
    sampling: Annotated[SamplingConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SamplingConfig)
    """Sampling settings (use the ones PPO trains with)."""
    out: str | None = None
    """JSON output (default: POLICY/best_of_n_<split>.json)."""
    rm_bf16: bool = False
    """Score under bf16 autocast (only where the device has native bf16; README: its deviation from fp32)."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign best-of-n`."""


def kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n ‖ sampler) in nats: log n − (n − 1)/n."""
    return math.log(n) - (n - 1) / n


def ns_up_to(n: int) -> list[int]:
    """1, 2, 4, … up to n, and n itself."""
    out = [1]
    while out[-1] * 2 <= n:
        out.append(out[-1] * 2)
    return out if out[-1] == n else out + [n]


TOKEN_SUM = RewardSettings(reward="token", reward_scale="raw")  # token_center: PPO's default


def ranking_scores(rm, prompts: list[str], candidates: list[list[str]]) -> dict[str, np.ndarray]:
    """(P, N) scores of every candidate by the RM: a token RM gives its centred token sum and its sequence score."""
    P, N = len(prompts), len(candidates[0])
    out = rm.score_texts([p for p in prompts for _ in range(N)], [c for row in candidates for c in row])
    if rm.level != "token":
        return {"sequence": out.sequence_score.numpy().reshape(P, N)}
    lengths = torch.tensor([len(rm.encode_response(c)) for row in candidates for c in row])
    mask = torch.arange(out.token_rewards.shape[1])[None, :] < lengths[:, None]  # (P·N, T): the response's tokens
    token_rewards = out.token_rewards.float()
    # What `fgalign ppo --reward token` sums, through the same function and default centring; the scale is left
    # out (raw): total-std divides every candidate by one number, which changes no ranking.
    rewards = rm_rewards(TOKEN_SUM, token_rewards, token_rewards, out.sequence_score.float(), mask,
                         (lengths - 1).clamp_min(0))
    return {"token sum": rewards.sum(1).reshape(P, N).numpy(), "sequence": out.sequence_score.numpy().reshape(P, N)}


def best_of_n_curve(scores: np.ndarray, wins: np.ndarray, ns: list[int]) -> list[dict]:
    """Win rate of the top-scored candidate among the first n, for each n.  scores, wins: (P, N)."""
    curve = []
    for n in ns:
        pick = scores[:, :n].argmax(axis=1)  # (P,): ties go to the earliest, an unbiased sample
        w = wins[np.arange(len(pick)), pick]
        lo, hi = bootstrap_interval(w)
        curve.append({"n": n, "kl_bound": kl_bound(n), "win_rate": float(w.mean()), "ci95": [lo, hi]})
    return curve


def mistake_sensitivity(task, prompts: list[str], candidates: list[list[str]], scores: np.ndarray) -> dict:
    """Per mistake kind, two AUCs of the score. "auc": mistake-free samples vs samples with exactly one mistake
    of the kind (None if fewer than 5). "auc_one_more": every pair of samples whose mistake counts differ by one
    mistake of the kind and match in every other kind, pooled over prompts (None if fewer than 25 pairs); the
    first is its special case where the better sample is clean. On a world where nearly every answer holds
    several mistakes (long lists) there are no clean samples, and only the second can be read."""
    diags = [[task.diagnose(p, c) for c in row] for p, row in zip(prompts, candidates)]
    flat = [(scores[i, j], d) for i, row in enumerate(diags) for j, d in enumerate(row)]
    clean = [s for s, d in flat if sum(d.values()) == 0]
    kinds = sorted({k for _, d in flat for k in d})
    by_counts: dict[tuple, list[float]] = {}  # the vector of mistake counts -> the scores of samples with it
    for s, d in flat:
        by_counts.setdefault(tuple(d.get(k, 0) for k in kinds), []).append(s)
    result = {}
    for i, kind in enumerate(kinds):
        one = [s for s, d in flat if d[kind] == 1 and sum(d.values()) == 1]
        wins, pairs = 0.0, 0
        for counts, fewer in by_counts.items():
            more = by_counts.get(counts[:i] + (counts[i] + 1,) + counts[i + 1:])
            if more:
                a, b = np.asarray(fewer)[:, None], np.asarray(more)[None, :]  # (F, 1), (1, M)
                wins += float((a > b).sum() + 0.5 * (a == b).sum())
                pairs += a.size * b.size
        result[kind] = {"auc": auc(clean, one) if len(one) >= 5 and clean else None, "n": len(one),
                        "auc_one_more": wins / pairs if pairs >= 25 else None, "n_pairs": pairs}
    return result


def run(cfg: BestOfNConfig) -> dict:
    require_int(cfg.n, 1, "--n", "a number of candidates")
    require_int(cfg.num_prompts, 1, "--num-prompts", "a number of prompts")
    if not cfg.rms and cfg.judge != "task":  # with the task's judge the oracle ranking alone is a curve
        raise InputError("give at least one reward model directory", field="--rms")
    if cfg.judge != "task" and not cfg.judge.startswith("rm:"):
        raise InputError(f"unknown judge '{cfg.judge}': expected task or rm:PATH", field="--judge")
    cfg.sampling.check()
    out = Path(cfg.out) if cfg.out else Path(cfg.policy) / f"best_of_n_{cfg.split}.json"
    check_output(out, "best-of-n", cfg.overwrite, "file")
    seed_everything(cfg.seed)
    started = time.time()
    task, device = load_task(cfg.task), resolve_device(cfg.device)
    tokenizer, policy = load_tokenizer(cfg.policy), load_causal_lm(cfg.policy, device=device)
    rms = {path: load_reward_model(path, device=device, bf16=cfg.rm_bf16) for path in cfg.rms}  # fail early on a bad path
    judge = make_judge(cfg.judge, task)
    prompts = task.prompts(cfg.split, cfg.num_prompts, cfg.seed)
    with progress("best-of-n samples"):
        reference = sample_responses(policy, tokenizer, prompts, cfg.sampling, seed=cfg.seed)
        columns = [sample_responses(policy, tokenizer, prompts, cfg.sampling, seed=cfg.seed + 1 + i)
                   for i in range(cfg.n)]
    candidates = [list(row) for row in zip(*columns)]  # (P, N) texts
    wins = np.array([judge.compare_many(prompts, col, reference) for col in columns]).T  # (P, N)
    ns = ns_up_to(cfg.n)
    rankings: dict[str, np.ndarray] = {}
    if callable(getattr(task, "score", None)) and cfg.judge == "task":
        rankings["oracle (task score)"] = np.array([[task.score(p, c) for c in row] for p, row in zip(prompts, candidates)])
    for path, rm in rms.items():
        for kind, scores in ranking_scores(rm, prompts, candidates).items():
            rankings[f"{path} ({kind})"] = scores
    result = {"policy": cfg.policy, "judge": cfg.judge, "split": cfg.split, "n_prompts": len(prompts),
              "curves": {name: best_of_n_curve(s, wins, ns) for name, s in rankings.items()}}
    if callable(getattr(task, "diagnose", None)):
        result["mistake_sensitivity"] = {name: mistake_sensitivity(task, prompts, candidates, s)
                                         for name, s in rankings.items() if not name.startswith("oracle")}
    result["seconds"] = time.time() - started
    write_json(out, result)
    save_run_config(out, cfg, "best-of-n")
    print(format_table(result))
    print(f"best-of-n: -> {out}")
    return result


def format_table(result: dict) -> str:
    """Win rate vs the reference by n, one row per ranking; then the per-mistake AUCs."""
    curves = result["curves"]
    ns = [point["n"] for point in next(iter(curves.values()))]
    width = max(len(name) for name in curves)
    lines = [f"{'ranked by':<{width}}  " + "  ".join(f"n={n:<3d}" for n in ns),
             f"{'KL bound (nats)':<{width}}  " + "  ".join(f"{kl_bound(n):<5.2f}" for n in ns)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{p['win_rate']:<5.3f}" for p in curve) for name, curve in curves.items()]
    for name, kinds in result.get("mistake_sensitivity", {}).items():
        seen = ", ".join(f"{k} {v['auc']:.2f}" for k, v in kinds.items() if v["auc"] is not None)
        one_more = ", ".join(f"{k} {v['auc_one_more']:.2f}" for k, v in kinds.items()
                             if v.get("auc_one_more") is not None)
        lines += [f"AUC clean vs one mistake, {name}: {seen}"] if seen else []
        lines += [f"AUC one more mistake, the rest equal, {name}: {one_more}"] if one_more else []
    return "\n".join(lines)
