"""The options of every `fgalign annotate` sub-command, one dataclass each (parsed with tyro by commands.py).

Kept apart from the code that runs them (admin.py, users.py), which imports these; commands.py imports both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from fgalign.labels import DEFAULT_LABEL_MODE, LabelMode

DEFAULT_MAX_EDIT_RATIO = 0.5  # the edit stage's default minimality threshold (EditConfig.max_edit_ratio)
DEFAULT_LINK_TTL_HOURS = 72.0  # a login link sent on Friday still works on Monday morning


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
    """Tokenizer (or model) of the reward model — a directory, a .gguf file or pkg:PACKAGE/PATH: the page then
    shows its token labels; without it, labels are shown per word."""
    label_mode: LabelMode = DEFAULT_LABEL_MODE
    """How train-rm will label (its --label-mode): the page shows the same labels. chars marks a replaced
    word whole (what the shipped configs train with)."""
    max_length: int | None = None
    """The reward model's limit in tokens (prompt + response): items longer than it are reported (train-rm
    would leave them out). Default: the model's config (config.json next to --tokenizer, or the GGUF file's), else the
    tokenizer's own."""
    drop_too_long: bool = False
    """Leave out the items longer than the limit instead of only reporting them."""
    guidelines: str | None = None
    """Annotation guidelines (Markdown): shown in a panel on every page, rendered safely (no raw HTML)."""
    max_edit_ratio: float = DEFAULT_MAX_EDIT_RATIO
    """Warn the annotator when an edit changes more than this share of characters (the edit stage's check)."""
    timeout_minutes: float = 30.0
    """An item left idle this long returns to the queue when another annotator needs it."""
    choose_preferred: bool = False
    """Let the annotator pick the better response (recorded) instead of taking the file's preference."""


@dataclass
class UserAddConfig:
    """Add an annotator (or a reviewer) and print their login link."""

    name: Annotated[str, tyro.conf.Positional]
    """The person's name (letters, digits, _ . @ -)."""
    db: str = "annotations.db"
    """The annotation database."""
    reviewer: bool = False
    """A reviewer also resolves items whose annotators disagree (the Review page)."""
    link_ttl: float = DEFAULT_LINK_TTL_HOURS
    """Hours the login link stays valid (it also works only once)."""
    url: str = "http://127.0.0.1:8000"
    """Where annotators reach the server: the printed link starts with it."""


@dataclass
class UserLinkConfig:
    """Give someone a new login link; it ends every session they have (a lost laptop is logged out)."""

    name: Annotated[str, tyro.conf.Positional]
    """The person's name."""
    db: str = "annotations.db"
    """The annotation database."""
    link_ttl: float = DEFAULT_LINK_TTL_HOURS
    """Hours the login link stays valid (it also works only once)."""
    url: str = "http://127.0.0.1:8000"
    """Where annotators reach the server: the printed link starts with it."""


@dataclass
class UserNameConfig:
    """`remove NAME`: no more logins, sessions ended, open items back to the queue (submissions are kept).
    `logout NAME`: end every session of NAME (they need a new link)."""

    name: Annotated[str, tyro.conf.Positional]
    """The person's name."""
    db: str = "annotations.db"
    """The annotation database."""


@dataclass
class UserListConfig:
    """List annotators and reviewers with their last login and how many items they submitted."""

    db: str = "annotations.db"
    """The annotation database."""


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
    """Several annotators per pair: the majority outcome (ties left out), the first submission, or all.
    A reviewer's decision always wins: a reviewed pair gives one record, the reviewed edit."""


@dataclass
class MigrateConfig:
    """Bring a database made by an older fgalign to this schema version (back it up first)."""

    db: str
    """The annotation database."""
