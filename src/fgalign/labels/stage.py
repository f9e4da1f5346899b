"""`fgalign label`: token labels for every edit pair of an EDITS file, written as JSONL for inspection.

Training does not need this file (the reward-model stage labels on the fly with the same functions); it is
here to look at what the reward model will be taught, and to catch a bad editor before training on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from fgalign.configfile import accepts_old_names
from fgalign.labels import DEFAULT_LABEL_MODE, LabelMode
from fgalign.data import ReadStats, read_records
from fgalign.data.io import write_jsonl
from fgalign.data.outputs import check_output
from fgalign.data.records import render_text
from fgalign.errors import InputError
from fgalign.labels.align import DELETED, INSERTED
from fgalign.labels.project import label_pair
from fgalign.runinfo import save_run_config


@accepts_old_names
@dataclass
class LabelConfig:
    """Label the tokens of each (rejected, edited) pair from the edit."""

    RENAMED: ClassVar[dict[str, str]] = {"in_": "data", "mode": "label_mode"}
    """Old option names (CLI and YAML) still read, with a deprecation line, until the next release."""

    data: str
    """EDITS file (JSONL/JSON/parquet/save_to_disk) with prompt, chosen, rejected and edited."""
    tokenizer: str
    """A Hugging Face tokenizer directory, a model directory that holds one, a .gguf file or pkg:PACKAGE/PATH
    (must be a fast tokenizer)."""
    out: str
    """LABELS JSONL to write: each record plus rejected_ids/labels and edited_ids/labels."""
    label_mode: LabelMode = DEFAULT_LABEL_MODE
    """"tokens": align token ids (the paper's way, for this tokenizer); "chars": align words, then project
    the character labels through offsets (consistent across tokenizers)."""
    mark_omissions: bool = True
    """Mark the original token where content was inserted (or EOS, for an insertion at the end) with −1,
    so that an omission costs the response something (DESIGN §6)."""
    examples: int = 3
    """How many labelled pairs to print in the summary."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign label` (anything else is never replaced)."""


def load_any_tokenizer(path: str) -> Any:
    """A fast tokenizer from a local directory, a `.gguf` file or `pkg:PACKAGE/PATH` (as every model path),
    policy's or reward model's (EOS not required: BERT ends with [SEP]); never with remote code."""
    from transformers import AutoTokenizer

    from fgalign.data.locations import resolve_model, tokenizer_kwargs

    if not str(path).startswith("pkg:") and not str(path).lower().endswith(".gguf") and not Path(path).is_dir():
        raise InputError("expected a tokenizer or model directory (or a .gguf file, or pkg:PACKAGE/PATH)",
                         path=path, field="tokenizer")
    source = resolve_model(path, "tokenizer", option="tokenizer", weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.directory), **tokenizer_kwargs(source))
    except Exception as e:  # noqa: BLE001 - a broken user directory
        raise InputError(f"cannot load a tokenizer: {e}", path=path, field="tokenizer") from None
    if not tokenizer.is_fast:
        raise InputError("needs a fast tokenizer (tokenizer.json) for character offsets", path=path,
                         field="tokenizer")
    return tokenizer


def marked_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    """The decoded text with labelled runs marked: `[-deleted-]` for −1, `{+inserted+}` for +1.

    Runs are cut out of prefix decodes (decode(ids[:end]) minus decode(ids[:start])), which keeps the
    spaces that tokenizers like SentencePiece or WordPiece only produce in context. Unlabelled special
    tokens (the usual EOS) are left out; a labelled EOS shows, e.g. `[-<|endoftext|>-]` for an omission.
    """
    special = set(tokenizer.all_special_ids)
    kept = [(i, lab) for i, lab in zip(ids, labels) if lab != 0 or i not in special]
    ids = [i for i, _ in kept]

    def decode(k: int) -> str:
        return tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces, start = [], 0
    for end in range(1, len(kept) + 1):
        if end < len(kept) and kept[end][1] == kept[start][1]:
            continue
        text, label = decode(end)[len(decode(start)):], kept[start][1]
        if label != 0 and text.strip():  # spaces around a marked word read better outside the marks
            core = text.strip()
            lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
            text = lead + (f"[-{core}-]" if label == DELETED else f"{{+{core}+}}") + trail
        elif label != 0:
            text = f"[-{text}-]" if label == DELETED else f"{{+{text}+}}"
        pieces.append(text)
        start = end
    return "".join(pieces)


def summarize(rows: list[dict]) -> dict:
    """Counts and edit-ratio quantiles (edit ratio: labelled tokens / tokens of a pair, both sides)."""
    ratios = [(sum(x != 0 for x in r["rejected_labels"]) + sum(x != 0 for x in r["edited_labels"]))
              / (len(r["rejected_labels"]) + len(r["edited_labels"])) for r in rows]
    p10, p50, p90 = np.quantile(ratios, [0.1, 0.5, 0.9]).tolist()
    return {
        "pairs": len(rows),
        "edit_ratio": {"p10": p10, "p50": p50, "p90": p90},
        "rejected_tokens": sum(len(r["rejected_labels"]) for r in rows),
        "rejected_minus": sum(r["rejected_labels"].count(DELETED) for r in rows),
        "edited_tokens": sum(len(r["edited_labels"]) for r in rows),
        "edited_plus": sum(r["edited_labels"].count(INSERTED) for r in rows),
        "eos_marked": sum(r["rejected_labels"][-1] == DELETED for r in rows),
    }


def print_summary(cfg: LabelConfig, summary: dict, stats: ReadStats, rows: list[dict], tokenizer: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    q = summary["edit_ratio"]
    table = Table(title=f"fgalign label → {cfg.out}  (label mode={cfg.label_mode}, mark_omissions={cfg.mark_omissions})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("records read", str(stats.read))
    table.add_row("pairs labelled", str(summary["pairs"]))
    table.add_row("skipped: no edit", str(stats.skipped_missing_edit))
    table.add_row("skipped: edit == rejected", str(stats.skipped_noop_edits))
    table.add_row("edit ratio p10 / p50 / p90", f"{q['p10']:.3f} / {q['p50']:.3f} / {q['p90']:.3f}")
    table.add_row("−1 tokens on rejected", f"{summary['rejected_minus']} / {summary['rejected_tokens']}")
    table.add_row("+1 tokens on edited", f"{summary['edited_plus']} / {summary['edited_tokens']}")
    table.add_row("EOS marked (omission at the end)", str(summary["eos_marked"]))
    console = Console()
    console.print(table)
    for r in rows[:cfg.examples]:
        console.print("[bold]rejected[/]", escape(marked_text(tokenizer, r["rejected_ids"], r["rejected_labels"])))
        console.print("[bold]edited  [/]", escape(marked_text(tokenizer, r["edited_ids"], r["edited_labels"])))


def run(cfg: LabelConfig) -> dict:
    """Label every edit pair, write LABELS JSONL + its config atomically, print a summary; return it."""
    check_output(cfg.out, "label", cfg.overwrite, "file")
    tokenizer = load_any_tokenizer(cfg.tokenizer)
    stats = ReadStats()
    records = read_records(cfg.data, require_edited=True, stats=stats)
    if not records:
        raise InputError(f"no record has an edit that differs from its rejected response "
                         f"({stats.skipped_missing_edit} without 'edited', {stats.skipped_noop_edits} no-op)",
                         path=cfg.data, field="edited")
    rows = []
    for n, record in enumerate(records, start=1):
        try:
            text = render_text(record, tokenizer)
        except InputError as e:
            raise InputError(f"edit pair {n}: {e.reason}", path=cfg.data, field=e.field) from None
        labels = label_pair(tokenizer, text.prompt, text.rejected, text.edited, cfg.label_mode, cfg.mark_omissions)
        rows.append({**record.to_dict(), **labels})
    # Everything is checked before anything is written: bad input leaves no output behind.
    summary = summarize(rows)
    write_jsonl(cfg.out, rows)
    save_run_config(cfg.out, cfg, "label", extra={"summary": summary, "skipped": vars(stats)})
    print_summary(cfg, summary, stats, rows, tokenizer)
    return summary
