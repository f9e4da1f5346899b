"""One PPO iteration: fgalign vs TRL's PPOTrainer (trl==1.12.0, `trl.experimental.ppo`) on identical tiny models.

    .venv/bin/python benchmarks/ppo_vs_trl.py [--rounds 5] [--batch 64] [--response-length 24] [--threads 2]

Both sides get the same randomly initialised GPT-2 (default 2 layers, 128-d, vocab 512) as policy, reference,
value and sequence reward model backbone, the same prompts, batch, response length, 4 epochs x 4 minibatches,
temperature 1 and no top-k/top-p, fp32. An iteration is timed from one iteration's end to the next (the first
is warm-up), wall clock, everything included (generation, scoring, update); a run's figure is the median of
its timed iterations. Each side runs in a fresh process with the same environment (threads pinned through
OMP_NUM_THREADS, MKL_NUM_THREADS and torch.set_num_threads); the two alternate for `--rounds` rounds and each
side's median over rounds counts. TRL is installed into its own venv (benchmarks/.venv-trl, torch,
transformers and accelerate pinned to ours in the same pip command) and never imported here.

Pinned on the TRL side (its defaults differ): bf16=False (TRL defaults to True, which on a CPU without native
bf16 is emulated and slow), gradient_checkpointing=False (default True; TRL's PPO loop does not use it, pinned
anyway). Each side's effective settings are read back from its own objects and printed. Differences that stay,
by design: TRL's optimizer is one AdamW over policy+value and it does not clip gradients; fgalign keeps two
AdamWs and clips each model's gradient norm to 1 (more work on fgalign's side, not less). With 2 or more
threads fgalign runs the policy's and the value model's passes side by side, one thread each
(`fgalign.models.side_by_side`); TRL runs them one after the other on both threads.

Prints per-round seconds per iteration, each side's median and, last, `ratio: X.XX` (fgalign / TRL, lower is
better). Target: <= 0.5.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_VERSION = "1.12.0"

TRL_SCRIPT = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
setup = json.loads(sys.argv[1])
d = setup["dir"]
tok = AutoTokenizer.from_pretrained(d + "/policy")
tok.padding_side = "left"
policy = AutoModelForCausalLM.from_pretrained(d + "/policy")
ref = AutoModelForCausalLM.from_pretrained(d + "/policy")
reward = AutoModelForSequenceClassification.from_pretrained(d + "/policy", num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(d + "/policy", num_labels=1)
for m in (reward, value):
    m.config.pad_token_id = tok.pad_token_id
data = Dataset.from_dict({"input_ids": setup["prompts"]})
B, iters = setup["batch"], setup["iterations"]
args = PPOConfig(output_dir=d + "/trl-out", per_device_train_batch_size=B, gradient_accumulation_steps=1,
                 total_episodes=B * iters, num_ppo_epochs=4, num_mini_batches=4, response_length=setup["response_length"],
                 local_rollout_forward_batch_size=B, learning_rate=3e-5, temperature=1.0, stop_token="eos",
                 kl_coef=0.1, gamma=1.0, lam=0.95, report_to="none", save_strategy="no", num_sample_generations=0,
                 use_cpu=True, logging_steps=1, seed=0, bf16=False, fp16=False, gradient_checkpointing=False,
                 dataloader_num_workers=0, torch_compile=False)
ends = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        ends.append(time.perf_counter())
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                     train_dataset=data, value_model=value, callbacks=[Clock()])
a, opt = trainer.args, trainer.optimizer
models = {"policy": policy, "value": value}
settings = {
    "batch": a.local_batch_size, "minibatch_rows": a.local_mini_batch_size, "micro_batch_rows": min(a.per_device_train_batch_size, a.local_mini_batch_size),
    "epochs": a.num_ppo_epochs, "minibatches": a.num_mini_batches, "response_length": a.response_length,
    "temperature": a.temperature, "bf16": a.bf16, "fp16": a.fp16, "gradient_checkpointing": a.gradient_checkpointing,
    "param_dtypes": sorted({str(p.dtype) for m in models.values() for p in m.parameters()}),
    "optimizer": f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')}) x1",
    "grad_clip": "none", "schedule": "policy then value (one wrapper model), intra-op threads",
    "attn_implementation": policy.config._attn_implementation,
    "active_dropout": sum(isinstance(m, torch.nn.Dropout) and m.training and m.p > 0 for x in models.values() for m in x.modules()),
    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
}
t0 = time.perf_counter()
trainer.train()
print("RESULT " + json.dumps({"ends": ends, "start": t0, "settings": settings}))
"""


def ensure_trl_venv() -> Path:
    import importlib.metadata as md

    python = TRL_VENV / "bin" / "python"
    ok = python.exists() and subprocess.run(
        [str(python), "-c", f"import trl; assert trl.__version__ == '{TRL_VERSION}'"], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
        pins = [f"torch=={md.version('torch').split('+')[0]}", f"trl=={TRL_VERSION}",
                f"transformers=={md.version('transformers')}", f"accelerate=={md.version('accelerate')}", "datasets"]
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


def build_models(d: Path, n_prompts: int, n_layer: int = 2, d_model: int = 128) -> list[list[int]]:
    """Tokenizer, policy and sequence RM shared by both sides; returns the tokenized prompts."""
    import torch

    from fgalign.data.tokenize import encode_prompt
    from fgalign.models.policy import TinyModelConfig, build_tiny_causal_lm, load_tokenizer
    from fgalign.models.reward import build_reward_model
    from fgalign.tasks.base import load_task

    task = load_task("default")
    tok = load_tokenizer(task.tokenizer(d / "tok"))
    torch.manual_seed(0)
    policy = build_tiny_causal_lm(TinyModelConfig(n_layer=n_layer, d_model=d_model, n_head=4, max_len=256), tok)
    policy.save_pretrained(d / "policy")
    tok.save_pretrained(d / "policy")
    build_reward_model(d / "policy", level="sequence", loss="bt").save(d / "rm")
    return [encode_prompt(tok, p) for p in task.prompts("train", n_prompts, 0)]


def per_iteration(ends: list[float]) -> float:
    """Median gap between consecutive iteration ends (skips the first, warm-up iteration)."""
    return statistics.median(b - a for a, b in zip(ends, ends[1:]))


def worker_fgalign(d: Path, batch: int, response_length: int, iterations: int, threads: int) -> dict:
    """One fgalign run in this (fresh) process; returns timings and the settings read back from its objects."""
    import torch

    from fgalign.rl.trainer import PPOConfig, train_ppo

    torch.set_num_threads(threads)
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
            from fgalign.models.side_by_side import can_run_side_by_side

            seen.update(attn_implementation=model.config._attn_implementation, active_dropout=sum(
                isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()),
                schedule="policy | value in 2 threads" if can_run_side_by_side((model,)) else "one after the other")
        return {}

    out = Path(tempfile.mkdtemp(dir=d, prefix="fgalign-out-"))
    cfg = PPOConfig(policy=str(d / "policy"), rm=str(d / "rm"), out=str(out), reward="sequence",
                    task="default", num_prompts=batch * iterations, iterations=iterations,
                    batch_size=batch, max_new_tokens=response_length, ppo_epochs=4, minibatches=4, temperature=1.0,
                    kl_target=None, save_steps=0, eval_every=1, log_task_score=False, threads=threads)
    result = train_ppo(cfg, eval_fn=clock)
    torch.optim.AdamW = adamw
    params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
    seen.update(batch=cfg.batch_size, minibatch_rows=cfg.batch_size // cfg.minibatches,
                micro_batch_rows=cfg.batch_size // cfg.minibatches, epochs=cfg.ppo_epochs, minibatches=cfg.minibatches,
                response_length=cfg.max_new_tokens, temperature=cfg.temperature, bf16=False, fp16=False,
                gradient_checkpointing=False, param_dtypes=sorted({str(p.dtype) for p in params}),
                optimizer=" + ".join(f"{type(o).__bases__[0].__name__}(fused={o.defaults.get('fused')}, "
                                     f"foreach={o.defaults.get('foreach')})" for o in optimizers),
                grad_clip=f"per model, max norm {cfg.max_grad_norm}", torch_threads=torch.get_num_threads(),
                torch=torch.__version__)
    split = {k: statistics.median(h[k] for h in result["history"][1:])
             for k in ("time_generate", "time_score", "time_train")}
    return {"per_iteration_s": per_iteration(ends), "response_length": result["final"]["response_length"],
            "settings": seen, **split}


def thread_env(threads: int) -> dict[str, str]:
    """The same environment for both sides' processes."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
                ACCELERATE_MIXED_PRECISION="no")


def time_fgalign(d: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(d), "--batch", str(args.batch), "--response-length",
           str(args.response_length), "--iterations", str(args.iterations), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=thread_env(args.threads), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"fgalign run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def time_trl(d: Path, prompts: list[list[int]], args) -> dict:
    python = ensure_trl_venv()
    setup = {"dir": str(d), "prompts": prompts, "batch": args.batch, "iterations": args.iterations,
             "response_length": args.response_length}
    proc = subprocess.run([str(python), "-c", TRL_SCRIPT, json.dumps(setup), str(args.threads)],
                          env=thread_env(args.threads), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"TRL run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    return {"per_iteration_s": per_iteration(result["ends"]), "settings": result["settings"]}


def run_rounds(d: Path, prompts, args, echo=print) -> dict[str, list[dict]]:
    """Alternate the two sides (the first side alternates too); every run's result."""
    runs: dict[str, list[dict]] = {"fgalign": [], "trl": []}
    for r in range(args.rounds):
        order = ["trl", "fgalign"] if r % 2 == 0 else ["fgalign", "trl"]
        for which in order:
            res = time_trl(d, prompts, args) if which == "trl" else time_fgalign(d, args)
            runs[which].append(res)
            extra = (f"  (generate {res['time_generate']:.2f} / score {res['time_score']:.2f} / train "
                     f"{res['time_train']:.2f}, mean response {res['response_length']:.1f} tokens)"
                     if which == "fgalign" else "")
            echo(f"round {r + 1} {which:8s} {res['per_iteration_s']:.3f} s/iteration{extra}")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations + 1 warm-up, per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each; medians count")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        res = worker_fgalign(Path(args.worker), args.batch, args.response_length, args.iterations, args.threads)
        print("RESULT " + json.dumps(res))
        return
    ensure_trl_venv()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prompts = build_models(d, args.batch * args.iterations, args.layers, args.d_model)
        print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
        runs = run_rounds(d, prompts, args)
    print("\neffective settings (read back from each run's objects):")
    ours, theirs = runs["fgalign"][0]["settings"], runs["trl"][0]["settings"]
    for k in list(ours) + [k for k in theirs if k not in ours]:
        print(f"  {k:24s} fgalign={ours.get(k)!s:50s} trl={theirs.get(k)!s}")
    med = {k: statistics.median(r["per_iteration_s"] for r in v) for k, v in runs.items()}
    ratio = med["fgalign"] / med["trl"]
    print(f"\none PPO iteration ({args.layers}L{args.d_model}d, batch {args.batch}, {args.response_length} new tokens, "
          f"4 epochs x 4 minibatches, {args.threads} thread(s)), median of {args.rounds} rounds:")
    for name, label in (("trl", f"TRL {TRL_VERSION} PPOTrainer"), ("fgalign", "fgalign            ")):
        per_round = " ".join(f"{r['per_iteration_s']:.2f}" for r in runs[name])
        print(f"  {label} {med[name]:.3f} s  (rounds: {per_round})")
    print(f"  load average after: {os.getloadavg()[0]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": vars(args), "runs": runs, "median_s": med,
                                              "ratio_fgalign_over_trl": ratio}, indent=2) + "\n")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
