"""The Task protocol: what a world must offer to drive the whole pipeline, and loading by name or path."""
from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from fgalign.errors import InputError


@runtime_checkable
class Task(Protocol):
    """A world with a gold judge and an oracle minimal editor.

    Optional extras, looked up with getattr:
      `tokenizer(out_dir) -> str`: build/save a HF tokenizer directory and return its path;
      `diagnose(prompt, response) -> dict[str, int]`: counts of named kinds of mistakes.
    """

    name: str

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        """`n` prompts of split "train", "valid" or "test"; the splits never share a prompt."""

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """(prompt, response) pairs from the task's noisy demonstrator, for supervised fine-tuning."""

    def score(self, prompt: str, response: str) -> float:
        """The gold judge: higher is better."""

    def minimal_edit(self, prompt: str, response: str) -> str:
        """The oracle annotator: `response` with only its wrong spans fixed (identical when nothing is wrong)."""


BUILTIN_TASKS = {
    "default": "fgalign.tasks.lists:ListWorld",
    "lists": "fgalign.tasks.lists:ListWorld",
    "long-lists": "fgalign.tasks.lists:LongListWorld",
    "sentiment": "fgalign.tasks.sentiment:SentimentWorld",
}


def load_task(spec: str, **kwargs) -> Task:
    """Load a task by built-in name (`default`, `sentiment`) or import path `package.module:ClassName`."""
    target = BUILTIN_TASKS.get(spec, spec)
    if ":" not in target:
        raise InputError(f"unknown task '{spec}': expected one of {sorted(BUILTIN_TASKS)} "
                         "or an import path 'package.module:ClassName'", field="--task")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import task module '{module_name}': {e}", field="--task") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise InputError(f"module '{module_name}' has no attribute '{attr}'", field="--task")
    task = cls(**kwargs) if isinstance(cls, type) else cls
    missing = [m for m in ("prompts", "sft_examples", "score", "minimal_edit") if not callable(getattr(task, m, None))]
    if missing:
        raise InputError(f"task '{spec}' lacks required method(s) {missing} (see fgalign.tasks.base.Task)",
                         field="--task")
    if not getattr(task, "name", None):
        task.name = spec
    return task
