"""One generic trainer for every stage (VAE, CAVP, CFM, reflow, distillation).

A stage is an *objective module* (an ``nn.Module`` whose ``forward(batch, generator)``
returns a dict of 0-dim losses with key ``"loss"`` being optimised) plus a *batch
function* ``batches(step, generator) -> batch``. The trainer owns everything else:

* AdamW (PyTorch defaults, weight decay 0.01 as the reference) over the parameters that
  require grad; LambdaLR linear warm-up from ``warmup_start``x to 1x, then constant
  (FRIEREN_SPEC §5.1);
* optional bfloat16 autocast of the forward pass (``bf16``; weights and optimiser stay float32);
* optional gradient clipping and an EMA of the whole state (parameters averaged,
  buffers copied), exported at the end when enabled;
* randomness derived from ``(seed, step, rank)``: each step builds its own generator, so a
  resumed run draws exactly the batches, noise and times an uninterrupted run would;
* ``ckpt.pt`` every ``ckpt_every`` steps and at the end (atomic rename): module, EMA,
  optimiser, scheduler, step, elapsed time. A rerun resumes from it automatically;
* ``log.jsonl`` (one JSON object per logged step: step, lr, losses, seconds) and a tqdm bar;
* ``final.pt``: the exported weights and a summary (steps, seconds, final losses), which the
  next stage loads. A finished stage is not retrained when run again.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import nn

from frieren.training.atomic_io import atomic_torch_save
from frieren.training.ddp import DistContext, all_reduce_mean, barrier, wrap
from frieren.training.precision import autocast

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "EMA", "Trainer", "step_generator", "load_final"]

CKPT_FILE = "ckpt.pt"
FINAL_FILE = "final.pt"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32
    lr: float = 5e-5
    warmup_steps: int = 1000
    warmup_start: float = 1e-6        # LR factor at step 0 (reference LambdaLR f_start)
    final_lr_factor: float = 1.0      # <1: cosine decay after warm-up down to lr * this at the last step
    decay_steps: int = 0              # >0: hold lr after warm-up, decay only over the last this many steps
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 0.0            # 0 disables
    ema_decay: float = 0.0            # 0 disables (reference: no EMA)
    ckpt_every: int = 250
    log_every: int = 10
    seed: int = 0
    max_seconds: Optional[float] = None  # safety budget: stop (and save) once exceeded
    bf16: bool = False                # forward pass under bfloat16 autocast (frieren.training.precision)


@dataclass(frozen=True)
class TrainResult:
    name: str
    steps: int
    seconds: float
    losses: Dict[str, float] = field(default_factory=dict)  # mean over the last logged window(s)


def step_generator(seed: int, step: int, rank: int = 0, salt: int = 0) -> torch.Generator:
    """The CPU generator of one training step (same numbers on every resume)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7_919 + rank * 104_729 + salt * 15_485_863) % (2 ** 63 - 1))
    return g


class EMA:
    """Exponential moving average of a module's state (floating parameters averaged,
    everything else copied). Decay ramps up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._params = {name for name, _ in module.named_parameters()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if k in self._params and v.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


def load_final(out_dir: os.PathLike) -> Optional[dict]:
    """The ``final.pt`` of a finished stage (``{'state', 'result'}``) or None."""
    path = Path(out_dir) / FINAL_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


class Trainer:
    """Trains ``objective`` with ``batches`` under ``cfg``; files go to ``out_dir``.

    ``batches(step, generator)`` returns the batch of this rank for ``step``; the objective's
    ``forward(batch, generator)`` returns ``{"loss": ..., other logged scalars}``.
    ``on_log(step, losses)`` is an optional hook (e.g. for tests).
    """

    def __init__(self, name: str, objective: nn.Module, batches: Callable[[int, torch.Generator], object],
                 out_dir: os.PathLike, cfg: TrainConfig, ctx: DistContext = DistContext(),
                 progress: bool = True) -> None:
        self.name = name
        self.cfg = cfg
        self.ctx = ctx
        self.out_dir = Path(out_dir)
        self.objective = objective.to(ctx.device)
        self.model = wrap(self.objective, ctx)
        self.batches = batches
        self.progress = progress and ctx.is_main
        params = [p for p in self.objective.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {name!r}: the objective has no trainable parameters")
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        warm = max(0, cfg.warmup_steps)
        start = cfg.warmup_start

        final, total = cfg.final_lr_factor, cfg.steps
        # The decay starts after warm-up, or, with decay_steps, that many steps before the end
        # (warm-up, hold, decay): a run can be resumed with a longer `steps` and a decay tail.
        decay_from = max(warm, total - cfg.decay_steps) if cfg.decay_steps > 0 else warm

        def factor(step: int) -> float:
            if warm and step < warm:
                return start + (1.0 - start) * step / warm
            if final >= 1.0 or total <= decay_from or step < decay_from:
                return 1.0
            progress = min(1.0, (step - decay_from) / (total - decay_from))
            return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.ema = EMA(self.objective, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step = 0
        self.elapsed = 0.0

    # -- checkpoints --------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / CKPT_FILE

    def save_checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({
            "name": self.name, "step": self.step, "elapsed": self.elapsed,
            "model": self.objective.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "config": asdict(self.cfg),
        }, self.ckpt_path)

    def try_resume(self) -> bool:
        """Load ``ckpt.pt`` if present; returns whether a checkpoint was restored."""
        if not self.ckpt_path.is_file():
            return False
        state = torch.load(self.ckpt_path, map_location=self.ctx.device, weights_only=False)
        self.objective.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
            if self.ema.decay != self.cfg.ema_decay:   # the command's decay wins over the checkpoint's
                log.info("%s: EMA decay %g from now on (the checkpoint's was %g)", self.name,
                         self.cfg.ema_decay, self.ema.decay)
                self.ema.decay = self.cfg.ema_decay
        elif self.ema is not None:
            # A checkpoint trained without EMA, resumed with it: the average starts from the
            # resumed weights, not from the initial ones the shadow was built from.
            self.ema = EMA(self.objective, self.cfg.ema_decay)
            log.info("%s: the checkpoint has no EMA; the EMA starts from its step-%d weights",
                     self.name, int(state["step"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        log.info("%s: resumed from %s at step %d", self.name, self.ckpt_path, self.step)
        return True

    def export_state(self) -> Dict[str, torch.Tensor]:
        """The weights to hand on: the EMA when enabled, else the live weights."""
        if self.ema is not None:
            return {k: v.detach().clone().cpu() for k, v in self.ema.shadow.items()}
        return {k: v.detach().clone().cpu() for k, v in self.objective.state_dict().items()}

    # -- training -----------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def train_step(self) -> Dict[str, float]:
        cfg = self.cfg
        gen = step_generator(cfg.seed, self.step, self.ctx.rank)
        batch = self.batches(self.step, gen)
        self.model.train()
        with autocast(cfg.bf16, self.ctx.device):
            losses = self.model(batch, gen)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {self.step}; "
                                     "lower the learning rate or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.objective)
        self.step += 1
        return {k: float(all_reduce_mean(v.detach(), self.ctx)) for k, v in losses.items()}

    def run(self, resume: bool = True) -> TrainResult:
        """Train to ``cfg.steps`` (resuming if allowed); writes ``final.pt``; returns the summary."""
        from tqdm import tqdm

        cfg = self.cfg
        if resume:
            self.try_resume()
        window: Dict[str, list] = {}
        recent: Dict[str, list] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, disable=not self.progress,
                   mininterval=2.0, dynamic_ncols=True)
        t_last = time.perf_counter()
        stopped_early = False
        while self.step < cfg.steps:
            losses = self.train_step()
            now = time.perf_counter()
            self.elapsed += now - t_last
            t_last = now
            for k, v in losses.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                means = {k: sum(v) / len(v) for k, v in window.items()}
                for k, v in means.items():
                    recent.setdefault(k, []).append(v)
                    recent[k] = recent[k][-5:]
                self._log({"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                           "seconds": round(self.elapsed, 2), **means})
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
                window = {}
            if self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
            if cfg.max_seconds is not None and self.elapsed > cfg.max_seconds:
                log.warning("%s: time budget of %.0f s reached at step %d/%d; stopping",
                            self.name, cfg.max_seconds, self.step, cfg.steps)
                stopped_early = True
                break
        bar.close()
        if window:
            for k, v in window.items():
                recent.setdefault(k, []).append(sum(v) / len(v))
        self.save_checkpoint()
        final_losses = {k: float(sum(v) / len(v)) for k, v in recent.items() if v}
        result = TrainResult(self.name, self.step, round(self.elapsed, 1), final_losses)
        if self.ctx.is_main:
            atomic_torch_save({"state": self.export_state(), "result": asdict(result),
                               "stopped_early": stopped_early, "config": asdict(cfg)},
                              self.out_dir / FINAL_FILE)
        barrier(self.ctx)
        log.info("%s: %d steps in %.1f s; losses %s", self.name, self.step, self.elapsed, final_losses)
        return result
