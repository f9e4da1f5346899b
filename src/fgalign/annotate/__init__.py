"""Human minimal edits: a web app where annotators edit the rejected response and see the diff and labels live.

    db.py         tables, engine (SQLite WAL by default, any SQLAlchemy URL), schema version
    accounts.py   annotators, one-time login links, sessions, CSRF (secrets stored hashed)
    queue.py      assignment with overlap and timeout, drafts, submissions
    diffview.py   the live diff and token labels, from fgalign.labels (what train-rm will see)
    server.py     the FastAPI app; templates/ and static/ hold the pages (no frontend build)
    agreement.py  progress and Cohen's kappa for `stats`
    export.py     submitted edits → edit records (`train-rm --data` reads them as they are)
    commands.py   the CLI: init | users | serve | stats | export (admin.py does the work)
"""
