"""Choosing where tensors live: CUDA, Apple MPS or the CPU, and how many CPU threads to use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical cores available to this process; hyper-threads slow matmul-bound work down."""
    logical = available_cpus()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(logical, physical))


_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16_matmul(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX); without them PyTorch emulates
    bf16 and runs slower than fp32. False where that cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return not _BF16_CPU_FLAGS.isdisjoint(flags)


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda", "mps" or "cpu"
    name: str
    threads: int

    @property
    def torch_device(self) -> str:
        return self.kind

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"CPU: {self.name} ({self.threads} threads)"
        return f"{self.kind.upper()}: {self.name}"


def detect_device(force_cpu: bool = False) -> Device:
    """Pick the best available accelerator unless ``force_cpu``; set torch's CPU thread count."""
    import torch

    threads = physical_cores()
    torch.set_num_threads(threads)
    if not force_cpu and torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), threads)
    mps = getattr(torch.backends, "mps", None)
    if not force_cpu and mps is not None and mps.is_available():
        return Device("mps", "Apple GPU", threads)
    import platform

    return Device("cpu", platform.processor() or platform.machine(), threads)
