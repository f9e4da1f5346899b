"""Runs a pipeline: the plan (`pipeline/plan.py`) is built and checked first, then executed stage by stage,
skipping stages whose outputs exist (unless --overwrite) and resuming a killed PPO run from its checkpoint."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fgalign.configfile import read_yaml
from fgalign.data import ReadStats, read_records, write_records
from fgalign.editors.stage import run as edit
from fgalign.errors import InputError
from fgalign.eval.best_of_n import run as best_of_n
from fgalign.eval.rm_eval import evaluate_rm
from fgalign.eval.winrate import build_evaluator, make_judge
from fgalign.labels.project import label_pair
from fgalign.labels.stage import marked_text
from fgalign.models.policy import load_causal_lm, load_tokenizer, resolve_device
from fgalign.models.reward import load_reward_model
from fgalign.pairs.stage import run as sample
from fgalign.pipeline.config import PipelineConfig, build_configs
from fgalign.pipeline.plan import PPORun, check_stored_configs, make_plan, trained_rms
from fgalign.report.summary import results_table, write_report
from fgalign.rl.checkpoint import latest_checkpoint
from fgalign.rl.metrics_log import LOG_FILE
from fgalign.rl.trainer import train_ppo
from fgalign.runinfo import library_versions, peak_rss, write_json
from fgalign.sampling.rollout import SamplingConfig
from fgalign.sampling.vllm import vllm_problem
from fgalign.tasks import load_task
from fgalign.train.guard import last_checkpoint
from fgalign.train.reward import run as train_rm
from fgalign.train.sft import run as sft


class Stages:
    """Runs named stages, skipping those whose output exists and naming the one that fails."""

    def __init__(self, run_dir: Path, overwrite: bool):
        self.run_dir, self.overwrite, self.times, self.peaks = run_dir, overwrite, {}, {}

    def __call__(self, name: str, output: Path, fn: Callable[[], Any]) -> bool:
        if output.exists() and not self.overwrite:
            print(f"[pipeline] {name}: exists, skipped ({output})")
            return False
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        print(f"[pipeline] {name} ...")
        started = time.time()
        try:
            with peak_rss() as peak:
                fn()
        except InputError as e:
            raise InputError(f"stage '{name}' failed: {e}") from None
        except Exception as e:
            raise RuntimeError(f"pipeline stage '{name}' failed ({type(e).__name__}: {e}); "
                               f"earlier outputs in {self.run_dir} are intact, rerun to continue") from e
        self.times[name], self.peaks[name] = round(time.time() - started, 1), peak["gib"]
        return True


def run_ppo_method(planned: PPORun, cfgs: dict, evaluators: dict, force: bool = False) -> dict:
    """One PPO run of the plan with validation evals along the way; then the best validation checkpoint on test.

    A run killed part-way resumes from its last checkpoint (its config was compared before anything ran)."""
    ppo_cfg, name, seed = planned.config, planned.method, planned.seed
    out = Path(ppo_cfg.out)
    found = None if force else latest_checkpoint(out)
    if found is not None:
        print(f"[pipeline] ppo {name} seed {seed}: resuming from {found}")
    ppo_cfg = dataclasses.replace(ppo_cfg, resume=found is not None, overwrite=found is None)
    train_ppo(ppo_cfg, eval_fn=evaluators["valid"])
    # The whole run from its log: a resumed process holds only the iterations after its checkpoint.
    records = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line.strip()]
    result = {"history": records, "final": records[-1] if records else {},
              "evals": [{"iteration": r["iteration"], **{k: v for k, v in r.items() if k.startswith("eval_")}}
                        for r in records if "eval_win_rate" in r]}
    evals = result["evals"]
    best = max(evals, key=lambda e: (e["eval_win_rate"], -e["iteration"]))
    best_dir = out / "eval_checkpoints" / f"iter_{best['iteration']:06d}"
    test = evaluators["test"](load_causal_lm(best_dir, device=ppo_device(cfgs)).eval(), best["iteration"])
    train = {h["iteration"]: h for h in result["history"]}
    summary = {
        "method": name, "seed": seed, "rm": planned.rm, "reward": ppo_cfg.reward, "kl_target": ppo_cfg.kl_target,
        "selected_iteration": best["iteration"], "test": test,
        "win_rate": test["win_rate"], "ci95": test["ci95"],
        "lc_win_rate": test.get("lc_win_rate"), "lc_ci95": test.get("lc_ci95"),
        # Every evaluation: the judge's verdict beside what could explain it (RM reward of the training batch,
        # the oracle's score, length, truncation, mistakes by kind, and the KL of the evaluated policy).
        "valid_curve": [{"iteration": e["iteration"], "win_rate": e["eval_win_rate"],
                         "lc_win_rate": e.get("eval_lc_win_rate"), "kl": e.get("eval_kl_k1"),
                         "oracle_score": e["eval_policy"].get("oracle_score"),
                         "length": e["eval_policy"].get("mean_length"),
                         "truncation": e["eval_policy"].get("truncation_rate"),
                         "mistakes": e["eval_policy"].get("mistakes"),
                         "rm_score": train.get(e["iteration"], {}).get("rm_score"),
                         "train_kl": train.get(e["iteration"], {}).get("kl_k1")}
                        for e in evals],
        "history": [{k: h.get(k) for k in ("iteration", "rm_score", "kl_k1", "kl_k3", "beta", "response_length",
                                            "truncation_rate", "task_score", "explained_variance")}
                    for h in result["history"]],
        # The KL, length and truncation of the policy that was evaluated, on the test prompts.
        "final_kl": test.get("kl_k1"), "final_length": test["policy"]["mean_length"],
        "final_truncation": test["policy"].get("truncation_rate"),
    }
    write_json(out / "summary.json", summary)
    shutil.rmtree(out / "eval_checkpoints", ignore_errors=True)  # keep the selected one only
    return summary


def ppo_device(cfgs: dict):
    """Where PPO puts the policy: the evaluators' SFT reference and selected checkpoints go there too (the KL
    to the reference runs both models on the evaluated policy's samples, on its device)."""
    return resolve_device(cfgs["ppo"].get("device", "auto"))


def make_evaluators(cfgs: dict, run: Path) -> dict:
    """Validation and test evaluators with the SFT reference's responses sampled once for every method."""
    task = load_task(cfgs["task"])
    tokenizer = load_tokenizer(run / "sft")
    sft = load_causal_lm(run / "sft", device=ppo_device(cfgs)).eval()
    ev = cfgs["eval"]
    judge = make_judge(ev["judge"], task)
    sampling = SamplingConfig(max_new_tokens=cfgs["ppo"].get("max_new_tokens", 24))
    # Validation runs every few iterations and only selects: no bootstrap of its length-controlled rate.
    return {split: build_evaluator(task, judge, sft, tokenizer, split, ev[f"n_{split}"], 1000 + i, sampling,
                                   lc_boot=0 if split == "valid" else 300)
            for i, split in enumerate(("valid", "test"))}


def run(cfg: PipelineConfig) -> dict:
    raw = read_yaml(cfg.config)
    run_dir = Path(cfg.out)
    cfgs = build_configs(raw, run_dir, cfg.config)
    if cfg.rollout is not None:
        cfgs["ppo"] = {**cfgs["ppo"], "rollout": cfg.rollout}
    if cfgs["ppo"].get("rollout") == "vllm" and (problem := vllm_problem()) is not None:
        raise InputError(problem, field="--rollout")  # now, not after SFT
    seeds = cfg.seeds if cfg.seeds is not None else raw.get("seeds", [0])
    methods = {m: s for m, s in cfgs["methods"].items() if cfg.methods is None or m in cfg.methods}
    if cfg.methods and (unknown := set(cfg.methods) - set(cfgs["methods"])):
        raise InputError(f"unknown method(s) {sorted(unknown)}; expected {sorted(cfgs['methods'])}", field="--methods")
    if cfgs["best_of_n"] is not None:
        rms = [str(run_dir / name) for name in trained_rms(methods)]
        cfgs["best_of_n"] = dataclasses.replace(cfgs["best_of_n"], rms=rms)
    kl_targets = raw.get("kl_targets") or []
    plan = make_plan(cfgs, run_dir, cfg.config, methods, seeds, kl_targets, bool(cfg.edits))
    if cfg.edits:
        read_records(cfg.edits)  # a bad file stops here, naming file and line, not after SFT
    check_stored_configs(run_dir, plan.stages, cfg.overwrite)  # creates the run directory: all input was checked
    (run_dir / "pipeline_config.yaml").write_text(Path(cfg.config).read_text())
    stage = Stages(run_dir, cfg.overwrite)
    started = time.time()

    stage("sft", run_dir / "sft", lambda: sft(resumable(cfgs["sft"], cfg.overwrite)))
    if cfg.edits:  # given edits (e.g. human ones): no sampling, no editor
        stage("edits from --edits", run_dir / "edits.jsonl", lambda: use_edits(cfg.edits, run_dir / "edits.jsonl"))
        check_same_edits(cfg.edits, run_dir / "edits.jsonl")
    else:
        stage("sample", run_dir / "pairs.jsonl", lambda: sample(cfgs["sample"]))
        stage("edit", run_dir / "edits.jsonl", lambda: edit(cfgs["edit"]))
    show_edits(run_dir / "edits.jsonl", run_dir / "sft")
    stage("sample held-out", run_dir / "heldout_pairs.jsonl", lambda: sample(cfgs["heldout"]))
    stage("edit held-out", run_dir / "heldout_edits.jsonl", lambda: edit(cfgs["edit_heldout"]))
    rm_metrics = {}
    heldout = read_records(run_dir / "heldout_edits.jsonl")
    for rm_name, rm_cfg in plan.rms.items():
        stage(f"train-rm {rm_name}", run_dir / rm_name, lambda c=rm_cfg: train_rm(resumable(c, cfg.overwrite)))
        metrics_path = run_dir / rm_name / "eval_heldout.json"
        if not metrics_path.exists() or cfg.overwrite:
            write_json(metrics_path, evaluate_rm(load_reward_model(run_dir / rm_name), heldout))
        rm_metrics[rm_name] = json.loads(metrics_path.read_text())

    evaluators = make_evaluators(cfgs, run_dir)
    results: dict[str, Any] = {"methods": {}, "reward_models": rm_metrics, "seeds": seeds}
    if cfgs["best_of_n"] is not None:  # the reward models' own ceilings, to read PPO's results against
        stage("best-of-n", run_dir / "best_of_n.json", lambda: best_of_n(cfgs["best_of_n"]))
        results["best_of_n"] = json.loads((run_dir / "best_of_n.json").read_text())

    def seeds_of(name: str, subdir: str = "") -> dict:
        per_seed = {}
        for planned in plan.ppo[(name, subdir)]:
            label, seed = planned.label, planned.seed
            summary_path = Path(planned.config.out) / "summary.json"
            if summary_path.exists() and not cfg.overwrite:
                print(f"[pipeline] {label}: exists, skipped")
                per_seed[seed] = json.loads(summary_path.read_text())
                continue
            t0 = time.time()
            print(f"[pipeline] {label} ...")
            try:
                with peak_rss() as peak:
                    per_seed[seed] = run_ppo_method(planned, cfgs, evaluators, cfg.overwrite)
            except InputError:
                raise
            except Exception as e:
                raise RuntimeError(f"pipeline stage '{label}' failed ({type(e).__name__}: {e}); "
                                   f"earlier outputs are intact, rerun to continue") from e
            stage.times[label], stage.peaks[label] = round(time.time() - t0, 1), peak["gib"]
        return aggregate(per_seed)

    for name in methods:
        results["methods"][name] = seeds_of(name)
    # The frontier: every method again at each KL target (the plan reuses the main comparison's own target).
    # Target by target, every method at one target before the next: a run cut short still holds matched pairs.
    if kl_targets:
        results["frontier"] = {name: [] for name in methods}
        for i in range(len(kl_targets)):
            for name in methods:
                target, subdir = plan.frontier[name][i]
                agg = results["methods"][name] if subdir == "" else seeds_of(name, subdir)
                results["frontier"][name].append({"kl_target": target, "win_rate": agg["win_rate"], "kl": agg["kl"],
                                                  "lc_win_rate": agg["lc_win_rate"], "length": agg["length"]})

    results.update(stage_seconds=stage.times, stage_peak_rss_gib=stage.peaks, total_seconds=round(time.time() - started, 1),
                   versions=library_versions(), config=raw, command=f"fgalign pipeline --config {cfg.config} --out {cfg.out}")
    write_json(run_dir / "results.json", results)
    report = write_report(run_dir, results, cfgs)
    print("\n" + results_table(results) + "\n")
    print(f"[pipeline] done in {results['total_seconds']:.0f}s: {run_dir / 'results.json'}, {report}")
    return results


def resumable(cfg: Any, force: bool) -> Any:
    """sft or train-rm killed part-way continues from its Trainer checkpoint (its config was compared first);
    --overwrite starts afresh."""
    found = last_checkpoint(Path(cfg.out).with_name(Path(cfg.out).name + ".checkpoints"))
    return dataclasses.replace(cfg, resume=found is not None and not force, overwrite=force)


def use_edits(src: str, dest: Path) -> None:
    """Check an edits file with the data layer's reader (errors name file and line) and copy it in."""
    stats = ReadStats()
    if not read_records(src, require_edited=True, stats=stats):
        raise InputError(f"no record has an edit that differs from its rejected response ({stats.read} read)",
                         path=src, field="edited")
    write_records(dest, read_records(src))


def check_same_edits(src: str, dest: Path) -> None:
    """A run directory whose edits differ from --edits would silently train on the old ones: refuse."""
    if [r.to_dict() for r in read_records(src)] != [r.to_dict() for r in read_records(dest)]:
        raise InputError(f"{dest} exists and differs from --edits; use --overwrite or another --out", path=src,
                         field="--edits")


def show_edits(edits: Path, tokenizer_dir: Path, n: int = 4) -> None:
    """Print a few edit pairs with the labelled tokens marked: what the token reward model learns from."""
    tok = load_tokenizer(tokenizer_dir)
    for rec in read_records(edits, require_edited=True)[:n]:
        lab = label_pair(tok, rec.prompt, rec.rejected, rec.edited, mode="chars")
        print(f"  {rec.prompt}\n    original: {marked_text(tok, lab['rejected_ids'], lab['rejected_labels'])}"
              f"\n    edited:   {marked_text(tok, lab['edited_ids'], lab['edited_labels'])}")


def aggregate(per_seed: dict) -> dict:
    """Mean and spread over seeds of the final (test) win rate, KL and length."""
    def stat(key):
        v = np.array([s[key] for s in per_seed.values() if s.get(key) is not None], dtype=float)
        return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    return {"seeds": {str(k): v for k, v in per_seed.items()}, "win_rate": stat("win_rate"),
            "lc_win_rate": stat("lc_win_rate"),
            "kl": stat("final_kl"), "length": stat("final_length"), "truncation": stat("final_truncation"),
            "selected_iteration": stat("selected_iteration")}
