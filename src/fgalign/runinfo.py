"""Reproducibility helpers: seeds, atomic writes, and the resolved config + versions saved next to outputs."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

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
    """Plain JSON values; NaN and infinities become null (strict parsers reject them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
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
def atomic_path(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories: an existing result is never half-overwritten, and a failed command
    leaves nothing behind. An existing file is replaced (os.replace: atomic); an existing directory only with
    `replace=True`, which a stage passes after `data.outputs.check_output` allowed it (`--overwrite` on an
    output of the same stage). The temporary's name carries our pid, so a later run can tell the leftovers
    of a killed one (dead pid) from a live writer's and remove them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written to {target}")
        if path.is_dir() and not path.is_symlink():
            if not replace:
                raise FileExistsError(f"{path} is an existing directory; not replaced")
            old = tmp / ".replaced"  # inside our temporary: removed with it, or as a stale one after a kill
            path.rename(old)
            target.rename(path)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove `.NAME.PID.*.tmp` leftovers of `atomic_path(path)` whose process is gone (killed runs).

    Leftovers of older versions (no pid in the name) are removed too; a live writer's are kept.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    prefix = f".{path.name}."
    for p in path.parent.iterdir():
        if not (p.name.startswith(prefix) and p.name.endswith(".tmp")):
            continue
        middle = p.name[len(prefix):-len(".tmp")].split(".", 1)[0]
        if middle.isdigit() and _pid_alive(int(middle)):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        print(f"removed {len(removed)} stale temporary output(s) of a killed run beside {path}", file=sys.stderr)
    return removed


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """One style of progress bar for every long stage (rich, on stderr, as `fgalign edit` and PPO print):
    done/total, elapsed and ETA. Yields `advance(n)`; the bar is removed when the block ends."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


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


def preserved_rng(device) -> Any:
    """A context that restores the CPU random stream and, on an accelerator, that device's stream on exit.

    `torch.random.fork_rng(devices=[])` saves the CPU stream only, while CUDA sampling draws from the device's
    generator, which `torch.manual_seed` (an evaluator reseeding itself) resets too: without the device's
    stream the rollouts after every evaluation would repeat from the evaluator's seed."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else getattr(torch, device.type).current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def use_tf32() -> bool:
    """On CUDA, let fp32 matmuls and convolutions use TF32 tensor cores (fp32 range, 10-bit mantissa products,
    fp32 accumulation: several times faster on Ampere and later, where torch leaves matmuls in full fp32).
    fp32 training (no mixed precision) and fp32 scoring gain; bf16/fp16 autocast is unaffected. The CUDA
    backends' own switches (torch >= 2.9's API, as transformers' `tf32=True` uses): the CPU's kernels stay
    as they are. `FGALIGN_TF32=0` keeps full fp32. Returns whether TF32 was enabled."""
    import torch

    if not torch.cuda.is_available() or os.environ.get("FGALIGN_TF32", "1") == "0":
        return False
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    return True


@contextlib.contextmanager
def peak_rss(interval: float = 0.2) -> Iterator[dict]:
    """Track this process's peak resident memory while inside: yields a dict whose "gib" holds it after.

    `ru_maxrss` only ever grows, so a stage after a bigger one could not show its own peak; a thread reads
    /proc/self/statm every `interval` seconds instead (Linux; elsewhere ru_maxrss, the peak so far)."""
    import resource
    import threading

    result: dict = {"gib": 0.0}
    page = os.sysconf("SC_PAGE_SIZE")
    stop = threading.Event()

    def current() -> float:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**30
        except (OSError, IndexError, ValueError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def poll() -> None:
        while True:
            result["gib"] = max(result["gib"], current())
            if stop.wait(interval):
                return

    thread = threading.Thread(target=poll, name="fgalign-peak-rss", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["gib"] = round(max(result["gib"], current()), 2)
