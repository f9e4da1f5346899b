"""Saving after a sharded run (FSDP, DeepSpeed ZeRO-3, launched with configs/accelerate/*.yaml).

Under those set-ups no process holds the whole model, so the weights are gathered through accelerate (the HF
Trainer's own machinery) before rank 0 writes them; every process must take part. Alone or under DDP each
process already holds the full weights and nothing is gathered.
"""
from __future__ import annotations

import os
from typing import Any


def is_main_process() -> bool:
    """Rank 0 of a launch (accelerate and torchrun set RANK), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def full_state_dict(trainer: Any) -> dict | None:
    """The full weights when the Trainer sharded them, else None (then `model.state_dict()` is whole).
    Collective under FSDP / DeepSpeed: call it on every process."""
    if not (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)):
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)
