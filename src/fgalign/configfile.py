"""Build stage config dataclasses from plain dicts (YAML), with errors that name the offending key."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from fgalign.errors import InputError


def from_dict(cls: type, data: dict[str, Any], where: str, path: str | None = None, /, **fixed: Any):
    """`cls(**data, **fixed)`, recursing into nested dataclass fields; unknown keys are an InputError."""
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of {cls.__name__} options, got {type(data).__name__}",
                         path=path, field=where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=False)
    kwargs = dict(fixed)
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "in":
            name = "in_"
        if name not in fields:
            raise InputError(f"unknown option '{key}' for {cls.__name__}; expected one of "
                             f"{sorted(f for f in fields if f not in fixed)}", path=path, field=f"{where}.{key}")
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}", path)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"{cls.__name__}: {e}", path=path, field=where) from None


def read_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError("no such config file", path=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', e)}", path=str(p),
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("expected a YAML mapping at the top level", path=str(p))
    return data


