"""Human minimal edits: a web app where annotators edit the rejected response and see the diff and labels live.

    db.py            tables, engine (SQLite WAL by default, any SQLAlchemy URL), schema version
    migrate.py       `migrate`: an older database to this schema version, step by step
    accounts.py      annotators and reviewers, expiring one-time login links, sessions, CSRF (secrets hashed)
    queue.py         assignment with overlap and timeout, skip for now, drafts, submissions and their history
    review.py        the reviewer's queue of disagreements and their decisions
    diffview.py      the live diff and token chips, from fgalign.labels (what train-rm will see)
    web.py           what the routes share: state, pages, session, CSRF; server.py builds the app,
    routes_*.py      its pages and JSON API; templates/ and static/ hold the pages (no frontend build)
    agreement.py     progress, pooled Cohen's kappa and per-item agreement for `stats` (stats_table.py prints)
    export.py        submitted (or reviewed) edits → edit records (`train-rm --data` reads them as they are)
    options.py       the sub-commands' options; commands.py parses and dispatches to admin.py and users.py
"""
