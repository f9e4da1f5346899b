"""What the admin sub-commands do: init, serve, stats, export, migrate (users: users.py)."""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from fgalign.annotate import db
from fgalign.annotate.options import ExportConfig, InitConfig, MigrateConfig, ServeConfig, StatsConfig
from fgalign.errors import InputError

FIELDS = ("prompt", "chosen", "rejected")
MAX_GUIDELINES = 200_000  # characters of Markdown
SHOWN = 5  # warnings listed one by one before "... and N more"


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
        for name in FIELDS:  # this app takes plain strings only: say so, without offering chat messages
            value = obj.get(name) if isinstance(obj, dict) else None
            if value is not None and not isinstance(value, (str, list)):
                raise InputError(f"expected a string, got {type(value).__name__}: {value!r:.80}", path=path,
                                 field=name, **loc)
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


def stored_tokenizer_path(spec: str | None) -> str:
    """What the database keeps to reload the tokenizer at `serve`: an absolute path, or a `pkg:` spec as given
    (it names an installed package, wherever the server runs)."""
    if not spec:
        return ""
    return spec if spec.startswith("pkg:") else str(Path(spec).resolve())


def max_length_of(tokenizer_dir: str, tokenizer: Any) -> int | None:
    """The reward model's limit as train-rm finds it: the model config's positions, else the tokenizer's."""
    from fgalign.data.locations import resolve_model

    if tokenizer_dir.startswith("pkg:") or tokenizer_dir.lower().endswith(".gguf"):
        source = resolve_model(tokenizer_dir, "tokenizer", weights=False)
        if source.is_gguf:  # a GGUF file holds its config; there is no config.json beside it
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(source.directory), gguf_file=source.gguf_file)
            positions = getattr(config, "max_position_embeddings", None)
            return positions if isinstance(positions, int) else None
        tokenizer_dir = str(source.directory)
    config = Path(tokenizer_dir) / "config.json"
    if config.is_file():
        with open(config) as f:
            cfg = json.load(f)
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 1_000_000 else None


def too_long(rows: list[dict], tokenizer: Any, max_length: int) -> list[tuple[int, int]]:
    """(row index, tokens) of the items whose prompt plus longer response (with EOS) exceed `max_length`:
    train-rm counts a pair the same way and leaves it out."""
    from fgalign.data.tokenize import encode_prompt, encode_response

    out = []
    for k, r in enumerate(rows):
        n = len(encode_prompt(tokenizer, r["prompt"])) + max(len(encode_response(tokenizer, r["chosen"])),
                                                            len(encode_response(tokenizer, r["rejected"])))
        if n > max_length:
            out.append((k, n))
    return out


def warn(lines: list[str], what: str) -> None:
    if lines:
        print(f"fgalign annotate init: warning: {len(lines)} {what}:", file=sys.stderr)
        for line in lines[:SHOWN]:
            print(f"  {line}", file=sys.stderr)
        if len(lines) > SHOWN:
            print(f"  ... and {len(lines) - SHOWN} more", file=sys.stderr)


def read_guidelines(path: str | None) -> str:
    if not path:
        return ""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such guidelines file", path=path, field="--guidelines")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text ({e.reason} at byte {e.start})", path=path, field="--guidelines") from None
    if len(text) > MAX_GUIDELINES:
        raise InputError(f"is {len(text):,} characters long; at most {MAX_GUIDELINES:,}", path=path,
                         field="--guidelines")
    return text


def init(cfg: InitConfig) -> dict:
    if cfg.overlap < 1:
        raise InputError(f"must be at least 1, got {cfg.overlap}", field="--overlap")
    if not 0 < cfg.max_edit_ratio <= 1:
        raise InputError(f"must be in (0, 1], got {cfg.max_edit_ratio}", field="--max-edit-ratio")
    if cfg.timeout_minutes <= 0:
        raise InputError(f"must be positive, got {cfg.timeout_minutes}", field="--timeout-minutes")
    if cfg.max_length is not None and cfg.max_length < 2:
        raise InputError(f"must be at least 2 tokens, got {cfg.max_length}", field="--max-length")
    if cfg.drop_too_long and not cfg.tokenizer:
        raise InputError("needs --tokenizer (lengths are counted in its tokens)", field="--drop-too-long")
    guidelines = read_guidelines(cfg.guidelines)
    rows = read_pairs(cfg.pairs)
    warn([r["source"] for r in rows if r["chosen"] == r["rejected"]],
         "pairs where chosen equals rejected (nothing to prefer; an edit of it teaches nothing)")
    warn([r["source"] for r in rows if not r["rejected"].strip()],
         "pairs with an empty rejected response (nothing to edit: annotators can only rewrite it)")
    tokenizer_dir = stored_tokenizer_path(cfg.tokenizer)
    tokenizer = load_tokenizer(tokenizer_dir)  # refuse a bad tokenizer now, not when the server starts
    long_rows: list[tuple[int, int]] = []
    limit = None
    if tokenizer is not None:
        limit = cfg.max_length or max_length_of(tokenizer_dir, tokenizer)
        if limit:
            long_rows = too_long(rows, tokenizer, limit)
            action = "left out (--drop-too-long)" if cfg.drop_too_long else \
                "kept; train-rm will leave them out — --drop-too-long drops them here"
            warn([f"{rows[k]['source']}: {n} tokens" for k, n in long_rows],
                 f"pairs longer than the reward model's {limit} tokens, {action}")
    if cfg.drop_too_long:
        drop = {k for k, _ in long_rows}
        rows = [r for k, r in enumerate(rows) if k not in drop]
        if not rows:
            raise InputError(f"every pair is longer than {limit} tokens; nothing left to annotate", path=cfg.pairs)
    engine = db.create(cfg.db, {"overlap": cfg.overlap, "tokenizer": tokenizer_dir, "label_mode": cfg.label_mode,
                                "max_edit_ratio": cfg.max_edit_ratio, "timeout": cfg.timeout_minutes * 60,
                                "choose_preferred": int(cfg.choose_preferred), "guidelines": guidelines,
                                "max_length": limit or "", "pairs": str(Path(cfg.pairs).resolve())})
    with engine.begin() as conn:
        conn.execute(db.items.insert(), [{**r, "position": i} for i, r in enumerate(rows)])
    engine.dispose()
    print(f"fgalign annotate: {len(rows)} pairs × overlap {cfg.overlap} → {cfg.db}\n"
          f"next: fgalign annotate users add NAME --db {cfg.db}")
    return {"items": len(rows), "too_long": len(long_rows), "dropped": len(long_rows) if cfg.drop_too_long else 0}


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
    from fgalign.labels import DEFAULT_LABEL_MODE
    from fgalign.annotate.stats_table import print_stats

    engine = db.open_db(cfg.db)
    try:
        s = db.read_settings(engine)
        tokenizer = load_tokenizer(s.get("tokenizer"))
        with engine.begin() as conn:
            result = compute(conn, int(s["overlap"]), tokenizer, s.get("label_mode", DEFAULT_LABEL_MODE))
    finally:
        engine.dispose()
    if cfg.json_:
        print(json.dumps(result, indent=2))
    else:
        print_stats(result, "token" if tokenizer is not None else "word")
    return result


def export(cfg: ExportConfig) -> dict:
    from fgalign.annotate.export import collect
    from fgalign.data.io import write_records
    from fgalign.runinfo import save_run_config

    from fgalign.labels import DEFAULT_LABEL_MODE

    engine = db.open_db(cfg.db)
    try:
        mode = db.read_settings(engine).get("label_mode", DEFAULT_LABEL_MODE)
        with engine.begin() as conn:
            records, left_out = collect(conn, cfg.adjudicate)
    finally:
        engine.dispose()
    if not records:
        raise InputError(f"nothing to export yet (left out: {left_out or 'nothing'})", path=cfg.db, field="db")
    write_records(cfg.out, records)
    save_run_config(cfg.out, cfg, "annotate export", extra={"records": len(records), "left_out": left_out,
                                                              "label_mode_shown": mode})
    print(f"fgalign annotate export: {len(records)} edit records → {cfg.out}; left out: {left_out or 'nothing'}\n"
          f"the annotators saw the labels of --label-mode {mode}: train with `fgalign train-rm --label-mode {mode}`")
    return {"records": len(records), "left_out": left_out}


def migrate(cfg: MigrateConfig) -> list[str]:
    from fgalign.annotate.migrate import migrate as run_steps

    done = run_steps(cfg.db)
    print("fgalign annotate migrate: " + ("; ".join(done) if done else
                                          f"already at schema version {db.SCHEMA_VERSION}, nothing to do"))
    return done
