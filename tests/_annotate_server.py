"""Helpers of the annotate tests: a database from pairs, annotators, and a real uvicorn server on 127.0.0.1.

Used by tests/test_annotate_*.py and benchmarks/annotate_load.py. Servers are started and stopped by the
caller (context managers), on a free port, with bounded waits.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

PAIRS = [
    {"prompt": "List 3 fruits:", "chosen": " apple, pear, plum.", "rejected": " apple, dog, plum."},
    {"prompt": "List 2 colors:", "chosen": " red, blue.", "rejected": " red, stupid blue."},
    {"prompt": "List 3 animals:", "chosen": " cat, dog, cow.", "rejected": " cat, dog, dog."},
    {"prompt": "List 2 fruits:", "chosen": " apple, banana.", "rejected": " apple, carrot."},
]


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def make_db(tmp: Path, pairs: list[dict] | None = None, **options) -> str:
    from fgalign.annotate.admin import init
    from fgalign.annotate.commands import InitConfig

    src = write_pairs(tmp / "pairs.jsonl", pairs or PAIRS)
    db = str(tmp / "annotations.db")
    init(InitConfig(pairs=str(src), db=db, **options))
    return db


def add_users(db: str, names: list[str]) -> dict[str, str]:
    """name → one-time login token."""
    from fgalign.annotate import accounts
    from fgalign.annotate.db import open_db

    engine = open_db(db)
    with engine.begin() as conn:
        tokens = {name: accounts.add_user(conn, name) for name in names}
    engine.dispose()
    return tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def server_thread(db: str) -> Iterator[str]:
    """The app under uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    from fgalign.annotate.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def server_process(db: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`fgalign annotate serve` as a child process; yields (base URL, process)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fgalign.cli", "annotate", "serve", "--db", db, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


class Annotator:
    """A scripted annotator: an httpx client logged in through its link."""

    def __init__(self, base: str, token: str, timeout: float = 30.0):
        import httpx

        self.client = httpx.Client(base_url=base, timeout=timeout, follow_redirects=False)
        assert self.client.get(f"/login/{token}").status_code == 200  # asks, does not spend the link
        r = self.client.post(f"/login/{token}")
        assert r.status_code == 303, (r.status_code, r.text[:200])
        self.csrf = self.client.get("/api/session").json()["csrf"]

    def next(self) -> dict:
        r = self.client.get("/api/next")
        r.raise_for_status()
        return r.json()

    def post(self, path: str, payload: dict, csrf: bool = True):
        return self.client.post(path, json=payload, headers={"X-CSRF-Token": self.csrf} if csrf else {})

    def submit(self, aid: int, text: str | None, action: str = "edited", seconds: float = 1.0):
        return self.post(f"/api/item/{aid}/submit", {"action": action, "text": text, "seconds": seconds})

    def close(self) -> None:
        self.client.close()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)
