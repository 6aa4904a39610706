"""Atomic writes for training outputs: a reader (a resumed run, a DDP rank, ``bundle``) sees the old
file or the new one, never a truncated one, even when the writer is killed mid-write."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

__all__ = ["atomic_torch_save", "write_json_atomic"]


def atomic_torch_save(obj, path: os.PathLike) -> None:
    """``torch.save(obj)`` to ``<path>.tmp``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json_atomic(path: os.PathLike, doc, indent: Optional[int] = None) -> None:
    """Write ``doc`` as JSON through a temporary file named per process (two DDP ranks never share it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=indent))
    os.replace(tmp, path)
