"""Time-aligned initial noise ("noise tape", DESIGN §3.3).

The noise for absolute latent frame k is the same in every window that contains
k: the tape is cut into blocks of ``block`` latent frames, and block b is drawn
from a generator seeded with (seed, b). Overlapping windows therefore start from
the same x0 where they overlap, and one-step generation makes them largely agree.
"""
from __future__ import annotations

from typing import Dict

import torch


class NoiseTape:
    """Deterministic Gaussian noise indexed by absolute latent frame.

    ``window(k0, length) -> (channels, length)`` float32 on the CPU. A small LRU of
    blocks keeps the per-tick cost to one or two ``randn`` calls.
    """

    def __init__(self, seed: int, channels: int, block: int = 64, cache_blocks: int = 64) -> None:
        if channels <= 0 or block <= 0:
            raise ValueError(f"NoiseTape needs channels > 0 and block > 0, got {channels}, {block}")
        self.seed = int(seed)
        self.channels = int(channels)
        self.block = int(block)
        self._cache: Dict[int, torch.Tensor] = {}
        self._cache_blocks = cache_blocks

    def _block(self, b: int) -> torch.Tensor:
        cached = self._cache.get(b)
        if cached is None:
            # Mix seed and block index into one 63-bit seed; negative blocks allowed.
            mixed = (self.seed * 0x9E3779B97F4A7C15 + (b + (1 << 40)) * 0xBF58476D1CE4E5B9) % (1 << 63)
            gen = torch.Generator().manual_seed(mixed)
            cached = torch.randn(self.channels, self.block, generator=gen)
            if len(self._cache) >= self._cache_blocks:
                self._cache.pop(next(iter(self._cache)))
            self._cache[b] = cached
        return cached

    def window(self, start: int, length: int) -> torch.Tensor:
        """Noise for latent frames [start, start + length): (channels, length)."""
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        first, last = start // self.block, (start + length - 1) // self.block
        pieces = [self._block(b) for b in range(first, last + 1)]
        tape = torch.cat(pieces, dim=1)
        offset = start - first * self.block
        return tape[:, offset:offset + length]

    def batch(self, starts, length: int) -> torch.Tensor:
        """Stacked windows for several starts: (len(starts), channels, length)."""
        return torch.stack([self.window(s, length) for s in starts])
