"""`fgalign annotate migrate`: bring an older annotation database to this schema version, in place.

Each step takes version k to k + 1 inside one transaction (SQLite and PostgreSQL both run DDL in
transactions), so a failed step leaves the database as it was. Steps only add: columns with defaults,
tables, and rows copied from what was there; nothing is dropped.
"""
from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from fgalign.annotate import db
from fgalign.errors import InputError


def _add_column(conn: Connection, table: str, ddl: str) -> None:
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {ddl}")


def v1_to_v2(conn: Connection) -> None:
    """Submission history, reviews, skip, comments and flags, roles, expiring links, last login."""
    for ddl in ("role VARCHAR(16) NOT NULL DEFAULT 'annotator'", "link_expires_at FLOAT", "last_login_at FLOAT",
                "removed_at FLOAT"):
        _add_column(conn, "users", ddl)
    for ddl in ("skipped_at FLOAT", "comment TEXT", "flagged INTEGER NOT NULL DEFAULT 0"):
        _add_column(conn, "assignments", ddl)
    db.metadata.create_all(conn, tables=[db.submissions, db.reviews])
    a = db.assignments
    rows = conn.execute(select(a.c.id, a.c.verdict, a.c.edited, a.c.swapped, a.c.edit_ratio, a.c.seconds,
                               a.c.submitted_at).where(a.c.status == "submitted")).all()
    if rows:  # the one submission version 1 kept of each assignment becomes its history
        conn.execute(insert(db.submissions), [
            {"assignment_id": r.id, "verdict": r.verdict, "edited": r.edited, "swapped": r.swapped,
             "edit_ratio": r.edit_ratio, "seconds": r.seconds, "submitted_at": r.submitted_at} for r in rows])


STEPS = {1: v1_to_v2}


def version_of(engine: Engine) -> int:
    value = db.read_settings(engine).get("schema_version", "")
    if not value.isdigit():
        raise InputError(f"has no readable schema version ({value!r})", field="db")
    return int(value)


def migrate(path: str) -> list[str]:
    """Run every step from the database's version to db.SCHEMA_VERSION; returns what was done."""
    engine = db.open_db(path, any_version=True)
    done = []
    try:
        version = version_of(engine)
        if version > db.SCHEMA_VERSION:
            raise InputError(f"has schema version {version}, newer than this fgalign's {db.SCHEMA_VERSION}; "
                             "upgrade fgalign", path=path, field="db")
        while version < db.SCHEMA_VERSION:
            with engine.begin() as conn:
                STEPS[version](conn)
                conn.execute(update(db.settings).where(db.settings.c.key == "schema_version")
                             .values(value=str(version + 1)))
            done.append(f"{version} → {version + 1}: {(STEPS[version].__doc__ or '').strip()}")
            version += 1
    finally:
        engine.dispose()
    return done
