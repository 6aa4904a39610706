"""The synthetic world's audible onsets of cached training clips (``--presence-slots``).

A clip cache keeps frames, mel and per-frame struck material; the slot presence head and its
``truth`` training channel need *when* each onset starts (impacts and continuous starts, the
onsets ``frieren eval`` scores). A synthetic clip is deterministic per seed, so its events are
simulated again from the seed in its key (``synth_<seed>``) and kept, per key, in one JSON file
beside the cache (``onsets.json``), so a resumed run reads them instead.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Dict, List, Sequence

from frieren.training.atomic_io import write_json_atomic

log = logging.getLogger("frieren.train")

KEY = re.compile(r"^synth_(\d+)$")

__all__ = ["synthetic_onsets"]


def _seed(key: str) -> int:
    m = KEY.match(key)
    if m is None:
        raise SystemExit(f"clip {key!r} is not a synthetic clip: the slot presence head (--presence-slots > 1) "
                         f"learns from the synthetic world's onsets; train on --synthetic data, or use "
                         f"--presence-slots 1")
    return int(m.group(1))


def _clip_onsets(seed: int, seconds: float, sample_rate: int) -> List[int]:
    from frieren.eval.table import ONSET_KINDS
    from frieren.synth import SceneConfig, render_clip

    clip = render_clip(seed, SceneConfig(duration_s=seconds, sample_rate=sample_rate))
    return sorted(int(e.sample) for e in clip.events if e.kind in ONSET_KINDS)


def synthetic_onsets(keys: Sequence[str], seconds: float, sample_rate: int, record: Path, *, workers: int = 1,
                     progress: bool = True) -> Dict[str, List[int]]:
    """Per clip key the sample indices of its onsets (impacts and continuous starts, unmerged),
    read from ``record`` or simulated again from the key's seed (``workers`` processes)."""
    from tqdm import tqdm

    setting = {"seconds": float(seconds), "sample_rate": int(sample_rate)}
    kept: Dict[str, List[int]] = {}
    if record.is_file():
        doc = json.loads(record.read_text())
        if doc.get("setting") == setting:
            kept = {k: list(v) for k, v in doc["onsets"].items()}
    todo = [k for k in keys if k not in kept]
    seeds = [_seed(k) for k in todo]
    if todo:
        log.info("simulating the onsets of %d synthetic clips again from their seeds", len(todo))
        bar = tqdm(total=len(todo), desc="clip onsets", unit="clip", disable=not progress)
        if workers > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
                for key, onsets in zip(todo, pool.map(_clip_onsets, seeds, [seconds] * len(seeds),
                                                      [sample_rate] * len(seeds), chunksize=8)):
                    kept[key] = onsets
                    bar.update(1)
        else:
            for key, seed in zip(todo, seeds):
                kept[key] = _clip_onsets(seed, seconds, sample_rate)
                bar.update(1)
        bar.close()
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, {"setting": setting, "onsets": kept})
    return {k: kept[k] for k in keys}
