"""What sft and train-rm share around the HF Trainer: a NaN/inf guard, and their checkpoints' rules.

The Trainer itself does not stop on a diverged run: its `logging_nan_inf_filter` hides a NaN loss from the
log, and gradient clipping turns an infinite gradient norm into zero or NaN updates, so `--lr 1e12` trained
to a loss of 2.8e28 and was saved. The guard stops at the first non-finite loss or gradient norm, before the
optimizer applies it, naming the step; the checkpoints saved before it stay (the last good one).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fgalign.errors import InputError
from fgalign.rl.update import TrainingDiverged
from fgalign.runinfo import progress_bar

TRAINER_STATE = "trainer_state.json"  # transformers' name, written last into a checkpoint


class FiniteGuard:
    """Mixin for a transformers Trainer subclass (list it first): check every micro-step's loss and gradients."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        step = self.state.global_step + 1
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"the loss is {float(loss)} at step {step}")
        norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
        if norms and not torch.isfinite(norm := torch.linalg.vector_norm(torch.stack(norms))):
            raise TrainingDiverged(f"the gradient norm is {float(norm)} at step {step} (loss {float(loss):.3g})")
        return loss


class EpochSeededSampler(torch.utils.data.Sampler):
    """A random order that is a pure function of (seed, epoch), so a resumed run sees the same batches.

    `epoch_of` says which epoch is starting (the Trainer's set_epoch does not reach the sampler behind the
    batch-skipping loader of a resumed epoch; see LengthGroupedPairSampler in train/reward.py).
    """

    def __init__(self, n: int, seed: int, epoch_of):
        self.n, self.seed, self.epoch_of = n, seed, epoch_of

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch_of())
        return iter(torch.randperm(self.n, generator=generator).tolist())


def progress_callback(description: str):
    """The Trainer's progress as the same rich bar as every other stage (steps, elapsed, ETA), on rank 0;
    used with `disable_tqdm=True` (the Trainer then prints its loss logs as plain lines)."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        bar = advance = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = progress_bar(description, state.max_steps)
                self.advance = self.bar.__enter__()
                self.advance(state.global_step)  # a resumed run starts part-way

        def on_step_end(self, args, state, control, **kwargs):
            if self.advance is not None:
                self.advance(1)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
                self.bar = self.advance = None

    return RichProgress()


def _checkpoints(ckpt: Path) -> list[Path]:
    found = [p for p in ckpt.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()] if ckpt.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def last_checkpoint(ckpt: Path) -> Path | None:
    """The Trainer's newest complete checkpoint in `ckpt`. The Trainer writes checkpoint-N in place, with
    trainer_state.json last: a folder without it was cut by a kill (resuming from it would silently start
    with a fresh optimizer)."""
    return next((p for p in reversed(_checkpoints(ckpt)) if (p / TRAINER_STATE).exists()), None)


def prepare_checkpoints(ckpt: Path, stage: str, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from, if any. Checkpoints of an interrupted run are never dropped silently:
    without --resume they need --overwrite (then they are removed); --resume without any says so."""
    found = last_checkpoint(ckpt)
    if resume:
        for cut in _checkpoints(ckpt):
            if not (cut / TRAINER_STATE).exists():
                shutil.rmtree(cut)
                print(f"{stage}: removed {cut}, a checkpoint cut short by a kill")
        if found is None:
            print(f"{stage}: --resume but no checkpoint in {ckpt}; starting from scratch")
        else:
            print(f"{stage}: resuming from {found}")
        return found
    if found is not None or (ckpt.exists() and any(ckpt.iterdir())):
        if not overwrite:
            raise InputError(f"holds checkpoints of an interrupted `fgalign {stage}` run: pass --resume to continue "
                             "it, or --overwrite to start afresh", path=str(ckpt), field="--out")
        shutil.rmtree(ckpt)
    return None


def diverged_message(stage: str, error: Exception, ckpt: Path) -> str:
    found = last_checkpoint(ckpt)
    where = (f"the last good checkpoint is {found} (continue with --resume and a lower --lr)" if found
             else "no checkpoint was saved before it")
    return f"fgalign {stage}: training diverged: {error}; nothing was written to --out; {where}"
