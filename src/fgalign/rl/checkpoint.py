"""Checkpoints that a run resumes from exactly, and the final, plain-transformers policy directory.

A checkpoint is `accelerate`'s state (models as safetensors, optimizers, every rank's RNG states) plus
`trainer_state.json` (iteration, KL controller). It is written into a hidden directory by all ranks and
renamed into place by the main process once complete, so a SIGKILL never leaves a half checkpoint that
`--resume` would pick.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

from fgalign.data.outputs import check_writable, written_by
from fgalign.errors import InputError
from fgalign.runinfo import save_run_config, write_json

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^iter_(\d{6})$")


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under `out`, if any."""
    root = checkpoint_dir(out)
    found = [p for p in root.glob("iter_*") if _NAME.match(p.name) and (p / STATE_FILE).exists()] if root.exists() else []
    return max(found, key=lambda p: int(_NAME.match(p.name).group(1)), default=None)


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run in a folder that holds one: a fresh run there used to cut the old log and
    keep its checkpoints, which a later --resume spliced in. --overwrite replaces an earlier PPO run only."""
    out = Path(out)
    check_writable(out, "--out")
    if resume or not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise InputError("is an existing file; PPO writes a folder here", path=str(out), field="--out")
    ours = "ppo" in (written_by(out), written_by(out / "ppo_log.jsonl"))
    if not overwrite:
        found = latest_checkpoint(out)
        how = (f"pass --resume to continue it from {found.name}, or --overwrite to start afresh" if found and ours
               else "pass --overwrite to start afresh" if ours else "choose another --out")
        raise InputError(f"holds {'a PPO run' if ours else 'files that are not a PPO run'}: {how}", path=str(out),
                         field="--out")
    if not ours:
        raise InputError("holds files that are not a PPO run; --overwrite replaces only a PPO run: remove it "
                         "yourself or choose another --out", path=str(out), field="--out")
    shutil.rmtree(out)


def save_checkpoint(accelerator, out: Path, iteration: int, state: dict, keep: int = 2) -> Path:
    """Save after `iteration` iterations (collective: every rank calls it)."""
    root = checkpoint_dir(out)
    final = root / f"iter_{iteration:06d}"
    tmp = root / f".iter_{iteration:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted((p for p in root.glob("iter_*") if _NAME.match(p.name) and p != final), key=lambda p: p.name)
        for stale in older[: max(0, len(older) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def plain_policy(model):
    """The policy as a plain transformers model: a LoRA adapter is merged into a copy of the weights."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_policy(model, tokenizer, dest: Path, cfg, extra: dict | None = None) -> Path:
    """`save_pretrained` + tokenizer + resolved config into `dest`, file by file atomically.

    `dest` may already hold logs and checkpoints, so the files are written into a hidden folder first and
    each is renamed into place; config.json goes last, so a folder with it is a complete model.
    """
    dest = Path(dest)
    tmp = dest / ".policy.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain_policy(model).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    save_run_config(tmp, cfg, stage="ppo", extra=extra)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != "config.json"] + ["config.json"]:
        os.replace(tmp / name, dest / name)
    tmp.rmdir()
    return dest
