"""The annotation database: tables, engine set-up and the schema version that guards future changes.

SQLite by default (WAL, synchronous=FULL: a commit the page reported survives a killed server and a power
cut), any SQLAlchemy URL otherwise (e.g. postgresql://...). Every SQLite transaction starts with
BEGIN IMMEDIATE, so transactions that read-then-write (claiming an item) are serialized and can never
hand out an item beyond its overlap; other databases lock the item row (`SELECT ... FOR UPDATE`).
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from sqlalchemy import (Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, create_engine, event, inspect, select)
from sqlalchemy.engine import Connection, Engine

from fgalign.errors import InputError

# Bump on any change of the tables below and add the step to migrate.py; `open_db` refuses a database of
# another version (an older one is brought up with `fgalign annotate migrate`), so a database is never read
# with the wrong meaning. History: 1 the first release; 2 submission history, reviews, skip, comments and
# flags, roles, expiring links, last login.
SCHEMA_VERSION = 2

metadata = MetaData()

settings = Table(  # key/value: schema_version, overlap, timeout, tokenizer, label_mode, ... (see init)
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

items = Table(  # one preference pair of the pairs file
    "items", metadata,
    Column("id", Integer, primary_key=True),
    Column("position", Integer, nullable=False, unique=True),  # order handed out: the file's order
    Column("source", Text, nullable=False),  # "pairs.jsonl:12": where it came from, for messages and export
    Column("prompt", Text, nullable=False),
    Column("chosen", Text, nullable=False),
    Column("rejected", Text, nullable=False),
    Column("meta", Text, nullable=False),  # the record's meta dict as JSON
)

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("login_hash", String(64), unique=True),  # sha256 of the one-time login token; NULL once used
    Column("created_at", Float, nullable=False),
    Column("role", String(16), nullable=False, server_default="annotator"),  # annotator | reviewer
    Column("link_expires_at", Float),  # the login link stops working then
    Column("last_login_at", Float),
    Column("removed_at", Float),  # `users remove`: no login, no sessions; their submissions stay
)

sessions = Table(  # a browser's login; the cookie holds the token, the table only its hash
    "sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

# status: open (handed out, maybe with a draft) | submitted | expired (left idle past the timeout while
# someone else needed the item). verdict, once submitted: edited | identical | rewrite.
assignments = Table(
    "assignments", metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("assigned_at", Float, nullable=False),
    Column("active_at", Float, nullable=False),  # last sign of life (claim, draft): drives the timeout
    Column("draft", Text),
    Column("swapped", Integer, nullable=False, default=0),  # the annotator preferred the file's rejected one
    Column("verdict", String(16)),
    Column("edited", Text),
    Column("edit_ratio", Float),
    Column("seconds", Float, nullable=False, default=0.0),  # time on task, summed over visits
    Column("submitted_at", Float),  # the latest submission (all of them: the submissions table)
    Column("skipped_at", Float),  # "skip for now": handed out again after the annotator's other work
    Column("comment", Text),  # the annotator's note on the item (for the managers; exported in meta)
    Column("flagged", Integer, nullable=False, server_default="0"),  # "flag this item" (bad prompt, unclear...)
    UniqueConstraint("item_id", "user_id", name="one_assignment_per_user_and_item"),
    Index("assignments_by_status", "status", "active_at"),
    Index("assignments_by_user", "user_id", "assigned_at"),
)


submissions = Table(  # every submission of an assignment, resubmissions included (the latest is on assignments)
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    Column("assignment_id", Integer, ForeignKey("assignments.id"), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("edited", Text),
    Column("swapped", Integer, nullable=False, server_default="0"),
    Column("edit_ratio", Float),
    Column("seconds", Float, nullable=False, server_default="0"),  # the assignment's time on task by then
    Column("submitted_at", Float, nullable=False),
    Index("submissions_by_assignment", "assignment_id", "submitted_at"),
)

reviews = Table(  # a reviewer's decision on an item whose annotators disagreed; the latest one counts
    "reviews", metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False),
    Column("reviewer_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("accepted_assignment_id", Integer, ForeignKey("assignments.id")),  # NULL: the reviewer wrote it
    Column("verdict", String(16), nullable=False),  # edited | identical | rewrite
    Column("edited", Text),
    Column("swapped", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Index("reviews_by_item", "item_id", "created_at"),
)


def db_url(db: str) -> str:
    """A SQLAlchemy URL (postgresql:// goes through psycopg 3); anything else is a SQLite file path."""
    if "://" not in db:
        return f"sqlite:///{Path(db).resolve()}"
    for plain in ("postgresql://", "postgres://"):
        if db.startswith(plain):
            return "postgresql+psycopg://" + db[len(plain):]
    return db


def make_engine(db: str) -> Engine:
    url = db_url(db)
    if not url.startswith("sqlite"):
        # 40 request threads (starlette's pool) may read at once; writes queue on the app's lock anyway
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        # Read-only work (`read_only` below) takes no write lock, so it never waits behind a commit's fsync.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")

    return engine


@contextlib.contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads (SQLite: a deferred BEGIN, no write lock)."""
    with engine.connect().execution_options(read_only=True) as conn, conn.begin():
        yield conn


def exists(db: str) -> bool:
    """Whether `db` already holds an annotation database (or, for a file path, anything at all)."""
    if "://" not in db:
        return Path(db).exists()
    try:
        engine = create_engine(db_url(db))
    except Exception as e:  # noqa: BLE001 - a malformed URL or a missing driver
        raise InputError(f"is not a usable database URL: {e}", path=db, field="db") from None
    try:
        return inspect(engine).has_table("settings")
    except Exception as e:  # noqa: BLE001 - no server there, wrong password, no such database
        raise InputError(f"cannot connect: {str(e).splitlines()[0]}", path=db, field="db") from None
    finally:
        engine.dispose()


def create(db: str, values: dict[str, str]) -> Engine:
    """Create the tables and store the settings (with the schema version); refuses an existing database."""
    if exists(db):
        raise InputError("already exists; init never overwrites annotations — choose another --db or "
                         "delete it yourself", path=db, field="db")
    if "://" not in db:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(settings.insert(), [{"key": k, "value": str(v)} for k, v in
                                         {**values, "schema_version": SCHEMA_VERSION, "created_at": time.time()}.items()])
    return engine


def open_db(db: str, any_version: bool = False) -> Engine:
    """An engine on an existing annotation database of this schema version (of any version with
    `any_version`, for migrate.py), or a clear InputError."""
    if "://" not in db and not Path(db).is_file():
        raise InputError("no such annotation database; create it with `fgalign annotate init`", path=db,
                         field="db")
    engine = make_engine(db)
    try:
        if not inspect(engine).has_table("settings"):
            raise InputError("is not an fgalign annotation database (no settings table)", path=db, field="db")
        version = read_settings(engine).get("schema_version")
    except InputError:
        engine.dispose()
        raise
    except Exception as e:  # noqa: BLE001 - a file that is not a database at all
        engine.dispose()
        raise InputError(f"cannot open as a database: {e}", path=db, field="db") from None
    if version != str(SCHEMA_VERSION) and not any_version:
        engine.dispose()
        older = version is not None and version.isdigit() and int(version) < SCHEMA_VERSION
        hint = ("back it up, then run `fgalign annotate migrate --db ...`" if older
                else "use the fgalign that created it")
        raise InputError(f"has schema version {version}, this fgalign reads version {SCHEMA_VERSION}; {hint}",
                         path=db, field="db")
    return engine


def read_settings(engine: Engine) -> dict[str, str]:
    with engine.begin() as conn:
        return {k: v for k, v in conn.execute(select(settings.c.key, settings.c.value))}
