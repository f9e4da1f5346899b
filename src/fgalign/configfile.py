"""Build stage config dataclasses from plain dicts (YAML), with errors that name the offending key."""
from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from fgalign.errors import InputError


def renamed_options(cls: type) -> dict[str, str]:
    """Old option name -> new, as a config class declares it (`RENAMED`): old spellings keep working for one
    release, with a deprecation line (the CLI's `--old-name` and the pipeline YAML's `old_name` alike)."""
    return dict(getattr(cls, "RENAMED", {}))


_TOLD: set[tuple[str, str]] = set()  # each old name is named once per process, not once per stage or seed


def deprecated(old: str, new: str, where: str = "") -> None:
    if (old, new) in _TOLD:
        return
    _TOLD.add((old, new))
    print(f"fgalign: deprecated: {where}{old} is now {where}{new} (the old name is read until the next release)",
          file=sys.stderr)


def accepts_old_names(cls: type) -> type:
    """Class decorator (outside @dataclass): the constructor also takes the old names in `cls.RENAMED`, with a
    DeprecationWarning, so that library callers keep working for one release as the CLI and YAML do."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for old, new in renamed_options(type(self)).items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{type(self).__name__}: give {new} only ({old} is its old name)")
                warnings.warn(f"{type(self).__name__}({old}=...) is now {new}=...", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def with_new_names(cls: type, data: Any, where: str, path: str | None = None) -> Any:
    """A YAML section's keys under their new names (`cls.RENAMED`), each old one named as deprecated where it was
    written: for sections merged before `from_dict` sees them (the pipeline's `ppo` into every method)."""
    if not isinstance(data, dict):
        return data  # from_dict names the bad value
    renamed = renamed_options(cls)
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in renamed:
            if renamed[name] in data:
                raise InputError(f"give '{renamed[name]}' only ('{key}' is its old name)", path=path,
                                 field=f"{where}.{key}")
            deprecated(key, renamed[name], f"{where}.")
            key = renamed[name]
        out[key] = value
    return out


def upgraded(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict with its renamed keys under their new names (nested dataclass fields too)."""
    renamed = renamed_options(cls)
    hints = typing.get_type_hints(cls, include_extras=False)
    out = {}
    for key, value in data.items():
        name = renamed.get(key, key)
        if dataclasses.is_dataclass(hints.get(name)) and isinstance(value, dict):
            value = upgraded(hints[name], value)
        out[name] = value
    return out


def _nested_flat_keys(cls: type, data: dict[str, Any], hints: dict, where: str) -> dict[str, Any]:
    """Keys of a nested dataclass that the class shows flat (`FLAT`, as the CLI does: `max_new_tokens` for
    `sampling.max_new_tokens`) gathered into their nested dict; the nested form is still read."""
    out = dict(data)
    for nested in getattr(cls, "FLAT", ()):
        inner = {f.name for f in dataclasses.fields(hints[nested])}
        if isinstance(out.get(nested), dict):
            for key in out[nested]:
                deprecated(f"{nested}.{key}", key, f"{where}.")
        flat = {k: out.pop(k) for k in list(out) if k.replace("-", "_") in inner}
        if flat:
            given = out.get(nested) or {}
            if not isinstance(given, dict):
                continue  # from_dict names the bad value
            out[nested] = {**given, **flat}
    return out


def from_dict(cls: type, data: dict[str, Any], where: str, path: str | None = None, /, **fixed: Any):
    """`cls(**data, **fixed)`, recursing into nested dataclass fields; unknown keys are an InputError."""
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of {cls.__name__} options, got {type(data).__name__}",
                         path=path, field=where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=False)
    renamed = renamed_options(cls)
    data = _nested_flat_keys(cls, data, hints, where)
    kwargs = dict(fixed)
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "in":
            name = "in_"
        if name in renamed:
            if renamed[name] in data or renamed[name].replace("_", "-") in data:
                raise InputError(f"give '{renamed[name]}' only ('{key}' is its old name)", path=path,
                                 field=f"{where}.{key}")
            deprecated(key, renamed[name], f"{where}.")
            name = renamed[name]
        if name not in fields:
            raise InputError(f"unknown option '{key}' for {cls.__name__}; expected one of "
                             f"{sorted(f for f in fields if f not in fixed)}", path=path, field=f"{where}.{key}")
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}", path)
        elif hint is not None:
            value = checked_value(hint, value, path, f"{where}.{key}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"{cls.__name__}: {e}", path=path, field=where) from None


def checked_value(hint: Any, value: Any, path: str | None, where: str) -> Any:
    """`value` if it has the field's type (a numeric string such as YAML's `1e-3` becomes a number); else an
    InputError naming file and key, now rather than as a traceback from inside a stage."""
    if isinstance(value, str) and _accepts(hint, float) and not _accepts(hint, str):
        try:
            value = int(value) if _accepts(hint, int) and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            pass
    if (expected := _expected(hint, value)) is not None:
        raise InputError(f"expected {expected}, got {value!r}", path=path, field=where)
    return value


def _arms(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _accepts(hint: Any, kind: type) -> bool:
    return any(arm is kind for arm in _arms(hint))


def _expected(hint: Any, value: Any) -> str | None:
    """None when `value` fits `hint`, else what was expected (types we do not model are not checked)."""
    problems = []
    for arm in _arms(hint):
        origin = typing.get_origin(arm)
        if arm is type(None):
            ok, what = value is None, "null"
        elif origin is typing.Literal:
            ok, what = value in typing.get_args(arm), "one of " + ", ".join(map(repr, typing.get_args(arm)))
        elif arm is bool:
            ok, what = isinstance(value, bool), "true or false"
        elif arm is int:
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif arm is float:
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif arm is str:
            ok, what = isinstance(value, str), "a string"
        elif origin in (list, tuple) or arm in (list, tuple):
            ok, what = isinstance(value, (list, tuple)), "a list"
        elif origin is dict or arm is dict or dataclasses.is_dataclass(arm):
            ok, what = isinstance(value, dict) or dataclasses.is_dataclass(value), "a mapping"
        else:
            return None
        if ok:
            return None
        problems.append(what)
    return " or ".join(problems) or None


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




def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """The keys whose values differ, as "key: old -> new" (nested keys dotted), sorted. Keys on one side only
    are options that a newer or older fgalign added or removed, not a change of config: not compared."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
