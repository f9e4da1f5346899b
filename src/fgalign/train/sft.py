"""Supervised fine-tuning: a causal LM imitates the task's (noisy) demonstrations, loss on response tokens only.

The SFT model is the starting point of everything after it: the policy that samples preference pairs, the
reference of PPO's KL penalty, and (by default) the backbone of the reward and value models.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import torch

from fgalign.configfile import accepts_old_names
from fgalign.data.outputs import check_output
from fgalign.data.tokenize import encode_pair
from fgalign.errors import InputError
from fgalign.models.policy import (TinyModelConfig, build_tiny_causal_lm, check_tiny_config, load_causal_lm,
                                   load_tokenizer, resolve_device)
from fgalign.models.precision import check_bf16
from fgalign.rl.update import TrainingDiverged
from fgalign.runinfo import atomic_path, save_run_config, seed_everything
from fgalign.train.guard import (EpochSeededSampler, FiniteGuard, diverged_message, prepare_checkpoints,
                                 progress_callback)
from fgalign.train.sharding import full_state_dict, is_main_process, merged_lora_model
from fgalign.tasks import load_task


@accepts_old_names
@dataclass
class SFTConfig:
    """Supervised fine-tuning on a task's demonstrations."""

    RENAMED: ClassVar[dict[str, str]] = {"n_examples": "num_examples"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""

    out: str
    """Output directory (a Hugging Face model folder with tokenizer and resolved config)."""
    task: str = "default"
    """Task: a built-in name ("default", "sentiment") or an import path "package.module:ClassName"."""
    model: str | None = None
    """The causal LM to fine-tune: a local Hugging Face directory, a .gguf file or pkg:PACKAGE/PATH; None builds
    a tiny model from `tiny`."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model built when `model` is None."""
    num_examples: int = 20000
    """Demonstrations drawn from the task's noisy demonstrator."""
    epochs: float = 2.0
    """Passes over the demonstrations."""
    batch_size: int = 64
    """Sequences per optimizer step."""
    lr: float = 2e-3
    """Peak learning rate (cosine decay, short warm-up); tiny from-scratch models want a large one."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seed for data, initialisation and training."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""
    bf16: bool = False
    """Train in bf16 mixed precision (autocast over fp32 weights); refused where the device would emulate it."""
    lora: bool = False
    """Train LoRA adapters (peft) on every linear layer of `model` instead of all its weights; merged into the
    weights before saving, so OUT is a plain model (a pretrained model keeps what it knows; 2 cores can afford it)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (the adapter's update is scaled by alpha / r)."""
    trust_remote_code: bool = False
    """Allow custom code from the model directory (off unless you trust it)."""
    save_steps: int = 200
    """Write a Trainer checkpoint every this many steps into OUT.checkpoints (0: none), for --resume."""
    resume: bool = False
    """Continue from the last checkpoint in OUT.checkpoints (after a crash or kill)."""
    keep_checkpoints: bool = False
    """Keep OUT.checkpoints after success (default: removed)."""
    overwrite: bool = False
    """Replace an existing OUT written by `fgalign sft` (anything else is never replaced)."""


def check_config(cfg: SFTConfig) -> None:
    """Options that would crash, or silently do nothing, after the model is built: refused first."""
    for name, value, low in (("--num-examples", cfg.num_examples, 1), ("--batch-size", cfg.batch_size, 1),
                             ("--save-steps", cfg.save_steps, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"expected an integer >= {low}, got {value!r}", field=name)
    for name, value in (("--epochs", cfg.epochs), ("--lr", cfg.lr)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise InputError(f"expected a number > 0, got {value!r}", field=name)
    if cfg.model is None:
        check_tiny_config(cfg.tiny)
    if cfg.lora and cfg.model is None:
        raise InputError("LoRA adapts a pretrained model: pass --model (a tiny model built from scratch trains "
                         "all its weights)", field="--lora")
    for name, value in (("--lora-r", cfg.lora_r), ("--lora-alpha", cfg.lora_alpha)):
        if cfg.lora and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"expected an integer >= 1, got {value!r}", field=name)


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".checkpoints")


class _Collator:
    """Left-aligned batches of prompt+response with labels −100 on prompt and padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n, n_prompt = len(b["input_ids"]), b["n_prompt"]
            ids[i, :n] = torch.tensor(b["input_ids"])
            attention[i, :n] = 1
            labels[i, n_prompt:n] = ids[i, n_prompt:n]  # learn the response (and its EOS) only
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def tokenize_examples(tokenizer, examples: list[tuple[str, str]], max_len: int) -> list[dict]:
    rows = []
    for prompt, response in examples:
        p, r = encode_pair(tokenizer, prompt, response)
        rows.append({"input_ids": (p + r)[:max_len], "n_prompt": len(p)})
    return rows


def run(cfg: SFTConfig) -> dict:
    check_config(cfg)
    out = Path(cfg.out)
    ckpt = checkpoint_dir(out)
    if is_main_process():
        check_output(out, "sft", cfg.overwrite, "dir")
    # Under a multi-process launch the other ranks let the Trainer find the same newest checkpoint.
    resume = (prepare_checkpoints(ckpt, "sft", cfg.resume, cfg.overwrite) if is_main_process()
              else cfg.resume or None)
    seed_everything(cfg.seed)
    task = load_task(cfg.task)
    started = time.time()
    try:
        summary = _train(cfg, task, out, ckpt, resume, started)
    except TrainingDiverged as e:
        raise SystemExit(diverged_message("sft", e, ckpt)) from None
    if is_main_process():
        if not cfg.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        print(f"sft: {summary['examples']} examples, {summary['params'] / 1e6:.2f}M params, "
              f"loss {summary['train_loss']:.3f}, {summary['seconds']:.0f}s -> {out}")
    return summary


def _train(cfg: SFTConfig, task, out: Path, ckpt: Path, resume: Path | bool | None, started: float) -> dict:
    from transformers import Trainer, TrainingArguments

    class SFTTrainer(FiniteGuard, Trainer):
        """The HF Trainer, stopped at the first NaN/inf loss or gradient norm; its order resumes exactly."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            # state.epoch is e exactly when epoch e starts (e + k/n inside it, restored on resume).
            return EpochSeededSampler(len(dataset), cfg.seed, lambda: math.floor(self.state.epoch + 1e-9))

    # Launched as several processes (accelerate), rank 0 alone writes OUT; the others work in a scratch dir.
    with (atomic_path(out, replace=cfg.overwrite) if is_main_process() else _scratch(out)) as tmp:
        tmp.mkdir()
        if cfg.model:
            tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
            model = load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # check_tokenizer added a pad
                model.resize_token_embeddings(len(tokenizer))
            if cfg.lora:
                from peft import LoraConfig, get_peft_model

                model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                         target_modules="all-linear", task_type="CAUSAL_LM"))
            max_len = getattr(model.config, "max_position_embeddings", None) or 1024
        else:
            if not callable(getattr(task, "tokenizer", None)):
                raise InputError(f"task '{cfg.task}' has no tokenizer(); pass --model with a tokenizer",
                                 field="--model")
            tokenizer = load_tokenizer(task.tokenizer(tmp / "_tokenizer"))
            model = build_tiny_causal_lm(cfg.tiny, tokenizer)
            max_len = cfg.tiny.max_len
        # The saved tokenizer states the model's real limit (not 1024), so later stages can check inputs.
        tokenizer.model_max_length = min(tokenizer.model_max_length, max_len)
        rows = tokenize_examples(tokenizer, task.sft_examples(cfg.num_examples, cfg.seed), max_len)
        device = resolve_device(cfg.device)
        check_bf16(cfg.bf16, device)
        # 3% warm-up, rounded down: the Trainer rounds a ratio up, so a run of a few steps would spend its
        # first step at learning rate 0 (and a one-step run would not learn at all).
        steps = math.ceil(math.ceil(len(rows) / cfg.batch_size) * cfg.epochs)
        args = TrainingArguments(
            output_dir=str(ckpt), per_device_train_batch_size=cfg.batch_size,
            num_train_epochs=cfg.epochs, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
            lr_scheduler_type="cosine", warmup_steps=int(0.03 * steps), logging_steps=50,
            save_strategy="steps" if cfg.save_steps > 0 else "no", save_steps=max(cfg.save_steps, 1),
            save_total_limit=2,
            report_to=[], seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16, use_cpu=device.type == "cpu",
            dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows,
                             data_collator=_Collator(tokenizer.pad_token_id), callbacks=[progress_callback("sft")])
        result = trainer.train(resume_from_checkpoint=str(resume) if isinstance(resume, Path) else resume)
        model = trainer.model
        state_dict = full_state_dict(trainer)  # sharded runs (FSDP, ZeRO-3): gathered, every rank takes part
        if cfg.lora:  # merged after the gather, from whole weights (as train-rm does)
            model, state_dict = merged_lora_model(model, state_dict), None
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        weights = model.parameters() if state_dict is None else state_dict.values()  # a shard holds a part
        summary = {"train_loss": result.training_loss, "examples": len(rows),
                   "params": sum(p.numel() for p in weights), "seconds": time.time() - started}
        if is_main_process():
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(tmp / "_tokenizer", ignore_errors=True)
            save_run_config(tmp, cfg, "sft", extra={"summary": summary})
    return summary


@contextlib.contextmanager
def _scratch(out: Path) -> Iterator[Path]:
    """A throw-away stand-in for atomic_path(out), for the processes that do not write the result."""
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.rank") as d:
        yield Path(d) / out.name
