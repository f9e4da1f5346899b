"""`fgalign train-rm`: train a token- or sequence-level reward model with the HF Trainer.

The Trainer brings checkpoints, `--resume`, logging and accelerate (multi-process, CUDA, bf16); we only
supply the pairs, a collator and `compute_loss`. Each batch holds B pairs as one (2B, L) forward pass:
rows [0, B) are the better responses (edited / chosen), rows [B, 2B) the worse (original / rejected).
"""
from __future__ import annotations

import contextlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from fgalign.data import PreferenceRecord, ReadStats, read_records
from fgalign.data.outputs import check_output
from fgalign.data.records import render_text, response_text
from fgalign.errors import InputError
from fgalign.labels import DEFAULT_LABEL_MODE, LabelMode
from fgalign.labels.project import label_pair
from fgalign.models.precision import check_bf16
from fgalign.models.reward import RewardModel, build_reward_model, head_module, pad_batch
from fgalign.rl.update import TrainingDiverged
from fgalign.runinfo import atomic_path, save_run_config
from fgalign.train.guard import FiniteGuard, diverged_message, prepare_checkpoints, progress_callback
from fgalign.train.pair_step import pair_loss
from fgalign.train.sharding import full_state_dict, is_main_process, merged_lora_model


@dataclass
class RewardConfig:
    """Train a reward model on an EDITS file (records with prompt, chosen, rejected, edited)."""

    data: str
    """EDITS file: JSONL/JSON/parquet/save_to_disk records with prompt, chosen, rejected, edited."""
    out: str
    """Output directory: weights (safetensors), tokenizer, fgalign_rm.json, fgalign_config.json."""
    model: str
    """Backbone: a local Hugging Face directory (usually the SFT policy; an encoder such as BERT works too)."""
    level: Literal["token", "sequence"] = "token"
    """token: a reward at every response token; sequence: one score at the last response token."""
    loss: Literal["mistake-bce", "token-bce", "edit-bt", "mean-bt"] = "mistake-bce"
    """Token RM loss: mistake-bce (logistic push down on deleted/replaced tokens, every correct token anchored
    at 0; measured best), token-bce (logistic on the +-1 labels), edit-bt (BT on the sums over edited tokens)
    or mean-bt (the paper's BT on the mean r_t). README: the measurements behind the default."""
    anchor: float = 1.0
    """Zero-anchoring: + anchor * mean r_t^2 over the correct tokens (kept; with mistake-bce also inserted), so
    rewards sit on the edits and a total carries no length term. We used 1.0 with mistake-bce, 0.1 with the
    others (at 0 kept tokens carried +0.45..0.67 x the edited tokens' |r|)."""
    pairs: Literal["preference", "edit"] = "preference"
    """Sequence RM pairs: (chosen > rejected) or (edited > original). The token RM always uses edits."""
    label_mode: LabelMode = DEFAULT_LABEL_MODE
    """Token labels: align token ids (RM tokenizer = policy's) or characters projected through offsets."""
    backbone_kind: Literal["auto", "causal", "encoder"] = "auto"
    """Decoder (r_t sees y_<=t) or encoder (sees the whole text); auto reads the saved architecture."""
    epochs: float = 4.0
    """Passes over the pairs (4 at lr 1e-3 beat 2 at 3e-4 on every RM kind in our sweep)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs when > 0)."""
    batch_size: int = 16
    """Pairs per optimizer step per process (before gradient accumulation)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    lr: float = 1e-3
    """Peak learning rate (linear decay)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    optim: str = "adamw_torch"
    """Optimizer, by its HF Trainer name (adamw_torch, sgd, adafactor, ...). adamw_torch runs as torch's fused
    AdamW (`adamw_torch_fused`: the same update in one kernel for all parameters, CPU and CUDA; it saved 5 ms
    of a 75 ms step of the tiny RM); the name stays so that stored configs of earlier runs still match."""
    warmup_ratio: float = 0.05
    """Fraction of steps with linear warm-up."""
    max_length: int = 0
    """Longest prompt+response in tokens; longer pairs are skipped (0: the backbone's maximum)."""
    lora: bool = False
    """Train LoRA adapters (peft) on every linear layer instead of all weights; merged before saving."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    save_steps: int = 200
    """Write a Trainer checkpoint every this many steps into OUT.checkpoints (0: none), for --resume."""
    resume: bool = False
    """Resume from the last checkpoint in OUT.checkpoints (after a crash or kill)."""
    keep_checkpoints: bool = False
    """Keep OUT.checkpoints after success (default: removed)."""
    device: Literal["auto", "cpu"] = "auto"
    """auto: CUDA when available (the Trainer decides); cpu: force CPU."""
    bf16: bool = False
    """bf16 mixed precision (autocast over fp32 weights). Refused where it would be emulated: a GPU without
    bf16, or a CPU without avx512_bf16/amx_bf16 (there it ran an RM step 7.4x slower). README: what it costs."""
    group_by_length: bool = True
    """Batch pairs of similar length (LengthGroupedPairSampler): a third less padding on the default world."""
    logging_steps: int = 10
    """Log the loss every this many steps."""
    report_to: str = "none"
    """Trainer loggers: none, tensorboard, ..."""
    seed: int = 0
    """Seed for the head, data order and everything else."""
    overwrite: bool = False
    """Replace an existing OUT written by `fgalign train-rm` (anything else is never replaced)."""


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".checkpoints")


def read_training_records(cfg: RewardConfig) -> tuple[list[PreferenceRecord], ReadStats]:
    """The usable records, read and checked before any model is loaded (a bad file fails in a second)."""
    use_edits = cfg.level == "token" or cfg.pairs == "edit"
    stats = ReadStats()
    records = read_records(cfg.data, require_edited=use_edits, stats=stats)
    if not records:
        raise InputError(f"no usable pair: {stats.read} records read, {stats.skipped_missing_edit} without "
                         f"'edited', {stats.skipped_noop_edits} whose edit equals 'rejected' "
                         f"(the {cfg.level} RM on --pairs {cfg.pairs if cfg.level == 'sequence' else 'edit'} "
                         "needs real edits)", path=cfg.data, field="edited")
    if not use_edits:  # chosen == rejected: a BT pair with no preference in it, the loss is a constant log 2
        kept = [r for r in records if response_text(r.chosen) != response_text(r.rejected)]
        same = len(records) - len(kept)
        if not kept:
            raise InputError(f"no usable pair: in all {same} records 'chosen' equals 'rejected'", path=cfg.data,
                             field="chosen")
        if same:
            print(f"train-rm: warning: skipped {same} of {len(records)} records whose 'chosen' equals 'rejected' "
                  f"({cfg.data})")
        records = kept
    return records, stats


def build_pairs(cfg: RewardConfig, rm: RewardModel, records: list[PreferenceRecord] | None = None,
                stats: ReadStats | None = None) -> list[dict]:
    """One feature dict per pair: prompt ids and (better, worse) response ids with token labels."""
    if records is None:
        records, stats = read_training_records(cfg)
    max_length = cfg.max_length or getattr(rm.model.config, "max_position_embeddings", None) \
        or getattr(rm.model.config, "n_positions", 10**9)
    pairs, too_long = [], 0
    for rec in records:
        rec = render_text(rec, rm.tokenizer)
        prompt_ids = rm.encode_prompt(rec.prompt)
        if cfg.level == "token":
            lab = label_pair(rm.tokenizer, rec.prompt, rec.rejected, rec.edited, mode=cfg.label_mode)
            better, better_labels = lab["edited_ids"], lab["edited_labels"]
            worse, worse_labels = lab["rejected_ids"], lab["rejected_labels"]
        else:
            good = rec.edited if cfg.pairs == "edit" else rec.chosen
            better, worse = rm.encode_response(good), rm.encode_response(rec.rejected)
            better_labels, worse_labels = [0] * len(better), [0] * len(worse)
        if len(prompt_ids) + max(len(better), len(worse)) > max_length:
            too_long += 1
            continue
        pairs.append(dict(prompt_ids=prompt_ids, better_ids=better, better_labels=better_labels,
                          worse_ids=worse, worse_labels=worse_labels,
                          length=len(prompt_ids) + max(len(better), len(worse))))
    if not pairs:
        raise InputError(f"every pair is longer than --max-length {max_length} tokens", path=cfg.data)
    if too_long:
        print(f"train-rm: warning: skipped {too_long} pairs longer than {max_length} tokens")
    print(f"train-rm: {len(pairs)} pairs from {stats.read} records (skipped: {stats.skipped_missing_edit} "
          f"without edit, {stats.skipped_noop_edits} no-op edits, {too_long} too long)")
    return pairs


class PairCollator:
    """B pairs -> one right-padded (2B, L) batch: better responses first, then worse ones."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [f["prompt_ids"] for f in features] * 2
        responses = [f["better_ids"] for f in features] + [f["worse_ids"] for f in features]
        labels = [f["better_labels"] for f in features] + [f["worse_labels"] for f in features]
        batch = pad_batch(prompts, responses, self.pad_id, labels)
        batch["token_labels"] = batch.pop("labels")  # not "labels": the Trainer treats that key specially
        return batch


class LengthGroupedPairSampler(torch.utils.data.Sampler):
    """HF's length grouping (random mega-batches of up to 50 batches, sorted by length inside) in an order
    fixed by (seed, epoch): the batches stay random, padding shrinks, and a resumed run sees the same order.

    `epoch_of` says which epoch is starting. The Trainer's `set_epoch` does not reach a sampler behind the
    batch-skipping loader of a resumed epoch, so the trainer passes its own epoch counter instead.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, epoch_of: Callable[[], int]):
        self.lengths, self.batch_size, self.seed, self.epoch_of = lengths, batch_size, seed, epoch_of

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch_of())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def make_trainer_class():
    from transformers import Trainer

    class RewardTrainer(FiniteGuard, Trainer):
        """The HF Trainer with our pair loss, stopped at the first NaN/inf loss or gradient norm."""

        def __init__(self, *args, level: str, loss: str, anchor: float, group_by_length: bool, **kwargs):
            super().__init__(*args, **kwargs)
            self.level, self.loss_kind, self.anchor = level, loss, anchor
            self.group_by_length = group_by_length

        def _get_train_sampler(self, train_dataset=None):
            if not self.group_by_length:
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            # Grouped by the global batch, so that N processes x B pairs see the pairs of 1 x N*B.
            global_batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            # state.epoch is e exactly when epoch e starts (e + k/n inside it, restored on resume).
            return LengthGroupedPairSampler([pair["length"] for pair in dataset], global_batch, seed,
                                            epoch_of=lambda: math.floor(self.state.epoch + 1e-9))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Every loss is a mean over pairs, so num_items_in_batch (a token count) is not needed.
            value, _ = pair_loss(model, inputs, self.level, self.loss_kind, self.anchor)
            return (value, {}) if return_outputs else value

    return RewardTrainer


def training_args(cfg: RewardConfig, output_dir: Path):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        optim="adamw_torch_fused" if cfg.optim == "adamw_torch" else cfg.optim,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear", num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16,
        # use_cpu also makes accelerate's multi-process launch on a CPU machine real (gloo): without it
        # each process quietly trains alone.
        use_cpu=cfg.device == "cpu" or not torch.cuda.is_available(), logging_steps=cfg.logging_steps, report_to=cfg.report_to,
        save_strategy="steps" if cfg.save_steps > 0 else "no", save_steps=max(cfg.save_steps, 1),
        save_total_limit=2, remove_unused_columns=False, dataloader_num_workers=0,
        disable_tqdm=True, ddp_find_unused_parameters=False)


def apply_lora(rm: RewardModel, cfg: RewardConfig) -> None:
    from peft import LoraConfig, TaskType, get_peft_model

    head_name = next(n for n, m in rm.model.named_children() if m is head_module(rm.model))
    lora = LoraConfig(task_type=TaskType.TOKEN_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      target_modules="all-linear", modules_to_save=[head_name])
    rm.model = get_peft_model(rm.model, lora)


def run(cfg: RewardConfig) -> Path:
    """Train and save the RM to `cfg.out` (atomically); returns the output path."""
    from transformers import set_seed

    if cfg.anchor < 0:
        raise InputError(f"expected a weight >= 0, got {cfg.anchor}", field="--anchor")
    check_config(cfg)
    check_bf16(cfg.bf16, "cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu")
    ckpt = checkpoint_dir(cfg.out)
    if is_main_process():
        check_output(cfg.out, "train-rm", cfg.overwrite, "dir")
    # Under a multi-process launch the other ranks let the Trainer find the same newest checkpoint.
    resume = (prepare_checkpoints(ckpt, "train-rm", cfg.resume, cfg.overwrite) if is_main_process()
              else cfg.resume or None)
    records, stats = read_training_records(cfg)  # before the model: a bad file fails fast and alone
    set_seed(cfg.seed)
    loss = cfg.loss if cfg.level == "token" else "bt"
    with quiet_new_head_report():
        rm = build_reward_model(cfg.model, cfg.level, loss, anchor=cfg.anchor if cfg.level == "token" else 0.0,
                                pairs="edit" if cfg.level == "token" else cfg.pairs, label_mode=cfg.label_mode,
                                backbone_kind=cfg.backbone_kind)
    pairs = build_pairs(cfg, rm, records, stats)
    if cfg.lora:
        apply_lora(rm, cfg)
    try:
        return _train(cfg, rm, pairs, loss, ckpt, resume)
    except TrainingDiverged as e:
        raise SystemExit(diverged_message("train-rm", e, ckpt)) from None


def check_config(cfg: RewardConfig) -> None:
    """Numbers the Trainer would take and then crash on, or train nothing with."""
    for name, value, low in (("--batch-size", cfg.batch_size, 1), ("--grad-accum", cfg.grad_accum, 1),
                             ("--save-steps", cfg.save_steps, 0), ("--logging-steps", cfg.logging_steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"expected an integer >= {low}, got {value!r}", field=name)
    for name, value in (("--epochs", cfg.epochs), ("--lr", cfg.lr)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise InputError(f"expected a number > 0, got {value!r}", field=name)


@contextlib.contextmanager
def quiet_new_head_report():
    """transformers reports the freshly initialised head (expected: it is the RM's new head) as a 9-line
    "LOAD REPORT ... MISSING" table; a real problem still raises."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _train(cfg: RewardConfig, rm: RewardModel, pairs: list[dict], loss: str, ckpt: Path,
           resume: Path | bool | None) -> Path:
    trainer = make_trainer_class()(
        model=rm.model, args=training_args(cfg, ckpt), train_dataset=pairs,
        data_collator=PairCollator(rm.tokenizer.pad_token_id), level=cfg.level, loss=loss, anchor=cfg.anchor,
        group_by_length=cfg.group_by_length, callbacks=[progress_callback("train-rm")])
    result = trainer.train(resume_from_checkpoint=str(resume) if isinstance(resume, Path) else resume)
    state_dict = full_state_dict(trainer)  # sharded runs (FSDP, ZeRO-3): gathered, every rank takes part
    if trainer.is_world_process_zero():
        if cfg.lora:  # merged after the gather, from whole weights (merging shards in place broke the save)
            rm.model, state_dict = merged_lora_model(rm.model, state_dict), None
        with atomic_path(cfg.out, replace=cfg.overwrite) as tmp:
            rm.save(tmp, state_dict=state_dict)
            save_run_config(tmp, cfg, "train-rm", extra={"train": result.metrics, "pairs": len(pairs)})
        if not cfg.keep_checkpoints:
            shutil.rmtree(ckpt, ignore_errors=True)
        print(f"train-rm: {cfg.level} RM ({loss}, anchor {cfg.anchor if cfg.level == 'token' else 0}) -> {cfg.out}")
    trainer.accelerator.wait_for_everyone()
    return Path(cfg.out)
