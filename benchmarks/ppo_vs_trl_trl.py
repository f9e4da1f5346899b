"""The TRL side of benchmarks/ppo_vs_trl.py (TRL's PPOTrainer, trl==1.12.0, `trl.experimental.ppo`, in a child
process of its own venv), and the child-process plumbing both sides share: one environment, the RESULT line,
the iteration clock.

Pinned on the TRL side (its defaults differ): bf16 off unless `--bf16` (TRL defaults to True: emulated and slow
on a CPU without native bf16), gradient_checkpointing=False. TRL masks every position whose id equals the pad
id, so with SmolLM2 (pad == EOS == <|im_end|>, which the chat template puts inside every prompt) its pad is set
to a token that occurs in no prompt (<|endoftext|>, which fgalign pads with too; its masks are explicit).

TRL lives in its own venv (`--trl-venv`, default benchmarks/.venv-trl: torch, transformers, accelerate and peft
pinned to this venv's versions in the same pip command as trl==1.12.0); it is created when missing and never
imported here: TRL_SCRIPT runs in that venv's python (`-c`), reading the plan from a JSON file, so it needs
nothing from these files.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRL_VENV = HERE / ".venv-trl"
TRL_VERSION = "1.12.0"
# A token no chat-rendered prompt contains, for TRL's pad when the tokenizer's pad is EOS (TRL masks pad ids).
TRL_PAD_CANDIDATES = ("<|endoftext|>", "<unk>", "<pad>")

TRL_SCRIPT = r"""
import json, resource, sys, time
import torch
plan = json.loads(open(sys.argv[1]).read())
torch.set_num_threads(plan["threads"])
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
import trl.experimental.ppo.ppo_trainer as ppo_module
from trl.experimental.ppo import PPOConfig, PPOTrainer
tok = AutoTokenizer.from_pretrained(plan["policy"])
tok.padding_side = "left"
if plan["trl_pad"] is not None:
    tok.pad_token = plan["trl_pad"]
assert tok.pad_token_id != tok.eos_token_id and all(tok.pad_token_id not in p for p in plan["prompts"])
fp32 = dict(dtype=torch.float32)
policy = AutoModelForCausalLM.from_pretrained(plan["policy"], **fp32)
reward = AutoModelForSequenceClassification.from_pretrained(plan["rm_trl"], num_labels=1, **fp32)
value = AutoModelForSequenceClassification.from_pretrained(plan["policy"], num_labels=1, **fp32)
for m in (reward, value):
    m.config.pad_token_id = tok.pad_token_id
peft_config = ref = None
if plan["lora"]:
    from peft import LoraConfig
    peft_config = LoraConfig(r=plan["lora"]["r"], lora_alpha=plan["lora"]["alpha"], lora_dropout=0.0,
                             target_modules="all-linear", task_type="CAUSAL_LM")
else:
    ref = AutoModelForCausalLM.from_pretrained(plan["policy"], **fp32)
data = Dataset.from_dict({"input_ids": plan["prompts"]})
B, iters = plan["batch"], plan["iterations"]
args = PPOConfig(output_dir=plan["out"], per_device_train_batch_size=B, gradient_accumulation_steps=1,
                 total_episodes=B * iters, num_ppo_epochs=plan["ppo_epochs"], num_mini_batches=plan["minibatches"],
                 response_length=plan["response_length"], local_rollout_forward_batch_size=B,
                 learning_rate=plan["lr"], temperature=1.0, stop_token="eos", kl_coef=plan["kl_coef"],
                 kl_estimator="k1", gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.5,
                 report_to="none", save_strategy="no", num_sample_generations=0, use_cpu=True, logging_steps=1,
                 seed=0, bf16=plan["bf16"], fp16=False, gradient_checkpointing=False, dataloader_num_workers=0,
                 torch_compile=False, disable_tqdm=True)
ends, gen = [], []
original_batch_generation = ppo_module.batch_generation
def timed_batch_generation(model, queries, *a, **k):
    t0 = time.perf_counter()
    out = original_batch_generation(model, queries, *a, **k)
    responses = out[0][:, queries.shape[1]:]
    is_eos = responses == tok.eos_token_id
    lengths = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, responses.shape[1])
    gen.append({"seconds": time.perf_counter() - t0, "columns": responses.shape[1], "end": time.perf_counter(),
                "mean_length": lengths.float().mean().item()})
    return out
ppo_module.batch_generation = timed_batch_generation
update_starts = {}  # iteration -> its first forward with gradients (scoring ends, the update starts)
original_forward = ppo_module.forward
def marked_forward(*a, **k):
    if torch.is_grad_enabled():
        update_starts.setdefault(len(ends), time.perf_counter())
    return original_forward(*a, **k)
ppo_module.forward = marked_forward
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        ends.append(time.perf_counter())
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                     train_dataset=data, value_model=value, callbacks=[Clock()], peft_config=peft_config)
a, opt = trainer.args, trainer.optimizer
models = {"policy": trainer.policy_model, "value": value}
trained = [p for g in opt.param_groups for p in g["params"]]
settings = {
    "batch": a.local_batch_size, "minibatch_rows": a.local_mini_batch_size,
    "micro_batch_rows": min(a.per_device_train_batch_size, a.local_mini_batch_size),
    "epochs": a.num_ppo_epochs, "minibatches": a.num_mini_batches, "response_length": a.response_length,
    "rollout_rows_per_pass": a.local_rollout_forward_batch_size, "temperature": a.temperature, "lr": a.learning_rate,
    "kl_coef": f"{a.kl_coef} fixed, {a.kl_estimator}", "bf16": a.bf16, "fp16": a.fp16,
    "autocast": trainer.accelerator.mixed_precision,
    "gradient_checkpointing": a.gradient_checkpointing,
    "param_dtypes": sorted({str(p.dtype) for m in models.values() for p in m.parameters()}),
    "lora": (f"r={plan['lora']['r']} alpha={plan['lora']['alpha']} dropout=0 all-linear "
             f"({len(trainer.policy_model.peft_config['default'].target_modules)} module names)"
             if plan["lora"] else "none"),
    "reference": "policy, adapter disabled" if trainer.ref_model is None else "separate copy",
    "trainable_params": f"{sum(p.numel() for p in trained) / 1e6:.3f}M",
    "optimizer": f"{type(getattr(opt, 'optimizer', opt)).__name__}(fused={opt.defaults.get('fused')}, "
                 f"foreach={opt.defaults.get('foreach')}) x1",
    "advantage": "gae, value model", 
    "grad_clip": "none", "schedule": "policy then value (one wrapper model), intra-op threads",
    "logprobs_old": "from the sampling pass",
    "pad_token": f"{tok.pad_token} ({tok.pad_token_id})", "eos_token": f"{tok.eos_token} ({tok.eos_token_id})",
    "attn_implementation": policy.config._attn_implementation,
    "active_dropout": sum(isinstance(m, torch.nn.Dropout) and m.training and m.p > 0
                          for x in models.values() for m in x.modules()),
    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
}
trainer.train()
for i, g in enumerate(gen):
    g["score"], g["update"] = update_starts[i] - g["end"], ends[i] - update_starts[i]
print("RESULT " + json.dumps({"ends": ends, "generation": gen, "settings": settings,
                              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# ----------------------------------------------------------------------------------------------- environment
def trl_pins() -> list[str]:
    """trl plus this venv's torch/transformers/accelerate/peft, for the one pip command of the TRL venv."""
    import importlib.metadata as md

    pins = [f"torch=={md.version('torch').split('+')[0]}", f"trl=={TRL_VERSION}", "datasets"]
    for name in ("transformers", "accelerate", "peft"):
        try:
            pins.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return pins


def ensure_trl_venv(venv: Path = TRL_VENV) -> Path:
    """The TRL venv's python, created (one pip command, torch pinned) when missing or on another trl version."""
    python = venv / "bin" / "python"
    ok = python.exists() and subprocess.run(
        [str(python), "-c", f"import trl, peft; assert trl.__version__ == '{TRL_VERSION}'"],
        capture_output=True).returncode == 0
    if not ok:
        print(f"creating {venv} ({' '.join(trl_pins())}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *trl_pins()], check=True)
    return python


def trl_plan_line(venv: Path) -> str:
    """The plan's line for the TRL child: its command, and whether its venv exists or what creating it installs."""
    python = venv / "bin" / "python"
    state = "exists" if python.exists() else "created with: pip install " + " ".join(trl_pins())
    return f"TRL:     {python} -c TRL_SCRIPT PLAN.json ({state})"


def thread_env(threads: int, bf16: bool = False) -> dict[str, str]:
    """The same environment for both sides' processes."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
                ACCELERATE_MIXED_PRECISION="bf16" if bf16 else "no")


# ----------------------------------------------------------------------------------------------- prompts
def trl_pad_token(tok, ids: list[list[int]]) -> str | None:
    """TRL's pad token for these prompt ids: None when the tokenizer's pad is not EOS, else one no prompt contains."""
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        return None
    vocab = tok.get_vocab()
    used = {i for p in ids for i in p}
    trl_pad = next((t for t in TRL_PAD_CANDIDATES if t in vocab and vocab[t] not in used
                    and vocab[t] not in (tok.eos_token_id, tok.bos_token_id)), None)
    if trl_pad is None:
        raise SystemExit("no token to pad with on the TRL side (pad == EOS and no unused special token)")
    return trl_pad


# ----------------------------------------------------------------------------------------------- runs
def per_iteration(ends: list[float]) -> float:
    """Median gap between consecutive iteration ends (skips the first, warm-up iteration)."""
    return statistics.median(b - a for a, b in zip(ends, ends[1:]))


def run_child(cmd: list[str], env: dict, what: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{what} run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "process_s": time.perf_counter() - t0}


def time_trl(d: Path, plan: dict, python: Path | None = None) -> dict:
    python = python or ensure_trl_venv()
    out = Path(tempfile.mkdtemp(dir=d, prefix="trl-out-"))
    try:
        (out / "plan.json").write_text(json.dumps({**plan, "out": str(out / "trainer")}))
        result = run_child([str(python), "-c", TRL_SCRIPT, str(out / "plan.json")],
                           thread_env(plan["threads"], plan["bf16"]), "TRL")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    gen = result["generation"][1:] or result["generation"]
    return {"per_iteration_s": per_iteration(result["ends"]), "settings": result["settings"],
            "time_generate": statistics.median(g["seconds"] for g in gen),
            "time_score": statistics.median(g["score"] for g in gen),
            "time_train": statistics.median(g["update"] for g in gen),
            "response_length": statistics.mean(g["mean_length"] for g in gen),
            "generated_columns": statistics.mean(g["columns"] for g in gen), "peak_rss_mib": result["peak_rss_mib"],
            "process_s": result["process_s"]}
