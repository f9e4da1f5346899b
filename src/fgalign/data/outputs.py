"""Where a stage may write: checked before any work, so that no output is destroyed and no work is lost.

The rule (README, "Outputs"): a stage never replaces an existing output unless `--overwrite` is given, and even
then only an output that the same stage wrote (its `fgalign_config.json`, or `FILE.config.json` beside a
file, names that stage). A folder is never replaced by a file, nor a file by a folder. The output's folder
must be writable, checked by creating a probe file there (a permission check alone says yes to root).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from fgalign.errors import InputError
from fgalign.runinfo import CONFIG_FILE, clean_stale_temporaries


def written_by(path: Path) -> str | None:
    """The stage that wrote `path`, from the config fgalign saves with every output; None if unknown."""
    meta = path / CONFIG_FILE if path.is_dir() else path.with_name(path.name + ".config.json")
    try:
        return json.loads(meta.read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def check_writable(path: Path, option: str = "--out") -> None:
    """Create (and remove) a probe file in the nearest existing folder above `path`."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write here: {parent} is a file, not a folder", path=str(path), field=option)
    try:
        fd, probe = tempfile.mkstemp(prefix=".fgalign-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write here: folder {parent} is not writable ({e.strerror})", path=str(path),
                         field=option) from None


def check_output(path: str | os.PathLike, stage: str, overwrite: bool, kind: Literal["file", "dir"],
                 option: str = "--out") -> Path:
    """Refuse an output that would destroy something; clean stale temporaries of earlier killed runs."""
    p = Path(path)
    check_writable(p, option)
    clean_stale_temporaries(p)
    if not p.exists() and not p.is_symlink():
        return p
    if kind == "file" and p.is_dir():
        raise InputError(f"is an existing folder; `fgalign {stage}` writes a file here and never replaces a "
                         "folder: give a file name", path=str(p), field=option)
    if kind == "dir" and not p.is_dir():
        raise InputError(f"is an existing file; `fgalign {stage}` writes a folder here and never replaces a "
                         "file: choose another path", path=str(p), field=option)
    if kind == "dir" and not any(p.iterdir()):
        return p  # an empty folder holds nothing to lose
    if not overwrite:
        raise InputError(f"exists; pass --overwrite to replace this output of `fgalign {stage}`, or choose "
                         "another path", path=str(p), field=option)
    if (owner := written_by(p)) != stage:
        what = f"an output of `fgalign {owner}`" if owner else "not an output of fgalign"
        raise InputError(f"exists and is {what}; --overwrite replaces only an output of `fgalign {stage}`: "
                         "remove it yourself or choose another path", path=str(p), field=option)
    return p
