"""Reproducibility helpers: seeds, atomic writes, and the resolved config + versions saved next to outputs."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

CONFIG_FILE = "fgalign_config.json"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour decides our numbers."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("fgalign", "torch", "transformers", "tokenizers", "datasets", "accelerate", "peft",
                 "rapidfuzz", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories: an existing result is never half-overwritten, and a failed command
    leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written to {target}")
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            target.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def save_run_config(out: str | os.PathLike, config: Any, stage: str, extra: dict | None = None) -> Path:
    """Save the resolved config and library versions next to an output.

    `out` is an output directory (the file goes inside) or an output file (it goes beside it, as
    `<name>.config.json`).
    """
    out = Path(out)
    dest = out / CONFIG_FILE if out.is_dir() else out.with_name(out.name + ".config.json")
    payload = {"stage": stage, "config": to_jsonable(config), "versions": library_versions(),
               "argv": sys.argv}
    if extra:
        payload.update(to_jsonable(extra))
    write_json(dest, payload)
    return dest
