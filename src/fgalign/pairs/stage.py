"""`fgalign sample`: preference pairs the paper's way: two samples of the SFT policy per prompt, the task's
judge picks.

Optionally the judge is noisy like human annotators: P(a ≻ b) = σ((score_a − score_b) / τ) (Bradley–Terry).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import tyro

import numpy as np

from fgalign.configfile import accepts_old_names
from fgalign.data.io import write_records
from fgalign.data.outputs import check_output
from fgalign.errors import InputError
from fgalign.data.records import PreferenceRecord
from fgalign.models.policy import load_causal_lm, load_tokenizer, resolve_device
from fgalign.runinfo import save_run_config, seed_everything
from fgalign.sampling.hf import progress, sample_responses
from fgalign.sampling.rollout import SamplingConfig
from fgalign.tasks import load_task


@accepts_old_names
@dataclass
class SampleConfig:
    """Sample preference pairs from a policy and label them with the task's judge."""

    RENAMED: ClassVar[dict[str, str]] = {"n": "num_prompts"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""
    FLAT: ClassVar[tuple[str, ...]] = ("sampling",)
    """Nested settings given flat (`--max-new-tokens`, YAML `max_new_tokens`), as `fgalign ppo` takes them."""

    policy: str
    """Policy directory (usually the SFT output)."""
    out: str
    """Output JSONL of records (prompt, chosen, rejected, meta)."""
    task: str = "default"
    """Task name or import path; its judge picks the preferred response."""
    num_prompts: int = 2000
    """Number of prompts (one pair each, before dropping ties)."""
    split: str = "train"
    """Which prompt split to sample from."""
    sampling: Annotated[SamplingConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SamplingConfig)
    """Sampling settings."""
    bt_temperature: float = 0.0
    """Annotator noise τ: P(a ≻ b) = σ((s_a − s_b)/τ); 0 means the judge always picks the higher score."""
    drop_ties: bool = True
    """Drop pairs whose two responses score the same (no preference to learn from)."""
    seed: int = 0
    """Seed for prompts, sampling and annotator noise."""
    device: str = "auto"
    """"auto", "cpu" or "cuda"."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign sample` (anything else is never replaced)."""


def sample_stats(task, prompts: list[str], responses: list[str]) -> dict:
    """Judge's view of a batch of samples: score quantiles, parse rate, fraction needing an edit."""
    scores = np.array([task.score(p, r) for p, r in zip(prompts, responses)])
    need_edit = np.mean([task.minimal_edit(p, r) != r for p, r in zip(prompts, responses)])
    stats = {"n": len(responses), "score_mean": float(scores.mean()),
             "score_quantiles": {q: float(np.quantile(scores, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
             "need_edit": float(need_edit)}
    if callable(getattr(task, "diagnose", None)):
        diags = [task.diagnose(p, r) for p, r in zip(prompts, responses)]
        stats["parse_rate"] = float(np.mean([d.get("unparsable", 0) == 0 for d in diags]))
        kinds = sorted({k for d in diags for k in d})
        stats["mistakes_per_response"] = {k: float(np.mean([d.get(k, 0) for d in diags])) for k in kinds}
    return stats


def check_config(cfg: SampleConfig) -> None:
    if not isinstance(cfg.num_prompts, int) or isinstance(cfg.num_prompts, bool) or cfg.num_prompts < 1:
        raise InputError(f"expected a number of prompts >= 1, got {cfg.num_prompts!r}", field="--num-prompts")
    if not isinstance(cfg.bt_temperature, (int, float)) or cfg.bt_temperature < 0:
        raise InputError(f"expected a number >= 0, got {cfg.bt_temperature!r}", field="--bt-temperature")
    cfg.sampling.check()


def run(cfg: SampleConfig) -> dict:
    check_config(cfg)
    check_output(cfg.out, "sample", cfg.overwrite, "file")
    seed_everything(cfg.seed)
    started = time.time()
    task = load_task(cfg.task)
    tokenizer = load_tokenizer(cfg.policy)
    model = load_causal_lm(cfg.policy, device=resolve_device(cfg.device))
    prompts = task.prompts(cfg.split, cfg.num_prompts, cfg.seed)
    doubled = [p for p in prompts for _ in range(2)]
    with progress("sample"):
        responses = sample_responses(model, tokenizer, doubled, cfg.sampling, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    records, ties = [], 0
    for i, prompt in enumerate(prompts):
        a, b = responses[2 * i], responses[2 * i + 1]
        sa, sb = task.score(prompt, a), task.score(prompt, b)
        if sa == sb and cfg.drop_ties:
            ties += 1
            continue
        if cfg.bt_temperature > 0:
            a_wins = rng.random() < 1 / (1 + math.exp(-(sa - sb) / cfg.bt_temperature))
        else:
            a_wins = sa > sb or (sa == sb and rng.random() < 0.5)
        (chosen, sc), (rejected, sr) = ((a, sa), (b, sb)) if a_wins else ((b, sb), (a, sa))
        records.append(PreferenceRecord(prompt, chosen, rejected, meta={
            "score_chosen": sc, "score_rejected": sr, "judge": f"task:{task.name}", "seed": cfg.seed}))
    stats = sample_stats(task, doubled, responses)
    write_records(cfg.out, records)
    summary = {"pairs": len(records), "ties_dropped": ties, "samples": stats, "seconds": time.time() - started}
    save_run_config(cfg.out, cfg, "sample", extra={"summary": summary})
    q = stats["score_quantiles"]
    parse = f", parse {stats['parse_rate']:.1%}" if "parse_rate" in stats else ""
    print(f"sample: {len(records)} pairs ({ties} ties dropped); samples need an edit {stats['need_edit']:.1%}{parse}; "
          f"score p10/p50/p90 {q[0.1]:.2f}/{q[0.5]:.2f}/{q[0.9]:.2f}; {summary['seconds']:.0f}s -> {cfg.out}")
    return summary
