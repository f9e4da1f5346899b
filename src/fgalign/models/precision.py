"""Which precision pays on this machine: bf16 is fast where the hardware has it and slow where it is emulated.

Measured on this project's 2-core machines (DESIGN §5): with `avx512_bf16` in /proc/cpuinfo, bf16 autocast ran
~2.4x faster than fp32; without it bf16 is emulated and an RM step ran 7.4x slower. So bf16 is offered for
RM training and scoring, and refused with a clear line where it would only be slow, never chosen silently.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from fgalign.errors import InputError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions for bf16 dot products (Zen 4, Sapphire Rapids)


@lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU lists a bf16 instruction set (Linux x86; aarch64 `bf16` too)."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in (*CPU_BF16_FLAGS, "bf16"))


def native_bf16(device: str | torch.device) -> bool:
    """bf16 runs natively on `device`: a CUDA GPU that supports it, or a CPU with bf16 instructions."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def check_bf16(requested: bool, device: str | torch.device, option: str = "--bf16") -> None:
    """Refuse bf16 where it would be emulated (7x slower on our CPUs) rather than run it silently slow."""
    if requested and not native_bf16(device):
        raise InputError(f"this {torch.device(device).type.upper()} has no native bf16 (no {' / '.join(CPU_BF16_FLAGS)} "
                         "in /proc/cpuinfo): bf16 would be emulated and several times slower than fp32; leave "
                         f"{option} off", field=option)
