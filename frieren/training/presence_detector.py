"""The presence detector (``--presence-detector-steps``): the network the slot presence head reads.

A linear slot head on the frozen CAVP features places onsets at F1 ±125 ms about 0.79 on
validation clips, and a generator trained on the truth channel renders what the channel says
(``frieren eval --presence-truth``), so the head is what limits sync. The detector is a copy of
the CAVP video branch with the fitted slot head on top, fine-tuned end to end on the slot labels
(binary cross-entropy, random 16-frame windows of the flow stages' clips, horizontal flips). The
generator's features stay the CAVP's; the detector only decides the presence channels.

A stream without look-ahead emits the audio of its window's newest frame, which the detector reads
with nothing after it (zero temporal padding): it must foresee the impact from the fall. With
``edge_weight`` > 0 the loss adds that much of the binary cross-entropy of each window's last frame
alone (``--presence-edge-steps``, a second phase after the first), so the network learns that read
too.

With ``material_labels`` (``--material-channel``) the network also learns a material head: per frame
which material's impact starts in it, or none (class ``M``, the last), a cross-entropy over every
frame of the window added with ``material_weight``. The generator's material channels are that
head's decision, so the detector names the struck material as well as when.

Deterministic per seed and thread count; a checkpoint every ``ckpt_every`` steps lets an
interrupted run resume where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from frieren.training.atomic_io import atomic_torch_save

log = logging.getLogger("frieren.train")

__all__ = ["fine_tune_detector", "material_targets"]


def material_targets(frame_material: torch.Tensor, classes: int) -> torch.Tensor:
    """Per frame struck material int64 (N,), -1 = none -> the material head's class (N,): the
    material's index, ``classes`` (the extra last class) where no impact starts."""
    return torch.where(frame_material >= 0, frame_material, torch.full_like(frame_material, classes))


def fine_tune_detector(cfg, video_weights: Dict[str, torch.Tensor], head_state: Dict[str, torch.Tensor],
                       frames: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], *, steps: int, seed: int,
                       ckpt: Path, batch_size: int = 8, window: int = 16, lr: float = 1e-4, head_lr: float = 1e-3,
                       flip: float = 0.5, ckpt_every: int = 250, progress: bool = True, edge_weight: float = 0.0,
                       desc: str = "presence detector", material_labels: Optional[Sequence[torch.Tensor]] = None,
                       material_classes: int = 0, material_head_state: Optional[Dict[str, torch.Tensor]] = None,
                       material_weight: float = 1.0, rotate: float = 0.0, channels_last: bool = False,
                       bf16: bool = False,
                       ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, object]]:
    """Fine-tune a copy of the video branch (``cfg``: a CAVPConfig without the presence channel,
    ``video_weights`` its state) and the slot head (``head_state``) on per-clip frames uint8
    (N_c, 3K, S, S) and slot labels (N_c, slots); ``edge_weight``: plus that much of the loss of
    each window's last frame. With ``material_labels`` (per clip int64 (N_c,), -1 = no impact) also a
    material head Linear(embed_dim, ``material_classes`` + 1) (from ``material_head_state`` if given,
    else fresh). -> (network state, head state, {"loss": mean of the last 50 steps, "steps", and with
    materials "material_head": its state, "material_acc": its accuracy on impact frames, last 50 steps}).
    ``rotate``: the probability that a window is also turned a quarter (either way), so that a floor
    bounce shows as a sideways one (a wall's); 0 draws no extra random numbers (same run as before).
    ``channels_last``: the network in channels-last 3-D layout (same maths, other last bits);
    ``bf16``: its forward pass under bfloat16 autocast (:mod:`frieren.training.precision`)."""
    from tqdm import tqdm

    from frieren.models.cavp import CAVPVideoEncoder
    from frieren.training.precision import autocast

    if steps < 1:
        raise ValueError(f"the presence detector needs at least one step, got {steps}")
    if not 0.0 <= rotate <= 1.0:
        raise ValueError(f"the quarter-turn probability must be within [0, 1], got {rotate}")
    if edge_weight < 0:
        raise ValueError(f"the newest frame's loss weight must be >= 0, got {edge_weight}")
    if len(frames) != len(labels) or not frames:
        raise ValueError(f"{len(frames)} clips of frames vs {len(labels)} of labels")
    if material_labels is not None and (len(material_labels) != len(frames) or material_classes < 2):
        raise ValueError(f"{len(material_labels)} clips of material labels for {len(frames)} clips and "
                         f"{material_classes} materials (need one label series per clip and at least 2 materials)")
    usable = [i for i, f in enumerate(frames) if f.shape[0] >= window]
    if not usable:
        raise SystemExit(f"the presence detector trains on windows of {window} frames and no clip is that long")
    net = CAVPVideoEncoder(dataclasses.replace(cfg, presence_channel=False, presence_detector=False,
                                               presence_edge=False, material_channel=0))
    net.load_state_dict(video_weights)
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)
    head = torch.nn.Linear(net.cfg.embed_dim, labels[0].shape[1])
    head.load_state_dict(head_state)
    groups = [{"params": net.parameters(), "lr": lr}, {"params": head.parameters(), "lr": head_lr}]
    material_head = None
    if material_labels is not None:
        torch.manual_seed(seed + 1)          # the fresh head's initial weights, per seed
        material_head = torch.nn.Linear(net.cfg.embed_dim, material_classes + 1)
        if material_head_state is not None:
            material_head.load_state_dict(material_head_state)
        groups.append({"params": material_head.parameters(), "lr": head_lr})
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    step, recent, recent_acc = 0, [], []
    if ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(saved["net"])
        head.load_state_dict(saved["head"])
        if material_head is not None:
            material_head.load_state_dict(saved["material_head"])
            recent_acc = list(saved["recent_acc"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["rng"])
        step, recent = int(saved["step"]), list(saved["recent"])
        log.info("%s: resuming at step %d of %d", desc, step, steps)
    bar = tqdm(total=steps, initial=step, desc=desc, unit="step", disable=not progress)
    net.train()
    while step < steps:
        xs, ys, ms = [], [], []
        for _ in range(batch_size):
            c = usable[int(torch.randint(len(usable), (1,), generator=gen))]
            s = int(torch.randint(frames[c].shape[0] - window + 1, (1,), generator=gen))
            x = frames[c][s:s + window].float() / 255.0                 # (W, 3K, S, S)
            if float(torch.rand((), generator=gen)) < flip:
                x = x.flip(-1)                                         # a mirrored scene: same onsets
            if rotate > 0 and float(torch.rand((), generator=gen)) < rotate:
                turn = 1 if float(torch.rand((), generator=gen)) < 0.5 else 3
                x = torch.rot90(x, turn, dims=(-2, -1))                # gravity sideways: same onsets
            xs.append(x)
            ys.append(labels[c][s:s + window])
            if material_labels is not None:
                ms.append(material_targets(material_labels[c][s:s + window], material_classes))
        with autocast(bf16):                                           # bf16: the backbone only
            pooled = net.backbone(torch.stack(xs))                     # (B, feat_dim, W, 1, 1)
        feats = net.head(pooled.float(), normalize=True)               # (B, W, D): net(x, normalize=True)
        logits = head(feats)                                           # (B, W, slots)
        target = torch.stack(ys).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if edge_weight > 0:
            loss = loss + edge_weight * F.binary_cross_entropy_with_logits(logits[:, -1], target[:, -1])
        if material_head is not None:
            m_logits = material_head(feats).flatten(0, 1)              # (B * W, M + 1)
            m_target = torch.stack(ms).flatten()
            loss = loss + material_weight * F.cross_entropy(m_logits, m_target)
            hit = m_target < material_classes
            if bool(hit.any()):
                acc = float(m_logits[hit].argmax(-1).eq(m_target[hit]).float().mean())
                recent_acc = (recent_acc + [acc])[-50:]
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        recent = (recent + [float(loss.detach())])[-50:]
        bar.update(1)
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        if step % ckpt_every == 0 or step == steps:
            saved = {"net": net.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(),
                     "rng": gen.get_state(), "step": step, "recent": recent}
            if material_head is not None:
                saved.update(material_head=material_head.state_dict(), recent_acc=recent_acc)
            atomic_torch_save(saved, ckpt)
    bar.close()
    net.eval()
    info: Dict[str, object] = {"loss": sum(recent) / max(len(recent), 1), "steps": steps}
    if material_head is not None:
        info["material_head"] = {k: v.detach().clone() for k, v in material_head.state_dict().items()}
        info["material_acc"] = sum(recent_acc) / max(len(recent_acc), 1)
    return ({k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in net.state_dict().items()},
            {k: v.detach().clone() for k, v in head.state_dict().items()}, info)
