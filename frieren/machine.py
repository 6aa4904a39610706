"""What machine a measurement ran on, for benchmark and evaluation reports.

Timings of the same code differ several-fold between the 2-core CPUs this project runs on (a CAVP
step of the recipe averaged 0.34 s inside one machine's training run; `benchmarks/cavp_step_speed.py`
timed the same step at 1013 ms on an AVX2-only one), so every report that holds a time also says
which CPU and which vector instructions torch used.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Dict, Optional

import torch


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[str]:
    """The CPU's model name as the kernel reports it (None where there is no /proc/cpuinfo)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        return None
    return platform.processor() or None


def machine_description() -> Dict[str, object]:
    """{torch, python, machine, cpu, cpu_count, torch_cpu_capability[, cuda_device]}: enough to
    tell whether two reports' timings are comparable."""
    out: Dict[str, object] = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu": cpu_model_name(), "cpu_count": os.cpu_count(),
        # The widest vector instructions torch's CPU kernels use here (AVX2, AVX512, ...).
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(0)
    return out
