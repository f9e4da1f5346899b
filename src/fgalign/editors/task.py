"""The task's oracle as the minimal editor (the default world's stand-in for the paper's annotator)."""
from __future__ import annotations

from fgalign.tasks.base import Task


class TaskEditor:
    """Wraps a Task: the edit is `task.minimal_edit(prompt, rejected)`; the chosen response is not needed."""

    def __init__(self, task: Task):
        self.task = task
        self.name = f"task:{task.name}"

    def edit(self, prompt: str, rejected: str, chosen: str | None = None) -> str:
        return self.task.minimal_edit(prompt, rejected)
