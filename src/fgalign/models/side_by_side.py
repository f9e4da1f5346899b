"""Policy and value minibatch steps side by side: two threads, each with half of torch's CPU threads.

Why: the policy and the value model share no parameter, so their forward + backward passes are independent
work. The tiny models' matrices are too small for two intra-op threads to help much, and when another job
holds a core, OpenMP's 2-thread barriers stall (measured on a loaded 2-core machine: one PPO update of the
benchmark took 10-45 s serially on 2 threads, 1.8-2.5 s side by side on 1 thread each). The gradients are the
same tensors as from one backward of the summed loss (each model's graph is its own); the test suite compares
the parameters after an update in both modes.

Used only where it is safe and can help: torch has >= 2 CPU threads, one process (no DDP reducer shared by two
threads), every parameter on the CPU, and no active dropout (two threads would draw from the global RNG in a
racy order, and a run would no longer repeat). `make_experience` scores π_old and π_ref beside V the same way
(no gradients, eval mode).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, TypeVar

import torch

A = TypeVar("A")
B = TypeVar("B")
_POOL: list[ThreadPoolExecutor] = []


def can_run_side_by_side(models, accelerator=None, uses_rng: bool = True) -> bool:
    """True when `run_side_by_side` may use two threads for these models (see the module's note).

    `uses_rng=False`: the work draws no random numbers whatever the modules (eval-mode forwards), so active
    dropout modules do not matter."""
    if torch.get_num_threads() < 2:
        return False
    if accelerator is not None and accelerator.num_processes > 1:
        return False
    if any(p.device.type != "cpu" for m in models for p in m.parameters()):
        return False
    return not uses_rng or not any(isinstance(mod, torch.nn.Dropout) and mod.p > 0 for m in models for mod in m.modules())


def run_side_by_side(first: Callable[[], A], second: Callable[[], B], parallel: bool) -> tuple[A, B]:
    """(first(), second()): in this thread and a helper thread when `parallel`, else one after the other.

    Each thread gets half of torch's threads (first: the rest of an odd count); the count is restored after.
    An exception in either is raised here, after both have finished.
    """
    if not parallel:
        return first(), second()
    threads = torch.get_num_threads()
    half = max(1, threads // 2)

    def on_helper():
        torch.set_num_threads(half)  # per-thread OpenMP setting: set in the helper thread itself
        return second()

    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="fgalign-value"))
    future = _POOL[0].submit(on_helper)
    torch.set_num_threads(max(1, threads - half))
    try:
        result = first()
    finally:
        wait([future])
        torch.set_num_threads(threads)
    return result, future.result()
