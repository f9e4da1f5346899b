"""`fgalign annotate users add|link|list|remove|logout`: accounts, from the CLI only."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from sqlalchemy.engine import Connection

from fgalign.annotate import accounts, db
from fgalign.annotate.options import UserAddConfig, UserLinkConfig, UserListConfig, UserNameConfig


@contextlib.contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """One transaction on the database at `url`; the engine is closed after it (a CLI command uses one)."""
    engine = db.open_db(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _print_link(name: str, token: str, url: str, hours: float) -> None:
    print(f"login link for {name} (works once, for {hours:g} hours; send it privately):\n"
          f"{url.rstrip('/')}/login/{token}")


def add(cfg: UserAddConfig) -> str:
    with transaction(cfg.db) as conn:
        token = accounts.add_user(conn, cfg.name, "reviewer" if cfg.reviewer else "annotator", cfg.link_ttl)
    _print_link(cfg.name, token, cfg.url, cfg.link_ttl)
    return token


def link(cfg: UserLinkConfig) -> str:
    with transaction(cfg.db) as conn:
        token = accounts.new_link(conn, cfg.name, cfg.link_ttl)
    _print_link(cfg.name, token, cfg.url, cfg.link_ttl)
    print("(their earlier sessions are logged out)")
    return token


def list_(cfg: UserListConfig) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    with transaction(cfg.db) as conn:
        people = accounts.list_users(conn)
    table = Table(title="annotators")
    for col in ("name", "role", "login link", "link expires", "last login", "submitted"):
        table.add_column(col, justify="right" if col == "submitted" else "left")
    for p in people:
        table.add_row(p["name"], p["role"], p["link"], _when(p["link_expires_at"]) if p["link"] == "unused" else "–",
                      _when(p["last_login_at"]), str(p["submitted"]))
    Console(width=120).print(table)
    return people


def remove(cfg: UserNameConfig) -> None:
    with transaction(cfg.db) as conn:
        released = accounts.remove_user(conn, cfg.name)
    print(f"removed {cfg.name}: logged out, no more logins; {released} open items back in the queue; "
          "their submissions are kept (`users link` lets them back in)")


def logout(cfg: UserNameConfig) -> None:
    with transaction(cfg.db) as conn:
        n = accounts.logout_user(conn, cfg.name)
    print(f"{cfg.name}: {n} sessions ended (they need a new link: `fgalign annotate users link {cfg.name}`)")
