"""Helpers of the annotate tests: a database from pairs, annotators, and a real uvicorn server on 127.0.0.1.

Used by tests/test_annotate_*.py and benchmarks/annotate_load.py. Servers are started and stopped by the
caller (context managers), on a free port, with bounded waits.

Every test that uses a database runs twice, on SQLite and on PostgreSQL: a test module imports the
`backend` fixture and sets `pytest_generate_tests = parametrize_backends`; `make_db` then creates the
database on the backend of the running test. The PostgreSQL server is Debian's `postgresql` (`make test`
installs it when it can), started once per test session by `PostgresServer` (initdb into a temporary
folder, as the `postgres` user when running as root; listening on 127.0.0.1 at a free port and on a
socket in that folder) and stopped at exit; each test gets a fresh database. Without the server the
PostgreSQL runs skip, saying why; under CI (CI=true) they fail.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

PAIRS = [
    {"prompt": "List 3 fruits:", "chosen": " apple, pear, plum.", "rejected": " apple, dog, plum."},
    {"prompt": "List 2 colors:", "chosen": " red, blue.", "rejected": " red, stupid blue."},
    {"prompt": "List 3 animals:", "chosen": " cat, dog, cow.", "rejected": " cat, dog, dog."},
    {"prompt": "List 2 fruits:", "chosen": " apple, banana.", "rejected": " apple, carrot."},
]


def write_pairs(path: Path, pairs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A throw-away PostgreSQL server: initdb into a temporary folder, pg_ctl start, stop at the end."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl); install Debian's `postgresql` "
                               "(`make test` does it with root and apt-get)")
        self.root = Path(tempfile.mkdtemp(prefix="fgalign-pg-"))
        self.data, self.port, self.names = self.root / "data", free_port(), itertools.count()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root without `runuser`: cannot start PostgreSQL as another user")
            shutil.chown(self.root, "postgres")
            self.as_user = [runuser, "-u", "postgres", "--"]
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        self._run([self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "-t", "60",
                   "start"])
        atexit.register(self.stop)

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = (self.root / "log").read_text()[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({r.returncode}): {r.stderr[-2000:]}{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"annotate_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self.as_user + [self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


_POSTGRES: dict[str, object] = {}  # the session's server, or the reason there is none
CURRENT: dict[str, PostgresServer | None] = {"pg": None}


def postgres() -> PostgresServer:
    """The session's PostgreSQL server, started on first use."""
    if not _POSTGRES:
        try:
            import psycopg  # noqa: F401
            _POSTGRES["server"] = PostgresServer()
        except (ImportError, LookupError, RuntimeError, OSError, subprocess.SubprocessError) as e:  # Lookup: no user
            _POSTGRES["error"] = f"{type(e).__name__}: {e}"
    if "error" in _POSTGRES:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PostgreSQL tests cannot run under CI: {_POSTGRES['error']}")
        pytest.skip(f"no PostgreSQL server: {_POSTGRES['error']}")
    return _POSTGRES["server"]  # type: ignore[return-value]


def sqlite_only(fn):
    """Mark a test that checks SQLite itself (its file, its pragmas): it runs on SQLite only."""
    fn.sqlite_only = True
    return fn


def parametrize_backends(metafunc) -> None:  # noqa: ANN001 - a test module's pytest_generate_tests
    if "backend" in metafunc.fixturenames and not getattr(metafunc.function, "sqlite_only", False):
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def backend(request):
    """The database of this test: "sqlite" (a file in tmp_path) or "postgresql" (a fresh database)."""
    name = getattr(request, "param", "sqlite")
    CURRENT["pg"] = postgres() if name == "postgresql" else None
    yield name
    CURRENT["pg"] = None


def new_db(tmp: Path, name: str = "annotations.db") -> str:
    """Where a test's database goes: a SQLite file in `tmp`, or a fresh PostgreSQL database."""
    return CURRENT["pg"].new_database() if CURRENT["pg"] is not None else str(tmp / name)


def make_db(tmp: Path, pairs: list[dict] | None = None, **options) -> str:
    from fgalign.annotate.admin import init
    from fgalign.annotate.options import InitConfig

    src = write_pairs(tmp / "pairs.jsonl", pairs or PAIRS)
    db = new_db(tmp)
    init(InitConfig(pairs=str(src), db=db, **options))
    return db


def add_users(db: str, names: list[str], role: str = "annotator") -> dict[str, str]:
    """name → one-time login token."""
    from fgalign.annotate import accounts
    from fgalign.annotate.db import open_db

    engine = open_db(db)
    with engine.begin() as conn:
        tokens = {name: accounts.add_user(conn, name, role) for name in names}
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
    app = create_app(db)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.annotate.engine.dispose()  # PostgreSQL: close the pool's connections now


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
