"""The machine a benchmark ran on, as its raw files name it.

Timings differ between hosts, and float results between CPU generations (``RESULTS.md`` reports
two hosts), so every raw file names the processor, not just ``x86_64``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_name() -> str:
    """The processor's model and family from ``/proc/cpuinfo`` and the cores this process may use,
    e.g. ``"CPU AMD EPYC (family 26), 2 cores"``; ``platform``'s name where there is no cpuinfo."""
    fields: dict[str, str] = {}
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():  # the first processor's block is enough
                break
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    family = f" (family {fields['cpu family']})" if fields.get("cpu family") else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {model}{family}, {cores} cores"


def device_name(cuda: bool = True) -> str:
    """The first CUDA device's name when ``cuda`` and torch sees one, else :func:`cpu_name`."""
    import torch

    return torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else cpu_name()
