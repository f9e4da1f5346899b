"""Per-iteration metrics: a JSONL log, TensorBoard scalars and one rich line on the console."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

LOG_FILE = "ppo_log.jsonl"
SHOWN = [("rm_score", "rm"), ("task_score", "task"), ("kl_k1", "kl"), ("beta", "β"), ("entropy", "H"),
         ("clipfrac", "clip"), ("explained_variance", "ev"), ("response_length", "len"),
         ("truncation_rate", "trunc")]


class MetricsLog:
    """Append-only JSONL; on resume, records from iterations the checkpoint does not include are dropped."""

    def __init__(self, out: Path, resume_from: int | None = None, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / LOG_FILE
        self.writer = None
        self.started, self.first_step = time.monotonic(), (resume_from or 0)  # for the ETA
        if not enabled:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        kept = []
        if resume_from is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("iteration", 0) <= resume_from]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:  # TensorBoard is optional for the JSONL log and console line
            self.writer = None

    def log(self, record: dict, total_iterations: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        step = record["iteration"]
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self.writer.add_scalar(k.replace("eval_", "eval/"), v, step)
            self.writer.flush()
        shown = " ".join(f"{label} [cyan]{record[k]:.3g}[/]" for k, label in SHOWN if k in record)
        secs = "/".join(f"{record.get(k, 0):.1f}" for k in ("time_generate", "time_score", "time_train"))
        per_step = (time.monotonic() - self.started) / max(step - self.first_step, 1)
        eta = _duration(per_step * (total_iterations - step))
        self.console.print(f"[bold]ppo {step}/{total_iterations}[/] {shown} [dim]gen/score/train {secs}s[/] "
                           f"eta [bold]{eta}[/]")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
