"""An on-disk cache of LLM replies, so that a rerun never pays for the same request twice.

One SQLite file in a folder (`--cache-dir`). The key is a hash of everything that decides a reply:
the model name, the messages and the sampling parameters. The server's URL is left out on purpose: the
same model behind another URL (a local vLLM and a hosted copy) gives the same answers. SQLite makes the
cache safe to share between threads of one run and between processes (an `edit` and an `eval` at once).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

CACHE_FILE = "responses.sqlite"


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """A stable hash of one request (the same request always gives the same key)."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Replies by request key, in `<folder>/responses.sqlite`."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the worker threads; the lock serialises use (SQLite work is tiny next to
        # a network request). The busy timeout lets a second process wait instead of failing.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT)")
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return row[0]

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, model, reply) VALUES (?, ?, ?)", (key, model, reply))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
