"""Mixed precision for training: which parts train their matrix products in bfloat16.

``--bf16 cavp,detector,cfm,pairs,reflow,distill`` (any subset of :data:`BF16_PARTS`) runs the forward
pass of those parts under ``torch.autocast(dtype=torch.bfloat16)``: convolutions and linear layers
compute in bfloat16 while the weights, the optimiser state and the losses stay float32 (the usual
mixed-precision recipe; no loss scaling is needed, bfloat16 has float32's exponent range). On a CPU
with AVX512_BF16 (or AMX) oneDNN's bfloat16 kernels make the CAVP's 3-D convolutions markedly cheaper
(``benchmarks/cavp_step_speed.py --precisions fp32,bf16``); on a CPU without them bfloat16 is emulated
and many times slower, so :func:`check_bf16` refuses. The weights differ from a float32 run's (another recipe), and,
as with every kernel choice, a rerun on the same kind of CPU gives the same bits.

The VAE is not among the parts: its reconstruction is what every later stage and the audio stand on,
and it trains beside the CAVP, off the recipe's critical path.
"""
from __future__ import annotations

import contextlib
import logging
from typing import FrozenSet, Iterable

import torch

log = logging.getLogger(__name__)

__all__ = ["BF16_PARTS", "parse_bf16_parts", "autocast", "check_bf16", "cpu_has_bf16"]

BF16_PARTS = ("cavp", "detector", "cfm", "pairs", "reflow", "distill")


def parse_bf16_parts(text: str | Iterable[str] | None) -> FrozenSet[str]:
    """``"cavp,detector"`` (or a list of names, or None/"") -> frozenset of part names; an unknown
    name raises ValueError naming the accepted ones."""
    if text is None:
        return frozenset()
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    unknown = sorted(set(names) - set(BF16_PARTS))
    if unknown:
        raise ValueError(f"--bf16: unknown part(s) {', '.join(unknown)}; choose from {', '.join(BF16_PARTS)} "
                         "(comma-separated)")
    return frozenset(names)


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    """A bfloat16 autocast context on ``device``'s type when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


def cpu_has_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512_BF16, AVX512 core or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_bf16(parts: FrozenSet[str], device: torch.device | str = "cpu") -> None:
    """Log which parts train in bfloat16; refuse (SystemExit) on a CPU that would emulate it: there
    oneDNN's bfloat16 convolutions are about 25x slower than float32 (``benchmarks/cavp_step_speed.py
    --precisions fp32,bf16`` with ``ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 CPU)."""
    if not parts:
        return
    if torch.device(device).type == "cpu" and not cpu_has_bf16():
        raise SystemExit("--bf16: this CPU (or ONEDNN_MAX_CPU_ISA) gives oneDNN no native bfloat16 kernels "
                         "(AVX512_BF16 or AMX); emulated, a CAVP step would be about 25x slower than in float32. "
                         "Drop --bf16 to train in float32 (other weights), or run on a CPU that has them")
    log.info("bfloat16 autocast for: %s", ", ".join(p for p in BF16_PARTS if p in parts))
