"""Tasks: worlds with a gold judge and an oracle editor (the default list world, a VADER sentiment world)."""
from fgalign.tasks.base import Task, load_task

__all__ = ["Task", "load_task"]
