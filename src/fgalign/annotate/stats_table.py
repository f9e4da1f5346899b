"""`fgalign annotate stats` as tables (rich): progress, agreement, annotators, least-agreed pairs."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def print_stats(r: dict, unit: str, console: Console | None = None) -> None:
    console = console or Console()
    ag = r["agreement"]
    progress = Table(title="progress", show_header=False)
    progress.add_column("what")
    progress.add_column("count", justify="right")
    for what, value in [("pairs", r["items"]), ("overlap", r["overlap"]),
                        ("submissions", f"{r['submissions']} of {r['needed']}"),
                        ("pairs complete", r["items_complete"]), ("pairs started", r["items_started"]),
                        *[(f"verdict: {k}", v) for k, v in sorted(r["verdicts"].items())],
                        ("revisions (resubmissions)", r["revisions"]), ("skipped for now", r["skipped_for_now"]),
                        ("flagged", r["flagged"]), ("with a comment", r["commented"])]:
        progress.add_row(what, str(value))
    console.print(progress)

    agreement = Table(title=f"agreement (on the {unit} labels of the response being edited)", show_header=False)
    agreement.add_column("measure")
    agreement.add_column("value", justify="right")
    for what, value in [("annotator pairs compared", ag["annotator_pairs"]),
                        (f"{unit} labels compared", ag["labels_compared"]),
                        ("Cohen's kappa, pooled over labels", _fmt(ag["kappa"])),
                        ("agreement per item (mean over pairs, then items)", _fmt(ag["item_agreement"])),
                        ("items compared", ag["items_compared"]),
                        ("items with different edits", ag["items_with_different_edits"]),
                        ("identical edits (share of pairs)", _fmt(ag["identical_share"]))]:
        agreement.add_row(what, str(value))
    console.print(agreement)

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
                   key=lambda p: (p["agreement"], p["identical_share"]))
    if split:
        worst = Table(title=f"{len(split)} pairs with different edits, least agreement first (--json lists all)")
        for col in ("pair", "agreement", "kappa", "same edit", "annotators"):
            worst.add_column(col, justify="left" if col in ("pair", "annotators") else "right")
        for p in split[:10]:
            worst.add_row(p["source"], _fmt(p["agreement"]), _fmt(p["kappa"]), f"{p['identical_share']:.2f}",
                          ", ".join(p["annotators"]))
        console.print(worst)
