"""Annotators, their one-time login links and their browser sessions.

Secrets (login tokens, session ids) are 256-bit random strings; the database keeps only their SHA-256, so
a copy of the database lets nobody log in. A plain hash is enough here (no salt, no slow KDF): the secrets
are random, not passwords a person chose, so there is nothing to guess.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from fgalign.annotate.db import sessions, users
from fgalign.errors import InputError

NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InputError(f"annotator name {name!r} must be 1-64 letters, digits or _ . @ -", field="name")
    return name


def add_user(conn: Connection, name: str) -> str:
    """Create an annotator; returns their one-time login token."""
    check_name(name)
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise InputError(f"annotator '{name}' exists; `fgalign annotate users link {name}` gives a new link",
                         field="name")
    token = secrets.token_urlsafe(32)
    conn.execute(insert(users).values(name=name, login_hash=digest(token), created_at=time.time()))
    return token


def new_link(conn: Connection, name: str) -> str:
    """A fresh one-time login token for an existing annotator (the previous unused one stops working)."""
    if conn.execute(update(users).where(users.c.name == check_name(name))
                    .values(login_hash=digest(token := secrets.token_urlsafe(32)))).rowcount != 1:
        raise InputError(f"no annotator named '{name}'; add them with `fgalign annotate users add {name}`",
                         field="name")
    return token


@dataclass
class Session:
    user_id: int
    user: str
    csrf: str


def link_owner(conn: Connection, token: str) -> str | None:
    """Whose unused login link this is (the link is not spent)."""
    return conn.execute(select(users.c.name).where(users.c.login_hash == digest(token))).scalar()


def login(conn: Connection, token: str) -> tuple[str, Session] | None:
    """Spend a one-time login token: a new session (its secret id and what it grants), or None."""
    row = conn.execute(select(users.c.id, users.c.name).where(users.c.login_hash == digest(token))).first()
    if row is None:
        return None
    conn.execute(update(users).where(users.c.id == row.id).values(login_hash=None))
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(insert(sessions).values(id_hash=digest(session_id), user_id=row.id, csrf=csrf,
                                         created_at=time.time()))
    return session_id, Session(row.id, row.name, csrf)


def session_of(conn: Connection, session_id: str | None) -> Session | None:
    if not session_id:
        return None
    row = conn.execute(select(sessions.c.user_id, sessions.c.csrf, users.c.name)
                       .join(users, users.c.id == sessions.c.user_id)
                       .where(sessions.c.id_hash == digest(session_id))).first()
    return None if row is None else Session(row.user_id, row.name, row.csrf)


def logout(conn: Connection, session_id: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.id_hash == digest(session_id)))


def csrf_ok(session: Session, presented: str | None) -> bool:
    return isinstance(presented, str) and bool(presented) and secrets.compare_digest(session.csrf, presented)
