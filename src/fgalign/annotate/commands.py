"""`fgalign annotate init|users|serve|stats|export`: the admin side of the annotation app (CLI only).

Each sub-command parses its own dataclass with tyro, like every other stage; `run(argv)` dispatches.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from fgalign.errors import InputError

DEFAULT_MAX_EDIT_RATIO = 0.5  # the edit stage's default minimality threshold (EditConfig.max_edit_ratio)


@dataclass
class InitConfig:
    """Create an annotation database from a pairs file (refuses to overwrite an existing one)."""

    pairs: str
    """Preference pairs (JSONL/JSON/parquet/save_to_disk) with prompt, chosen, rejected as plain strings."""
    db: str
    """SQLite file to create, or any SQLAlchemy URL (e.g. postgresql://user@host/annotations)."""
    overlap: int = 1
    """How many distinct annotators edit each pair (2+ gives agreement numbers in `stats`)."""
    tokenizer: str | None = None
    """Tokenizer (or model) directory of the reward model: the page then shows its token labels; without
    it, labels are shown per word."""
    label_mode: Literal["tokens", "chars"] = "tokens"
    """How train-rm will label (its --label-mode): the page shows the same labels."""
    max_edit_ratio: float = DEFAULT_MAX_EDIT_RATIO
    """Warn the annotator when an edit changes more than this share of characters (the edit stage's check)."""
    timeout_minutes: float = 30.0
    """An item left idle this long returns to the queue when another annotator needs it."""
    choose_preferred: bool = False
    """Let the annotator pick the better response (recorded) instead of taking the file's preference."""


@dataclass
class UsersConfig:
    """Add an annotator (`add NAME`), give one a new login link (`link NAME`), or list them (`list`)."""

    action: Annotated[Literal["add", "link", "list"], tyro.conf.Positional]
    """add | link | list"""
    name: Annotated[str | None, tyro.conf.Positional] = None
    """The annotator's name (letters, digits, _ . @ -)."""
    db: str = "annotations.db"
    """The annotation database."""
    url: str = "http://127.0.0.1:8000"
    """Where annotators reach the server: the printed link starts with it."""


@dataclass
class ServeConfig:
    """Serve the annotation pages (binds to 127.0.0.1 unless told otherwise)."""

    db: str
    """The annotation database."""
    host: str = "127.0.0.1"
    """Interface to listen on; 0.0.0.0 exposes the app to the network (put it behind HTTPS)."""
    port: int = 8000
    """Port to listen on."""
    secure_cookies: bool = False
    """Mark session cookies Secure (only sent over HTTPS): turn on behind an HTTPS proxy."""


@dataclass
class StatsConfig:
    """Progress, per-annotator counts and agreement (Cohen's kappa on the rejected response's token labels)."""

    db: str
    """The annotation database."""
    json_: Annotated[bool, tyro.conf.arg(name="json")] = False
    """Print JSON instead of tables."""


@dataclass
class ExportConfig:
    """Write the submitted edits as edit records (train-rm --data reads them as they are), atomically."""

    db: str
    """The annotation database."""
    out: str
    """Output file: JSONL, or parquet when it ends in .parquet."""
    adjudicate: Literal["majority", "first", "all"] = "majority"
    """Several annotators per pair: the majority outcome (ties left out), the first submission, or all."""


SUBCOMMANDS = {"init": InitConfig, "users": UsersConfig, "serve": ServeConfig, "stats": StatsConfig,
               "export": ExportConfig}


def usage() -> str:
    return ("usage: fgalign annotate {init,users,serve,stats,export} [OPTIONS]\n\n"
            + "\n".join(f"  {name:<7} {(cls.__doc__ or '').splitlines()[0]}" for name, cls in SUBCOMMANDS.items()))


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        raise InputError(f"unknown sub-command '{name}'\n\n{usage()}")
    cfg = tyro.cli(SUBCOMMANDS[name], args=rest, prog=f"fgalign annotate {name}",
                   description=SUBCOMMANDS[name].__doc__)
    from fgalign.annotate import admin

    return {"init": admin.init, "users": admin.users_cmd, "serve": admin.serve, "stats": admin.stats,
            "export": admin.export}[name](cfg) or 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
