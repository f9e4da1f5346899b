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


def merged_lora_model(peft_model: Any, state_dict: dict | None) -> Any:
    """The LoRA-trained model with its adapters merged into the weights: a plain transformers model.

    Alone or under DDP every process holds whole weights and the adapters merge in place. After a sharded run
    (ZeRO-3, FSDP) a process holds only its shards, so an in-place merge works on fragments (ZeRO-3 leaves
    empty placeholders), and the gathered state dict has the adapter-wrapped model's keys, which the merged
    model does not: it used to be saved that way, a broken model. So the gathered full weights (`state_dict`
    from `full_state_dict`, on the process that saves) are loaded into a fresh CPU copy of the adapter-wrapped
    model, and that copy is merged."""
    if state_dict is None:
        return peft_model.merge_and_unload()
    from peft import get_peft_model

    base = peft_model.get_base_model()
    fresh = get_peft_model(type(base)(base.config), peft_model.peft_config[peft_model.active_adapter])
    fresh.load_state_dict(state_dict)  # strict: every key of the wrapped model, adapters and base weights
    return fresh.merge_and_unload()
