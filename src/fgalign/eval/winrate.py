"""Win rate of a policy against a reference policy on held-out prompts (ties count ½).

Both policies answer the same prompts with the same sampling settings; a judge compares each pair. The RM
judge must be a reward model trained on separate data, so a policy is never graded by the RM it was trained on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Sequence

import numpy as np
import torch
import tyro

from fgalign.configfile import accepts_old_names
from fgalign.data.outputs import check_output
from fgalign.data.tokenize import encode_prompt
from fgalign.errors import InputError, require_int
from fgalign.eval import judges
from fgalign.eval.length_control import bootstrap_lc_interval, length_controlled_win_rate
from fgalign.models.policy import load_causal_lm, load_tokenizer, resolve_device
from fgalign.models.reward import load_reward_model
from fgalign.rl.kl import kl_per_token
from fgalign.rl.scoring import in_micro_batches, policy_logprobs
from fgalign.rl.update import evaluating
from fgalign.runinfo import save_run_config, seed_everything, write_json
from fgalign.sampling.hf import generate, progress, sample_responses
from fgalign.sampling.rollout import SamplingConfig
from fgalign.tasks import load_task


@accepts_old_names
@dataclass
class EvalConfig:
    """Judge a policy against a reference on held-out prompts."""

    RENAMED: ClassVar[dict[str, str]] = {"n": "num_prompts"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""
    FLAT: ClassVar[tuple[str, ...]] = ("sampling",)
    """Nested settings given flat (`--max-new-tokens`, YAML `max_new_tokens`), as `fgalign ppo` takes them."""

    policy: str
    """The policy directory to evaluate."""
    reference: str
    """The reference policy directory (usually the SFT model)."""
    task: str = "default"
    """Task name or import path: gives the prompts, and the judge when --judge task."""
    judge: str = "task"
    """"task" (the task's gold score), "rm:PATH" (a held-out reward model) or "openai" (an LLM judge)."""
    num_prompts: int = 500
    """Number of held-out prompts."""
    split: str = "test"
    """Prompt split: "valid" for checkpoint selection, "test" for reporting."""
    seed: int = 1234
    """Seed for prompts and sampling (the same for both policies)."""
    sampling: Annotated[SamplingConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SamplingConfig)
    """Sampling settings, shared by both policies."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for --judge openai."""
    model: str | None = None
    """Model name for --judge openai."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key for --judge openai (never passed on the command line)."""
    concurrency: int = 8
    """Judge requests in flight at once (--judge openai); replies are cached beside the output."""
    out: str | None = None
    """Where to write the JSON result (default: POLICY/eval_<judge>_<split>.json)."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign eval` (anything else is never replaced)."""


def bootstrap_interval(x: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def repetition(response: str) -> float:
    """Share of repeated words in a response: 1 − distinct/total (0 for no repeats)."""
    words = response.lower().replace(",", " ").replace(".", " ").split()
    return 0.0 if not words else 1.0 - len(set(words)) / len(words)


def token_lengths(responses: list[str], tokenizer: Any) -> list[int]:
    return [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]


def side_stats(responses: list[str], tokenizer: Any) -> dict:
    return {"mean_length": float(np.mean(token_lengths(responses, tokenizer))),
            "repetition": float(np.mean([repetition(r) for r in responses]))}


def kl_to_reference(model, reference_model, rollout, micro_batch: int = 64) -> dict[str, float]:
    """KL(π ‖ π_ref) in nats per response on the evaluated policy's own samples: k1 (mean log-ratio sum, the
    quantity the KL target is set in) and k3 (never negative). The KL of *this* policy on *these* prompts,
    not the training batch's pre-update figure."""
    device = next(model.parameters()).device
    rollout = rollout.to(device)
    # Both models score the same ids on one device: a reference loaded elsewhere (the CPU) joins the policy's.
    reference_model.to(device)
    with evaluating(model, reference_model):  # in_micro_batches already runs without gradients
        logprobs = in_micro_batches(lambda r: policy_logprobs(model, r)[0], rollout, micro_batch)
        ref = in_micro_batches(lambda r: policy_logprobs(reference_model, r)[0], rollout, micro_batch)
    mask = rollout.response_mask
    return {f"kl_{k}": float(kl_per_token(logprobs, ref, mask, k).sum(1).mean()) for k in ("k1", "k3")}


class RMJudge:
    """Compares by a reward model's sequence score (use one trained on data the policy never saw)."""

    def __init__(self, path: str, device: str = "cpu"):
        self.rm = load_reward_model(path, device=device)
        self.name = f"rm:{path}"

    def compare_many(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        sa = self.rm.score_texts(prompts, a).sequence_score.cpu().numpy()
        sb = self.rm.score_texts(prompts, b).sequence_score.cpu().numpy()
        return [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in zip(sa, sb)]


def make_judge(spec: str, task, cfg: EvalConfig | None = None):
    if spec == "task":
        return judges.TaskJudge(task)
    if spec.startswith("rm:"):
        return RMJudge(spec[3:], device=str(resolve_device(cfg.device if cfg else "auto")))
    if spec == "openai":
        if cfg is None or not cfg.base_url or not cfg.model:
            raise InputError("--judge openai needs --base-url and --model", field="--judge")
        cache = Path(cfg.out).parent if cfg.out else Path(cfg.policy)
        return judges.OpenAIJudge(base_url=cfg.base_url, model=cfg.model, api_key_env=cfg.api_key_env,
                                  cache_dir=cache / "llm-cache", concurrency=cfg.concurrency)
    raise InputError(f"unknown judge '{spec}': expected task, rm:PATH or openai", field="--judge")


class WinRateEvaluator:
    """Win rate vs fixed reference responses, callable on a model in memory (PPO calls it every K iterations)."""

    def __init__(self, task, judge, prompts: list[str], reference_responses: list[str], tokenizer: Any,
                 sampling: SamplingConfig, seed: int, reference_model=None, lc_boot: int = 300):
        self.task, self.judge, self.prompts = task, judge, prompts
        self.reference_responses, self.tokenizer = reference_responses, tokenizer
        self.sampling, self.seed = sampling, seed
        self.reference_model = reference_model  # when given, each evaluation also measures the KL to it
        self.lc_boot = lc_boot  # bootstrap refits for the length-controlled interval (0: point estimate only)
        self.reference_lengths = token_lengths(reference_responses, tokenizer)
        self.reference_stats = side_stats(reference_responses, tokenizer)
        if callable(getattr(task, "diagnose", None)):
            self.reference_stats["mistakes"] = self._mistakes(reference_responses)

    def _mistakes(self, responses: list[str]) -> dict[str, float]:
        diags = [self.task.diagnose(p, r) for p, r in zip(self.prompts, responses)]
        return {k: float(np.mean([d.get(k, 0) for d in diags])) for k in sorted({k for d in diags for k in d})}

    def __call__(self, model, iteration: int | None = None) -> dict:
        if self.reference_model is None:
            responses = sample_responses(model, self.tokenizer, self.prompts, self.sampling, seed=self.seed + 1)
            return self.judge_responses(responses)
        # The same draw as sample_responses (same seed, same sampler), keeping the ids to measure the KL on.
        torch.manual_seed(self.seed + 1)
        tok = self.tokenizer
        rollout = generate(model, [encode_prompt(tok, p) for p in self.prompts], tok.eos_token_id, tok.pad_token_id,
                           self.sampling, micro_batch=self.sampling.batch_size)
        ids = [r[:-1] if r and r[-1] == tok.eos_token_id else r for r in rollout.response_lists()]
        result = self.judge_responses(tok.batch_decode(ids, skip_special_tokens=True))
        result.update(kl_to_reference(model, self.reference_model, rollout, self.sampling.batch_size))
        result["policy"]["truncation_rate"] = float(rollout.truncated.float().mean())
        return result

    def judge_responses(self, responses: list[str]) -> dict:
        wins = self.judge.compare_many(self.prompts, responses, self.reference_responses)
        lo, hi = bootstrap_interval(wins, seed=self.seed)
        lengths = token_lengths(responses, self.tokenizer)
        lc = length_controlled_win_rate(wins, lengths, self.reference_lengths)
        lc_ci = (list(bootstrap_lc_interval(wins, lengths, self.reference_lengths, self.lc_boot, self.seed))
                 if self.lc_boot else None)
        result = {"win_rate": float(np.mean(wins)), "ci95": [lo, hi], "n": len(wins),
                  "lc_win_rate": lc, "lc_ci95": lc_ci,
                  "policy": side_stats(responses, self.tokenizer), "reference": self.reference_stats}
        if callable(getattr(self.task, "score", None)):
            result["policy"]["oracle_score"] = float(np.mean([self.task.score(p, r) for p, r in zip(self.prompts, responses)]))
            result["reference"]["oracle_score"] = float(
                np.mean([self.task.score(p, r) for p, r in zip(self.prompts, self.reference_responses)]))
        if callable(getattr(self.task, "diagnose", None)):
            result["policy"]["mistakes"] = self._mistakes(responses)
        result["examples"] = [{"prompt": p, "policy": a, "reference": b, "judgement": w}
                              for p, a, b, w in list(zip(self.prompts, responses, self.reference_responses, wins))[:8]]
        return result


def build_evaluator(task, judge, reference_model, tokenizer, split: str, n: int, seed: int,
                    sampling: SamplingConfig, lc_boot: int = 300) -> WinRateEvaluator:
    prompts = task.prompts(split, n, seed)
    reference = sample_responses(reference_model, tokenizer, prompts, sampling, seed=seed)
    return WinRateEvaluator(task, judge, prompts, reference, tokenizer, sampling, seed, reference_model, lc_boot)


def run(cfg: EvalConfig) -> dict:
    require_int(cfg.num_prompts, 1, "--num-prompts", "a number of prompts")
    cfg.sampling.check()
    out = Path(cfg.out) if cfg.out else Path(cfg.policy) / f"eval_{cfg.judge.split(':')[0]}_{cfg.split}.json"
    check_output(out, "eval", cfg.overwrite, "file")
    seed_everything(cfg.seed)
    started = time.time()
    task = load_task(cfg.task)
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(cfg.policy)
    policy = load_causal_lm(cfg.policy, device=device)
    reference = load_causal_lm(cfg.reference, device=device)
    judge = make_judge(cfg.judge, task, cfg)
    with progress("eval"):  # a bar for the reference's and the policy's samples
        evaluator = build_evaluator(task, judge, reference, tokenizer, cfg.split, cfg.num_prompts, cfg.seed, cfg.sampling)
        result = evaluator(policy)
    result.update(judge=cfg.judge, split=cfg.split, seconds=time.time() - started)
    write_json(out, result)
    save_run_config(out, cfg, "eval")
    lo, hi = result["ci95"]
    p, r = result["policy"], result["reference"]
    print(f"eval: win rate {result['win_rate']:.3f} [{lo:.3f}, {hi:.3f}] over {result['n']} {cfg.split} prompts "
          f"(judge {cfg.judge}); length-controlled {result['lc_win_rate']:.3f} [{result['lc_ci95'][0]:.3f}, "
          f"{result['lc_ci95'][1]:.3f}]; KL to the reference {result['kl_k1']:.2f} nats; "
          f"length {p['mean_length']:.1f} vs {r['mean_length']:.1f}; "
          f"repetition {p['repetition']:.3f} vs {r['repetition']:.3f} -> {out}")
    return result
