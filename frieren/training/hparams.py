"""Per-stage hyper-parameters of the training recipe: the defaults and how the CLI overrides them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict

STAGES = ("vae", "cavp", "cfm", "reflow-data", "reflow", "distill", "bundle")


@dataclass(frozen=True)
class StageHParams:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    ema: float = 0.0
    grad_clip: float = 1.0
    final_lr_factor: float = 1.0   # <1: cosine decay to lr * this (see TrainConfig)
    decay_steps: int = 0           # >0: the decay spans only the last this many steps


# Defaults sized for the tiny preset on a 2-core CPU (see scripts/train_default.sh).
DEFAULTS: Dict[str, StageHParams] = {
    # The VAE decays its LR (cosine to 0.1x): at a constant 1e-3 its loss kept jumping
    # between batches and the last step's weights are what the model ships.
    "vae": StageHParams(steps=1500, batch_size=16, lr=1e-3, warmup=100, ema=0.0, final_lr_factor=0.1),
    "cavp": StageHParams(steps=600, batch_size=16, lr=1e-3, warmup=50, ema=0.0),
    "cfm": StageHParams(steps=3000, batch_size=32, lr=1e-3, warmup=200, ema=0.999),
    "reflow": StageHParams(steps=1000, batch_size=32, lr=2e-4, warmup=50, ema=0.995),
    "distill": StageHParams(steps=1000, batch_size=32, lr=2e-4, warmup=50, ema=0.995),
}


def _or(value, default):
    return default if value is None else value


def hp_from_args(stage: str, args) -> StageHParams:
    """The hyper-parameters of a single-stage command (``--steps/--batch-size/--lr/--warmup``)."""
    d = DEFAULTS[stage]
    return dataclasses.replace(d, steps=_or(args.steps, d.steps),
                               batch_size=args.batch_size or d.batch_size, lr=args.lr or d.lr,
                               warmup=_or(args.warmup, d.warmup),
                               final_lr_factor=_or(getattr(args, "final_lr_factor", None), d.final_lr_factor),
                               decay_steps=_or(getattr(args, "decay_steps", None), d.decay_steps),
                               ema=_or(getattr(args, "ema", None), d.ema))


def current_hparams(args) -> Dict[str, StageHParams]:
    """The hyper-parameters ``default`` trains with (``--<stage>-steps/--<stage>-batch-size``)."""
    if getattr(args, "train_command", None) == "default":
        return {s: dataclasses.replace(
            d, steps=getattr(args, f"{s}_steps"), batch_size=getattr(args, f"{s}_batch_size"),
            final_lr_factor=_or(getattr(args, f"{s}_final_lr_factor", None), d.final_lr_factor),
            decay_steps=_or(getattr(args, f"{s}_decay_steps", None), d.decay_steps),
            ema=_or(getattr(args, f"{s}_ema", None), d.ema))
            for s, d in DEFAULTS.items()}
    return dict(DEFAULTS)
