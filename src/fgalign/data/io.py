"""Read preference records from JSONL / JSON / parquet / `datasets.save_to_disk`; write JSONL or parquet.

Every bad record stops with an InputError that names file, line (or row), field and what was expected.
Writes are atomic: a failed command leaves no output, an existing output is never half-overwritten.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from fgalign.data.records import PreferenceRecord, ReadStats, response_text, validate_record
from fgalign.errors import InputError
from fgalign.runinfo import atomic_path


def _iter_jsonl(path: Path) -> Iterator[tuple[dict, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})",
                                 path=str(path), line=lineno) from None
            if not text.strip():
                continue
            try:
                yield {"line": lineno}, json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", path=str(path), line=lineno) from None


def _iter_json(path: Path) -> Iterator[tuple[dict, Any]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"is not valid UTF-8 (byte offset {e.start})", path=str(path)) from None
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", path=str(path), line=e.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError("expected a JSON array of records (or {\"data\": [...]})", path=str(path))
    for i, obj in enumerate(data):
        yield {"row": i}, obj


def _iter_table(path: Path) -> Iterator[tuple[dict, Any]]:
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - any failure here is the user's directory, not our bug
            raise InputError(f"cannot load as a `datasets.save_to_disk` directory: {e}", path=str(path)) from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise InputError(f"a DatasetDict needs a 'train' split, found {list(ds)}", path=str(path))
            ds = ds["train"]
        rows: Iterable[dict] = ds
    else:
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot read as parquet: {e}", path=str(path)) from None
    for i, row in enumerate(rows):
        yield {"row": i}, row


def iter_raw(path: str | os.PathLike) -> Iterator[tuple[dict, Any]]:
    """Yield ({"line": n} or {"row": i}, parsed object) from any supported file format."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    if path.is_dir():
        return _iter_table(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _iter_table(path)
    if suffix == ".json":
        return _iter_json(path)
    return _iter_jsonl(path)


def read_records(path: str | os.PathLike, *, require_edited: bool = False,
                 stats: ReadStats | None = None) -> list[PreferenceRecord]:
    """Read and validate every record of a file.

    With `require_edited`, records without an `edited` field, and records whose `edited` equals `rejected`
    (a no-op edit carries no token labels), are skipped and counted in `stats`.
    """
    stats = stats if stats is not None else ReadStats()
    out = []
    for loc, obj in iter_raw(path):
        rec = validate_record(obj, path=str(path), **loc)
        stats.read += 1
        if require_edited:
            if rec.edited is None:
                stats.skipped_missing_edit += 1
                continue
            if response_text(rec.edited) == response_text(rec.rejected):
                stats.skipped_noop_edits += 1
                continue
        out.append(rec)
    if not out and stats.read == 0:
        raise InputError("contains no records", path=str(path))
    return out


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write dicts as JSONL atomically; returns the count."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def write_records(path: str | os.PathLike, records: Iterable[PreferenceRecord | dict]) -> int:
    """Write records as JSONL, or parquet when the path ends in `.parquet`; atomically."""
    rows = [r.to_dict() if isinstance(r, PreferenceRecord) else r for r in records]
    if str(path).endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        for r in rows:  # parquet needs one schema: meta as a JSON string
            r["meta"] = json.dumps(r.get("meta", {}))
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        return len(rows)
    return write_jsonl(path, rows)


def read_jsonl_dicts(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL of arbitrary objects (e.g. label files) with the same error messages."""
    return [obj for _, obj in _iter_jsonl(Path(path))]
