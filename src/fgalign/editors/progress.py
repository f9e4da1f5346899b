"""The progress file of an edit run: nothing finished is ever lost, nothing done is paid for twice.

One JSONL line per finished record, appended and flushed as it arrives, so a run killed at any moment
keeps everything it finished (a line torn by the kill is ignored). The first line holds the settings the
edits depend on; a rerun with other settings is refused rather than mixing two editors' work.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fgalign.errors import InputError


def record_key(prompt: Any, chosen: Any, rejected: Any) -> str:
    """Identity of a record's inputs (so a rerun on a reordered or extended file still resumes)."""
    blob = json.dumps([prompt, chosen, rejected], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def progress_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".progress.jsonl")


class ProgressLog:
    """`entries[key]` is the latest finished attempt of each record; `append` adds one durably."""

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            self._load(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        if fresh:
            self._write({"settings": settings})
        elif not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end a line torn by a kill, so the next entry starts clean

    def _load(self, settings: dict[str, Any]) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for lineno, line in enumerate(lines, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                self.torn_lines += 1
                continue
            if lineno == 1:
                if obj.get("settings") != settings:
                    raise InputError(
                        f"this progress file was made with other settings ({obj.get('settings')}); now: {settings}. "
                        "Delete it to start over (cached replies are reused) or choose another --out",
                        path=str(self.path))
                continue
            if isinstance(obj, dict) and "key" in obj:
                self.entries[obj["key"]] = obj

    def _write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._file.flush()

    def append(self, entry: dict[str, Any]) -> None:
        self._write(entry)
        self.entries[entry["key"]] = entry

    def close(self) -> None:
        self._file.close()
