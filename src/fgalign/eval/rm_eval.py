"""`fgalign eval-rm`: how good is a reward model — pair accuracy, and for token RMs where its rewards sit.

Pair accuracy alone misleads (DESIGN §6: the paper's mean-bt RM won on accuracy and lost in PPO), so a
token RM is also judged on its token rewards against the edit labels:
- AUC of r_t, +1 (inserted) tokens vs -1 (deleted/replaced) tokens;
- AUC inside rejected responses, kept (0) tokens vs -1 tokens: does it point at the mistake?
- mean/std of r_t per label; the 0-label mean is the per-token length offset the policy would farm;
- correlation between a response's summed token reward and its length.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from fgalign.data import read_records
from fgalign.data.outputs import check_output
from fgalign.data.records import PreferenceRecord, render_text, response_text
from fgalign.errors import InputError
from fgalign.labels.project import label_pair
from fgalign.models.reward import load_reward_model
from fgalign.runinfo import progress_bar, save_run_config, write_json


@dataclass
class EvalRMConfig:
    """Evaluate a reward model on preference/edit records."""

    rm: str
    """Reward model directory (from `fgalign train-rm`)."""
    data: str
    """Records with prompt, chosen, rejected and (for the edit metrics) edited."""
    out: str = ""
    """JSON with the metrics (default: RM_DIR/eval_<data file stem>.json)."""
    label_mode: Optional[Literal["tokens", "chars"]] = None
    """How to align token labels (default: what the RM was trained with)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, cuda:1, ..."""
    rm_bf16: bool = False
    """Score under bf16 autocast (only where the device has native bf16; README: its deviation from fp32)."""
    micro_batch: int = 32
    """Responses per forward pass."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign eval-rm` (anything else is never replaced)."""


def pair_accuracy(better: np.ndarray, worse: np.ndarray) -> float:
    """Fraction of pairs scored better > worse, ties counting one half."""
    return float(np.mean((better > worse) + 0.5 * (better == worse))) if len(better) else float("nan")


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC of telling `positive` values (should be higher) from `negative` ones (nan if a side is empty)."""
    from sklearn.metrics import roc_auc_score

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[positive, negative]))


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std()) if len(v) else float("nan"),
            "n": int(len(v))}


def fitting_records(records: list[PreferenceRecord], rm) -> tuple[list[PreferenceRecord], int]:
    """The records whose every response fits the RM's positions with the prompt; the others are counted."""
    kept = []
    for r in records:
        prompt = rm.encode_prompt(r.prompt)
        sides = [r.chosen, r.rejected] + ([r.edited] if r.edited is not None else [])
        if all(rm.fits(prompt, rm.encode_response(response_text(s))) for s in sides):
            kept.append(r)
    if not kept:
        raise InputError(f"every record is longer than the reward model's {rm.max_length} positions (prompt + "
                         "response)", field="data")
    if len(kept) < len(records):
        print(f"eval-rm: warning: skipped {len(records) - len(kept)} of {len(records)} records longer than the "
              f"reward model's {rm.max_length} positions")
    return kept, len(records) - len(kept)


def evaluate_rm(rm, records: Sequence[PreferenceRecord], label_mode: str | None = None,
                micro_batch: int = 32, show_progress: bool = False) -> dict:
    """All metrics of `rm` (a loaded RewardModel) on `records`, as a JSON-ready dict."""
    records, too_long = fitting_records([render_text(r, rm.tokenizer) for r in records], rm)
    edits = [r for r in records if r.edited is not None and response_text(r.edited) != response_text(r.rejected)]
    bar = (progress_bar("eval-rm", 2 * len(records) + 2 * len(edits)) if show_progress
           else contextlib.nullcontext(None))
    with bar as advance:
        return _evaluate(rm, records, edits, too_long, label_mode, micro_batch, advance)


def _evaluate(rm, records, edits, too_long: int, label_mode: str | None, micro_batch: int, advance) -> dict:
    prompts = [r.prompt for r in records]
    chosen = rm.score_texts(prompts, [response_text(r.chosen) for r in records], micro_batch, advance)
    rejected = rm.score_texts(prompts, [response_text(r.rejected) for r in records], micro_batch, advance)
    out = {"level": rm.level, "loss": rm.info.loss, "anchor": rm.info.anchor, "n_records": len(records),
           "n_skipped_too_long": too_long,
           "pair_accuracy": pair_accuracy(chosen.sequence_score.numpy(), rejected.sequence_score.numpy())}

    out["n_edit_pairs"] = len(edits)
    if not edits:
        return out
    mode = label_mode or rm.info.label_mode
    labelled = [label_pair(rm.tokenizer, r.prompt, response_text(r.rejected), response_text(r.edited), mode=mode)
                for r in edits]
    prompt_ids = [rm.encode_prompt(r.prompt) for r in edits]
    original = rm.score_ids(prompt_ids, [x["rejected_ids"] for x in labelled], micro_batch, advance)
    edited = rm.score_ids(prompt_ids, [x["edited_ids"] for x in labelled], micro_batch, advance)
    out["edit_accuracy"] = pair_accuracy(edited.sequence_score.numpy(), original.sequence_score.numpy())
    if rm.level != "token":
        return out

    by_label: dict[int, list[float]] = {-1: [], 0: [], 1: []}
    kept_in_rejected, deleted_in_rejected = [], []
    totals, lengths = [], []
    for b, x in enumerate(labelled):
        for side, ids, labels in ((original, x["rejected_ids"], x["rejected_labels"]),
                                  (edited, x["edited_ids"], x["edited_labels"])):
            r = side.token_rewards[b, : len(ids)].tolist()
            for value, label in zip(r, labels):
                by_label[label].append(value)
            totals.append(sum(r))
            lengths.append(len(ids))
        r_orig = original.token_rewards[b, : len(x["rejected_ids"])].tolist()
        kept_in_rejected += [v for v, lab in zip(r_orig, x["rejected_labels"]) if lab == 0]
        deleted_in_rejected += [v for v, lab in zip(r_orig, x["rejected_labels"]) if lab == -1]
    edited_abs = np.abs(np.r_[by_label[-1], by_label[1]])
    out.update({
        "auc_inserted_vs_deleted": auc(by_label[1], by_label[-1]),
        "auc_kept_vs_deleted_in_rejected": auc(kept_in_rejected, deleted_in_rejected),
        "reward_by_label": {str(k): _stats(v) for k, v in by_label.items()},
        "kept_mean_over_edited_abs_mean": float(np.mean(by_label[0]) / edited_abs.mean()) if len(edited_abs) else float("nan"),
        "corr_total_reward_length": float(np.corrcoef(totals, lengths)[0, 1]) if np.std(lengths) > 0 else float("nan"),
    })
    return out


def print_table(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key == "reward_by_label":
            for label, s in value.items():
                table.add_row(f"r_t on label {int(label):+d} tokens", f"{s['mean']:+.3f} ± {s['std']:.3f} (n={s['n']})")
        elif isinstance(value, float):
            table.add_row(key, f"{value:.3f}")
        else:
            table.add_row(key, str(value))
    Console().print(table)


def run(cfg: EvalRMConfig) -> dict:
    out = Path(cfg.out) if cfg.out else Path(cfg.rm) / f"eval_{Path(cfg.data).stem}.json"
    check_output(out, "eval-rm", cfg.overwrite, "file")
    if cfg.micro_batch < 1:
        raise InputError(f"expected an integer >= 1, got {cfg.micro_batch}", field="--micro-batch")
    records = read_records(cfg.data)
    rm = load_reward_model(cfg.rm, cfg.device, bf16=cfg.rm_bf16)
    metrics = evaluate_rm(rm, records, cfg.label_mode, cfg.micro_batch, show_progress=True)
    metrics["data"] = cfg.data
    write_json(out, metrics)
    save_run_config(out, cfg, "eval-rm")
    print_table(metrics, f"{cfg.rm} on {cfg.data}")
    print(f"eval-rm: metrics -> {out}")
    return metrics
