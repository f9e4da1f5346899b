"""What the admin sub-commands do: init, users, serve, stats, export."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fgalign.annotate import accounts, db
from fgalign.annotate.commands import ExportConfig, InitConfig, ServeConfig, StatsConfig, UsersConfig
from fgalign.errors import InputError


def load_tokenizer(path: str | None) -> Any:
    if not path:
        return None
    from fgalign.labels.stage import load_any_tokenizer

    return load_any_tokenizer(path)


def read_pairs(path: str) -> list[dict]:
    """Every record of the pairs file, validated by the data layer (errors name file and line)."""
    from fgalign.data.io import iter_raw
    from fgalign.data.records import validate_record

    rows = []
    for loc, obj in iter_raw(path):
        rec = validate_record(obj, path=path, **loc)
        if rec.conversational:
            raise InputError("chat-message records are not supported by the annotation app yet; give plain "
                             "strings (render them with the model's chat template first)", path=path,
                             field="prompt", **loc)
        where = f"{Path(path).name}:{loc['line']}" if "line" in loc else f"{Path(path).name}[{loc['row']}]"
        rows.append({"source": where, "prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected,
                     "meta": json.dumps(rec.meta, ensure_ascii=False)})
    if not rows:
        raise InputError("contains no records", path=path)
    return rows


def init(cfg: InitConfig) -> None:
    if cfg.overlap < 1:
        raise InputError(f"must be at least 1, got {cfg.overlap}", field="--overlap")
    if not 0 < cfg.max_edit_ratio <= 1:
        raise InputError(f"must be in (0, 1], got {cfg.max_edit_ratio}", field="--max-edit-ratio")
    if cfg.timeout_minutes <= 0:
        raise InputError(f"must be positive, got {cfg.timeout_minutes}", field="--timeout-minutes")
    rows = read_pairs(cfg.pairs)
    tokenizer = str(Path(cfg.tokenizer).resolve()) if cfg.tokenizer else ""
    load_tokenizer(tokenizer)  # refuse a bad tokenizer now, not when the server starts
    engine = db.create(cfg.db, {"overlap": cfg.overlap, "tokenizer": tokenizer, "label_mode": cfg.label_mode,
                                "max_edit_ratio": cfg.max_edit_ratio, "timeout": cfg.timeout_minutes * 60,
                                "choose_preferred": int(cfg.choose_preferred), "pairs": str(Path(cfg.pairs).resolve())})
    with engine.begin() as conn:
        conn.execute(db.items.insert(), [{**r, "position": i} for i, r in enumerate(rows)])
    engine.dispose()
    print(f"fgalign annotate: {len(rows)} pairs × overlap {cfg.overlap} → {cfg.db}\n"
          f"next: fgalign annotate users add NAME --db {cfg.db}")


def users_cmd(cfg: UsersConfig) -> None:
    engine = db.open_db(cfg.db)
    try:
        with engine.begin() as conn:
            if cfg.action == "list":
                for row in conn.execute(select(db.users.c.name, db.users.c.login_hash).order_by(db.users.c.name)):
                    print(f"{row.name}\t{'link not used yet' if row.login_hash else 'logged in'}")
                return
            if not cfg.name:
                raise InputError(f"`users {cfg.action}` needs a NAME", field="name")
            token = (accounts.add_user if cfg.action == "add" else accounts.new_link)(conn, cfg.name)
    finally:
        engine.dispose()
    print(f"login link for {cfg.name} (works once; send it privately):\n{cfg.url.rstrip('/')}/login/{token}")


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from fgalign.annotate.server import create_app

    app = create_app(cfg.db, secure_cookies=cfg.secure_cookies)
    try:
        loopback = ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = cfg.host == "localhost"
    if not loopback:
        print(f"fgalign annotate: listening on {cfg.host}, reachable from other machines; put it behind HTTPS "
              "and use --secure-cookies", file=sys.stderr)
    print(f"fgalign annotate: serving {cfg.db} on http://{cfg.host}:{cfg.port} (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


def stats(cfg: StatsConfig) -> dict:
    from fgalign.annotate.agreement import compute

    engine = db.open_db(cfg.db)
    try:
        s = db.read_settings(engine)
        tokenizer = load_tokenizer(s.get("tokenizer"))
        with engine.begin() as conn:
            result = compute(conn, int(s["overlap"]), tokenizer, s.get("label_mode", "tokens"))
    finally:
        engine.dispose()
    if cfg.json_:
        print(json.dumps(result, indent=2))
    else:
        print_stats(result, "token" if tokenizer is not None else "word")
    return result


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def print_stats(r: dict, unit: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ag = r["agreement"]
    console.print(f"pairs {r['items']}, overlap {r['overlap']}: {r['submissions']} of {r['needed']} submissions "
                  f"({r['items_complete']} pairs complete, {r['items_started']} started); verdicts {r['verdicts']}")
    console.print(f"agreement over {ag['annotator_pairs']} annotator pairs ({ag['labels_compared']} {unit} labels): "
                  f"Cohen's kappa {_fmt(ag['kappa'])}, identical edits {_fmt(ag['identical_share'])}")
    table = Table(title="annotators")
    for col in ("annotator", "done", "edited", "no fix", "rewrite", "mean s", "kappa", "same edit"):
        table.add_column(col, justify="left" if col == "annotator" else "right")
    for name, a in r["annotators"].items():
        table.add_row(name, str(a["submitted"]), str(a["edited"]), str(a["identical"]), str(a["rewrite"]),
                      _fmt(a["mean_seconds"], 1), _fmt(a["kappa_vs_others"]), _fmt(a["identical_share"]))
    console.print(table)
    console.print("kappa: against the other annotators of the same pairs; same edit: share of those pairs "
                  "where the edits were identical")
    split = sorted((p for p in r["pairs"] if p["identical_share"] < 1),
                   key=lambda p: (p["identical_share"], -1 if p["kappa"] is None else p["kappa"]))
    if split:
        console.print(f"{len(split)} pairs with different edits; least agreement first (--json lists every pair):")
        for p in split[:5]:
            console.print(f"  {p['source']}: kappa {_fmt(p['kappa'])}, same edit {p['identical_share']:.2f} "
                          f"({', '.join(p['annotators'])})")


def export(cfg: ExportConfig) -> dict:
    from fgalign.annotate.export import collect
    from fgalign.data.io import write_records
    from fgalign.runinfo import save_run_config

    engine = db.open_db(cfg.db)
    try:
        with engine.begin() as conn:
            records, left_out = collect(conn, cfg.adjudicate)
    finally:
        engine.dispose()
    if not records:
        raise InputError(f"nothing to export yet (left out: {left_out or 'nothing'})", path=cfg.db, field="db")
    write_records(cfg.out, records)
    save_run_config(cfg.out, cfg, "annotate export", extra={"records": len(records), "left_out": left_out})
    print(f"fgalign annotate export: {len(records)} edit records → {cfg.out}; left out: {left_out or 'nothing'}")
    return {"records": len(records), "left_out": left_out}
