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

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from fgalign.annotate.db import assignments, sessions, users
from fgalign.errors import InputError

ROLES = ("annotator", "reviewer")
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InputError(f"annotator name {name!r} must be 1-64 letters, digits or _ . @ -", field="name")
    return name


def _ttl(hours: float) -> float:
    if not (hours > 0):
        raise InputError(f"must be a positive number of hours, got {hours}", field="--link-ttl")
    return time.time() + hours * 3600


def add_user(conn: Connection, name: str, role: str = "annotator", link_ttl_hours: float = 72.0) -> str:
    """Create an annotator (or reviewer); returns their one-time login token, valid for `link_ttl_hours`."""
    check_name(name)
    if role not in ROLES:
        raise InputError(f"unknown role '{role}': expected one of {', '.join(ROLES)}", field="role")
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise InputError(f"'{name}' exists; `fgalign annotate users link {name}` gives a new link", field="name")
    token = secrets.token_urlsafe(32)
    conn.execute(insert(users).values(name=name, login_hash=digest(token), created_at=time.time(), role=role,
                                      link_expires_at=_ttl(link_ttl_hours)))
    return token


def _user_id(conn: Connection, name: str) -> int:
    uid = conn.execute(select(users.c.id).where(users.c.name == check_name(name))).scalar()
    if uid is None:
        raise InputError(f"no annotator named '{name}'; add them with `fgalign annotate users add {name}`",
                         field="name")
    return uid


def new_link(conn: Connection, name: str, link_ttl_hours: float = 72.0) -> str:
    """A fresh one-time login token for an existing person. The previous link stops working and every
    session they have ends (a link is asked for when a laptop is lost, or a link leaked)."""
    uid = _user_id(conn, name)
    token = secrets.token_urlsafe(32)
    conn.execute(update(users).where(users.c.id == uid).values(login_hash=digest(token), removed_at=None,
                                                               link_expires_at=_ttl(link_ttl_hours)))
    conn.execute(delete(sessions).where(sessions.c.user_id == uid))
    return token


def logout_user(conn: Connection, name: str) -> int:
    """End every session of `name`; returns how many there were."""
    return conn.execute(delete(sessions).where(sessions.c.user_id == _user_id(conn, name))).rowcount


def remove_user(conn: Connection, name: str) -> int:
    """No more logins (link and sessions gone); their open items return to the queue; what they submitted
    stays (it is exported under their name). Returns how many open items were released."""
    uid = _user_id(conn, name)
    conn.execute(update(users).where(users.c.id == uid).values(removed_at=time.time(), login_hash=None))
    conn.execute(delete(sessions).where(sessions.c.user_id == uid))
    return conn.execute(update(assignments).where(assignments.c.user_id == uid, assignments.c.status == "open")
                        .values(status="expired")).rowcount


def list_users(conn: Connection) -> list[dict]:
    """Everyone with role, state of their link, last login and submissions."""
    done = (select(assignments.c.user_id, func.count().label("n")).where(assignments.c.status == "submitted")
            .group_by(assignments.c.user_id).subquery())
    rows = conn.execute(select(users, func.coalesce(done.c.n, 0).label("submitted"))
                        .outerjoin(done, done.c.user_id == users.c.id).order_by(users.c.name))
    now = time.time()
    out = []
    for r in rows:
        link = ("removed" if r.removed_at else "none" if r.login_hash is None
                else "expired" if (r.link_expires_at or 0) < now else "unused")
        out.append({"name": r.name, "role": r.role, "link": link, "link_expires_at": r.link_expires_at,
                    "last_login_at": r.last_login_at, "submitted": r.submitted})
    return out


@dataclass
class Session:
    user_id: int
    user: str
    csrf: str
    role: str = "annotator"

    @property
    def reviewer(self) -> bool:
        return self.role == "reviewer"


def _valid_link(conn: Connection, token: str):  # noqa: ANN202
    return conn.execute(select(users.c.id, users.c.name, users.c.role).where(
        users.c.login_hash == digest(token), users.c.removed_at.is_(None),
        users.c.link_expires_at > time.time())).first()


def link_owner(conn: Connection, token: str) -> str | None:
    """Whose unused, unexpired login link this is (the link is not spent)."""
    row = _valid_link(conn, token)
    return None if row is None else row.name


def login(conn: Connection, token: str) -> tuple[str, Session] | None:
    """Spend a one-time login token: a new session (its secret id and what it grants), or None."""
    row = _valid_link(conn, token)
    if row is None:
        return None
    now = time.time()
    conn.execute(update(users).where(users.c.id == row.id).values(login_hash=None, last_login_at=now))
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(insert(sessions).values(id_hash=digest(session_id), user_id=row.id, csrf=csrf, created_at=now))
    return session_id, Session(row.id, row.name, csrf, row.role)


def session_of(conn: Connection, session_id: str | None) -> Session | None:
    if not session_id:
        return None
    row = conn.execute(select(sessions.c.user_id, sessions.c.csrf, users.c.name, users.c.role)
                       .join(users, users.c.id == sessions.c.user_id)
                       .where(sessions.c.id_hash == digest(session_id), users.c.removed_at.is_(None))).first()
    return None if row is None else Session(row.user_id, row.name, row.csrf, row.role)


def logout(conn: Connection, session_id: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.id_hash == digest(session_id)))


def csrf_ok(session: Session, presented: str | None) -> bool:
    return isinstance(presented, str) and bool(presented) and secrets.compare_digest(session.csrf, presented)
