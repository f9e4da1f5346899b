"""What a pipeline run is asked to do: the command's options, the default methods and reward models, and the
YAML file's sections turned into checked stage configs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from fgalign.configfile import accepts_old_names, from_dict, with_new_names
from fgalign.editors.stage import EditConfig
from fgalign.errors import InputError
from fgalign.eval.best_of_n import BestOfNConfig
from fgalign.pairs.stage import SampleConfig
from fgalign.rl.trainer import PPOConfig
from fgalign.sampling.rollout import SamplingConfig
from fgalign.train.sft import SFTConfig

# The methods of the comparison: which reward model, which reward mode. The config may add or override.
DEFAULT_METHODS = {
    "ppo-seq": {"rm": "rm-seq", "reward": "sequence"},
    "ppo-seq-edit": {"rm": "rm-seq-edit", "reward": "sequence"},
    "ppo-token": {"rm": "rm-token", "reward": "token"},
    "ppo-token-shaped": {"rm": "rm-token", "reward": "token-shaped"},
    "ppo-token-eos": {"rm": "rm-token", "reward": "sequence"},  # control: token RM's score at EOS only
}
# The reward models: RewardConfig options of each.
DEFAULT_RMS = {
    "rm-token": {"level": "token"},
    "rm-seq": {"level": "sequence", "pairs": "preference"},
    "rm-seq-edit": {"level": "sequence", "pairs": "edit"},
}


@accepts_old_names
@dataclass
class PipelineConfig:
    """Run the whole comparison from a YAML config."""

    RENAMED: ClassVar[dict[str, str]] = {"force": "overwrite"}
    """Old option names still read, with a deprecation line, until the next release."""

    config: str
    """YAML file: task, seeds, and options per stage (sft, sample, edit, rm, ppo, eval, methods)."""
    out: str
    """Run directory; every stage writes inside it."""
    seeds: list[int] | None = None
    """PPO seeds (overrides the config's `seeds`); SFT, pairs and reward models are shared by all seeds."""
    methods: list[str] | None = None
    """Run only these methods (default: all in the config)."""
    overwrite: bool = False
    """Redo every stage, even those whose outputs exist (a rerun otherwise skips them, and refuses a stage whose
    stored config differs from the new one; PPO resumes from its last checkpoint)."""
    rollout: Literal["hf", "vllm"] | None = None
    """PPO's sampler for every method (overrides the config's `ppo.rollout`): "hf" or "vllm" (CUDA GPU)."""
    edits: str | None = None
    """Edit records to train on instead of sampling pairs and running the editor, e.g. human edits from
    `fgalign annotate export`; checked and copied to RUN/edits.jsonl. Held-out edits still come from the
    config's editor."""


BF16_KEYS = ("bf16", "rm_bf16")


def resolve_auto_bf16(raw: Any, native: bool) -> Any:
    """`bf16: auto` (and `rm_bf16: auto`) anywhere in a pipeline config: bf16 where the hardware runs it natively,
    fp32 elsewhere, so one config file suits machines with and without avx512_bf16."""
    if isinstance(raw, dict):
        return {k: native if k in BF16_KEYS and v == "auto" else resolve_auto_bf16(v, native) for k, v in raw.items()}
    return raw


def build_configs(raw: dict, run: Path, path: str) -> dict[str, Any]:
    """Stage configs from the YAML dict, each checked for unknown keys."""
    import torch

    from fgalign.models.precision import native_bf16

    raw = resolve_auto_bf16(raw, native_bf16("cuda" if torch.cuda.is_available() else "cpu"))
    task = raw.get("task", "default")
    known = {"task", "seeds", "sft", "sample", "heldout", "edit", "rm", "rms", "ppo", "eval", "methods", "kl_targets",
             "best_of_n"}
    for key in raw:
        if key not in known:
            raise InputError(f"unknown section '{key}'; expected one of {sorted(known)}", path=path, field=key)
    cfgs = {
        "task": task,
        "sft": from_dict(SFTConfig, raw.get("sft", {}), "sft", path, out=str(run / "sft"), task=task),
        "sample": from_dict(SampleConfig, raw.get("sample", {}), "sample", path, policy=str(run / "sft"),
                            out=str(run / "pairs.jsonl"), task=task, split="train"),
        "heldout": from_dict(SampleConfig, raw.get("heldout", {"num_prompts": 300}), "heldout", path,
                             policy=str(run / "sft"), out=str(run / "heldout_pairs.jsonl"), task=task, split="valid"),
        "edit": from_dict(EditConfig, raw.get("edit", {}), "edit", path, data=str(run / "pairs.jsonl"),
                          out=str(run / "edits.jsonl"), editor="task", task=task),
    }
    cfgs["edit_heldout"] = dataclasses.replace(cfgs["edit"], data=str(run / "heldout_pairs.jsonl"),
                                               out=str(run / "heldout_edits.jsonl"))
    cfgs["rm_common"] = raw.get("rm", {})
    cfgs["rms"] = {name: spec for name, spec in {**DEFAULT_RMS, **(raw.get("rms") or {})}.items()
                   if spec is not None}  # null: not trained (no method of this config uses it)
    cfgs["ppo"] = with_new_names(PPOConfig, raw.get("ppo", {}), "ppo", path)  # merged into every method: renamed here
    cfgs["eval"] = {"n_valid": 200, "n_test": 400, "judge": "task", **raw.get("eval", {})}
    # A method given as null (`ppo-seq-edit: null`) is left out of this config's comparison.
    cfgs["methods"] = {name: with_new_names(PPOConfig, spec, f"methods.{name}", path)
                       for name, spec in {**DEFAULT_METHODS, **(raw.get("methods") or {})}.items() if spec is not None}
    # Optional: each reward model's best-of-n ceiling on test prompts, with PPO's sampling (its `rms` are the
    # methods' reward models, filled in once the methods of this run are known).
    cfgs["best_of_n"] = None if raw.get("best_of_n") is None else from_dict(
        BestOfNConfig, raw["best_of_n"], "best_of_n", path, policy=str(run / "sft"), rms=[], task=task,
        out=str(run / "best_of_n.json"), sampling=SamplingConfig(max_new_tokens=cfgs["ppo"].get("max_new_tokens", 24)))
    return cfgs
