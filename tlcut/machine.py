"""What the CPU is, for results files and profiles: int8 speed and accuracy hang on it."""

from __future__ import annotations

import platform


def _cpuinfo(key: str) -> str | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name, for the machine line of every results file."""
    return _cpuinfo("model name") or platform.processor() or "?"


def has_vnni() -> bool | None:
    """Whether the CPU sums int8 products in 32 bits (VNNI): without it int8 kernels gain less, and
    8-bit weights saturate (calibrate/int8.py). None where /proc/cpuinfo cannot say."""
    flags = _cpuinfo("flags")
    return None if flags is None else bool(set(flags.split()) & {"avx512_vnni", "avx_vnni"})
