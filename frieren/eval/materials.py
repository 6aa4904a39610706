"""Material accuracy: a small classifier trained on ground-truth audio of synthetic clips.

Samples: impact events of the synthetic world (``kind == 'impact'``; the label is the
sounding ``material``). Impacts that are ambiguous for a listener are dropped: another
event starting within ``isolation_s`` before or after (a different sound overlapping the
window), or ``strength`` below ``min_strength`` (barely audible).

Features (log10 mel of the waveform, the model's MelFrontend, hop 16 ms), around the
event's mel frame k = sample // hop:

* attack: mean of each mel bin over frames [k, k + 8)      (0-128 ms)
* decay:  mean over frames [k + 8, k + 16)                  (128-256 ms)
* background: mean over frames [k - 6, k - 1)               (the 80 ms before)
* attack - background and decay - attack (the ring-out)

Classifier: a softmax regression on standardised features (one linear layer, weight
decay), trained full-batch with Adam; a deterministic function of its training seeds.
It is trained on ground-truth audio only; `frieren eval` reports its accuracy on the
ground truth of the held-out clips (the ceiling) and on the generated audio at the same
ground-truth impact instants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["impact_samples", "impact_features", "MaterialClassifier"]

ATTACK, DECAY, PRE = 8, 8, 6


def impact_samples(events, materials: Sequence[str], *, isolation_s: float = 0.06, min_strength: float = 0.1,
                   sample_rate: int = 16000) -> List[Tuple[int, str]]:
    """(sample, material) of the unambiguous impacts among ``events`` (synth Events, time order)."""
    ev = sorted(events, key=lambda e: e.sample)
    gap = int(isolation_s * sample_rate)
    out = []
    for i, e in enumerate(ev):
        if e.kind != "impact" or e.material not in materials or e.strength < min_strength:
            continue
        if any(o is not e and abs(o.sample - e.sample) < gap for o in ev[max(0, i - 8):i + 8]):
            continue
        out.append((int(e.sample), e.material))
    return out


def impact_features(mel: torch.Tensor, samples: Sequence[int], hop: int) -> np.ndarray:
    """log10 mel (n_mels, T) and event sample indices -> features (len(samples), 4 * n_mels)."""
    m = mel.numpy() if isinstance(mel, torch.Tensor) else np.asarray(mel)
    n_mels, T = m.shape
    padded = np.pad(m, ((0, 0), (PRE, ATTACK + DECAY)), mode="edge")
    rows = []
    for s in samples:
        k = min(max(int(s) // hop, 0), T - 1) + PRE
        attack = padded[:, k:k + ATTACK].mean(1)
        decay = padded[:, k + ATTACK:k + ATTACK + DECAY].mean(1)
        pre = padded[:, k - PRE:k - 1].mean(1)
        rows.append(np.concatenate([attack, decay, attack - pre, decay - attack]))
    return np.asarray(rows, np.float32).reshape(len(rows), 4 * n_mels)


@dataclass
class MaterialClassifier:
    classes: Tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray   # (D, C)
    bias: np.ndarray     # (C,)

    @classmethod
    def fit(cls, features: np.ndarray, labels: Sequence[str], classes: Sequence[str], *, steps: int = 400,
            lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> "MaterialClassifier":
        classes = tuple(classes)
        x = np.asarray(features, np.float32)
        y = np.asarray([classes.index(label) for label in labels], np.int64)
        if len(x) == 0:
            raise ValueError("no training samples for the material classifier")
        mean, std = x.mean(0), x.std(0) + 1e-3
        g = torch.Generator().manual_seed(seed)
        xt = torch.from_numpy((x - mean) / std)
        yt = torch.from_numpy(y)
        lin = torch.nn.Linear(x.shape[1], len(classes))
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.01)
            lin.bias.zero_()
        opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(xt), yt)
            loss.backward()
            opt.step()
        return cls(classes, mean, std, lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy())

    def predict(self, features: np.ndarray) -> List[str]:
        x = (np.asarray(features, np.float32) - self.mean) / self.std
        return [self.classes[i] for i in np.argmax(x @ self.weight + self.bias, axis=1)]

    def accuracy(self, features: np.ndarray, labels: Sequence[str]) -> float:
        if len(labels) == 0:
            return float("nan")
        return float(np.mean([p == t for p, t in zip(self.predict(features), labels)]))

    def confusion(self, features: np.ndarray, labels: Sequence[str]) -> Dict[str, Dict[str, int]]:
        """{true material: {predicted material: count}} over the given impacts (every class
        listed, zeros included), to see *how* material is wrong, e.g. one class for all."""
        table = {t: {p: 0 for p in self.classes} for t in self.classes}
        for p, t in zip(self.predict(features), labels):
            table[t][p] += 1
        return table

    def as_dict(self) -> Dict[str, object]:
        return {"classes": list(self.classes), "features": int(self.weight.shape[0])}
