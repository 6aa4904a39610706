"""Sync and seam measurements: the pure functions live in :mod:`frieren.eval.sync`
(``frieren`` never imports ``stream``); re-exported here for the stream side."""
from frieren.eval.sync import (TOLERANCES_MS, SyncScore, assemble, detect_onsets, match, seam_ratio,
                               spectral_flux, sync_scores)

__all__ = ["TOLERANCES_MS", "SyncScore", "assemble", "detect_onsets", "match", "seam_ratio",
           "spectral_flux", "sync_scores"]
