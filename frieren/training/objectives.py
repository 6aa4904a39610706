"""Training objectives as small ``nn.Module`` wrappers around the shared networks.

One network, several objectives (DESIGN §5.1): the CFM, reflow and distillation stages
all train the same :class:`~frieren.models.estimator.ChannelConcatDiT` +
:class:`~frieren.models.cond.CondEncoder`; only the data recipe and the loss change.
Every objective's ``forward(batch, generator)`` returns a dict of 0-dim tensors whose
``"loss"`` entry is optimised (see :mod:`frieren.training.loop`). All randomness comes from
the generator the trainer passes in, so resumed runs are bit-identical.

Shapes: mel (B, n_mels, T); frames (B, F, 3K, S, S) in [0, 1]; feats (B, F, D) (L2-normalised
CAVP features); latents x0, x1 (B, C, L) with L = latents_per_frame * F (scaled latents).

Reference bugs handled here (FRIEREN_SPEC §10):

* **Batch size 1 crash** (§10.12): the reference squeezes the time tensor to 0-d and then
  indexes it as (B, 1, 1). We always keep t as (B,) and broadcast with ``reshape``, so B = 1
  works (tested).
* **t ≈ 0 untrained before distillation** (§10.5): the logit-normal weight is ~1e-25 at
  t = 0, yet the first Euler step of the teacher (used to build the reflow pairs) and of the
  reflow model evaluates the network there. ``weight_floor`` > 0 clamps the weight from
  below (w' = max(w, floor)) so the start of the path gets a small, non-zero share of the
  gradient; 0 reproduces the reference exactly. Our default recipe uses 0.05.
* **Re-initialised condition layer** (§10.1) is a loading matter, handled by the stage code
  in :mod:`frieren.train_cli`: reflow and distillation start from the previous stage's
  estimator *and* condition encoder instead of a freshly initialised Linear.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frieren.flow.path import flow_time, interpolate, logit_normal_weight, sample_train_times, target_velocity
from frieren.models.cavp import CAVPVideoEncoder
from frieren.models.cond import CondEncoder
from frieren.models.estimator import ChannelConcatDiT
from frieren.models.vae import MelVAE
from frieren.training.cavp_audio import MelAudioEncoder

__all__ = [
    "VAEObjective", "CAVPObjective", "CFMObjective", "ReflowObjective", "DistillObjective",
    "weighted_flow_loss", "guided_velocity", "kl_divergence", "contrastive_loss",
    "generate_reflow_pairs", "frame_audio_targets", "onset_timbre",
]

Losses = Dict[str, Tensor]

AUX_BANDS = 8   # band-loudness targets of the CAVP per-frame audio-event head


def _randn(shape, gen: Optional[torch.Generator], like: Tensor) -> Tensor:
    """Standard normal noise drawn on the CPU generator, moved to ``like``'s device/dtype."""
    return torch.randn(shape, generator=gen).to(device=like.device, dtype=like.dtype)


def _rand(shape, gen: Optional[torch.Generator], like: Tensor) -> Tensor:
    return torch.rand(shape, generator=gen).to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------

def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over (C, T), averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


class VAEObjective(nn.Module):
    """Mel VAE: reconstruction (L1 or MSE) of a posterior *sample* + ``kl_weight`` x KL.

    As in the LDM/MAA2 recipe the reconstruction term is summed per item (then averaged
    over the batch) and the KL is summed per item with weight 1e-6. No discriminator (MAA2
    enables it only after 80k steps). Logged: ``recon`` (per-element mean), ``kl``.
    batch: mel (B, n_mels, T), T divisible by the VAE's downsampling factor.
    """

    def __init__(self, vae: MelVAE, kl_weight: float = 1e-6, recon: str = "l1") -> None:
        super().__init__()
        if recon not in ("l1", "mse"):
            raise ValueError(f"recon must be 'l1' or 'mse', got {recon!r}")
        self.vae = vae
        self.kl_weight = kl_weight
        self.recon = recon

    def forward(self, mel: Tensor, gen: Optional[torch.Generator] = None) -> Losses:
        post = self.vae.encode(mel)
        z = post.mean + post.std * _randn(post.mean.shape, gen, post.mean)
        rec = self.vae.decode(z)
        assert rec.shape == mel.shape, f"VAE output {tuple(rec.shape)} != input {tuple(mel.shape)}"
        diff = (rec - mel).abs() if self.recon == "l1" else (rec - mel).pow(2)
        recon_sum = diff.reshape(diff.shape[0], -1).sum(1).mean()
        kl = kl_divergence(post.mean, post.logvar)
        loss = recon_sum + self.kl_weight * kl
        return {"loss": loss / diff[0].numel(), "recon": diff.mean().detach(), "kl": kl.detach()}


# --------------------------------------------------------------------------------------
# CAVP (Diff-Foley contrastive audio-visual pre-training, small scale)
# --------------------------------------------------------------------------------------

def unit_frames(frames: Tensor, channels_last: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 frames (B, F, C, H, W) -> ``dtype`` (float32 by default) in [0, 1], the same values as
    ``frames.to(dtype) / 255`` (bfloat16 under bfloat16 autocast: the first convolution would cast a float32
    window anyway, and 0..255 are exact in bfloat16).

    ``channels_last``: the result is a (B, F, C, H, W) view of a channels-last 3-D (B, C, F, H, W)
    tensor, the layout a channels-last video branch's convolutions read after their
    (B, C, T, H, W) permute, so its first convolution takes it as it is: no layout copies (forward
    and weight gradient) of a contiguous float window. Without ``channels_last`` the result is
    contiguous whatever the input's layout.
    """
    if not channels_last:
        return frames.contiguous().to(dtype) / 255.0
    # (B, F, H, W, C): transposed as uint8 (a quarter of the bytes of a float transposition; free
    # when the frames come from FrameAugment, which gathers them in this layout), then converted
    # in one contiguous pass.
    pixels = frames.permute(0, 1, 3, 4, 2).contiguous()
    return pixels.to(dtype).div_(255.0).permute(0, 1, 4, 2, 3)


def contrastive_loss(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the leading index. a, b (..., N, D) L2-normalised; positives
    are the matching rows. Works batched: a (B, K, D) contrasts K items within each row."""
    logits = logit_scale * a @ b.transpose(-1, -2)                 # (..., N, N)
    n = logits.shape[-1]
    target = torch.arange(n, device=logits.device).expand(logits.shape[:-1]).reshape(-1)
    l1 = F.cross_entropy(logits.reshape(-1, n), target)
    l2 = F.cross_entropy(logits.transpose(-1, -2).reshape(-1, n), target)
    return 0.5 * (l1 + l2)


class CAVPObjective(nn.Module):
    """Semantic + temporal contrastive loss (Diff-Foley CAVP) between the video branch and
    a small mel encoder.

    * semantic: clip-mean video vs clip-mean audio embeddings, contrasted across the batch
      (other clips are negatives);
    * temporal: the clip is cut into ``segments`` equal time segments; each video segment's
      positive is the audio of the same segment and the *other segments of the same clip*
      are negatives, which forces the features to carry timing.

    Batch norm: the inference model keeps BN in eval mode (frozen statistics); training from
    scratch needs batch statistics, so ``train()`` here switches the video branch's BN layers
    to training mode (their running statistics are what the shipped model then uses).
    batch: (frames (B, F, 3K, S, S) float in [0, 1] or uint8 in [0, 255] (converted here, on the
    batch's device, exactly as ``WindowData.frames`` would on the host), mel (B, n_mels,
    F * mel_per_frame)[, struck material per frame int64 (B, F), -1 = none: only for the
    material and presence heads]).

    Optional auxiliary terms (heads used in training only, never part of the video branch):
    ``event_weight`` (per-frame audio-event regression), ``impact_weight`` (contrast of the
    batch's strongest-onset frames), ``timbre_weight`` (onset-weighted loudness-free spectrum
    of what starts), ``material_weight`` (cross-entropy of the struck material at impact
    frames, from the synthetic world's ground truth; a departure from Diff-Foley's purely
    self-supervised CAVP, available for synthetic data only; ``material_offset`` > 0 asks it of
    the feature that many frames after the impact's frame), ``presence_weight`` (binary
    cross-entropy: does an impact start in each frame's period, from the same ground truth, every
    impact alike however quiet; synthetic data only). ``event_offset`` > 0 asks the event
    head for each period's audio of the feature that many frames later (frame t + 1's snapshots
    span period t).
    """

    def __init__(self, video: CAVPVideoEncoder, audio: MelAudioEncoder, segments: int = 8,
                 temporal_weight: float = 1.0, init_temperature: float = 0.07,
                 event_weight: float = 0.0, event_bands: int = AUX_BANDS, event_slots: int = 1,
                 event_flux_bands: int = 0, impact_weight: float = 0.0, impact_frames: int = 0,
                 timbre_weight: float = 0.0, timbre_bands: int = 20,
                 material_weight: float = 0.0, materials: int = 0, material_offset: int = 0,
                 onset_weight: float = 0.0, onset_log: bool = False, event_offset: int = 0,
                 presence_weight: float = 0.0) -> None:
        super().__init__()
        self.video = video
        self.audio = audio
        self.segments = segments
        self.temporal_weight = temporal_weight
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        # Per-frame audio-event head (training only; not part of the shipped video branch).
        self.event_weight = event_weight
        self.event_bands = event_bands
        self.event_slots = event_slots
        self.event_flux_bands = event_flux_bands
        n_targets = event_slots + event_bands + event_flux_bands
        self.event_head = nn.Linear(video.cfg.embed_dim, n_targets) if event_weight > 0 else None
        # Emphasis on the head's onset slots (when a sound starts), which are ``event_slots`` of
        # its ``n_targets`` outputs: an extra MSE on them with this weight, and optionally
        # log1p-compressed onset strengths, so a quiet impact stands out from silence as much
        # as a loud one does from a quiet one.
        if (onset_weight > 0 or onset_log) and event_weight <= 0:
            raise ValueError("onset_weight / onset_log shape the event head: they need event_weight > 0")
        self.onset_weight = onset_weight
        self.onset_log = onset_log
        # Event offset: the feature this many frames later regresses each period's audio. A
        # frame's snapshots look back from its instant, which opens its audio period, so what
        # happens in period t is on camera in frame t + 1's snapshots. Recorded as a buffer (only
        # when set, so other checkpoints keep their keys) for the read-outs of the head.
        if event_offset < 0 or (event_offset and event_weight <= 0):
            raise ValueError(f"event_offset counts frames after the period (>= 0) and needs event_weight > 0; "
                             f"got {event_offset}")
        self.event_offset = event_offset
        if event_offset:
            self.register_buffer("event_offset_frames", torch.tensor(event_offset))
        # Impact contrast: the strongest-onset frames of the batch, video vs audio, each
        # frame's audio the positive and the other impacts' audio the negatives.
        self.impact_weight = impact_weight
        self.impact_frames = impact_frames
        # Timbre head: the loudness-free shape of what starts in each frame, weighted by onset.
        self.timbre_weight = timbre_weight
        self.timbre_bands = timbre_bands
        self.timbre_head = nn.Linear(video.cfg.embed_dim, timbre_bands) if timbre_weight > 0 else None
        # Material head (synthetic data only): which material strikes in each impact frame.
        self.material_weight = material_weight
        if material_weight > 0 and materials < 2:
            raise ValueError(f"a material head needs at least 2 material classes, got {materials}")
        self.material_head = nn.Linear(video.cfg.embed_dim, materials) if material_weight > 0 else None
        if material_offset < 0:
            raise ValueError(f"material_offset counts frames after the impact's frame; got {material_offset}")
        self.material_offset = material_offset
        # Presence head (synthetic data only): does an impact start in this frame's period? The
        # audio-derived onset targets of the event head are small for a quiet impact and blurred
        # where other sounds mask it; this label is the world's own, one for every impact.
        if presence_weight < 0:
            raise ValueError(f"presence_weight must be >= 0, got {presence_weight}")
        self.presence_weight = presence_weight
        self.presence_head = nn.Linear(video.cfg.embed_dim, 1) if presence_weight > 0 else None

    def train(self, mode: bool = True) -> "CAVPObjective":
        super().train(mode)
        for m in self.video.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(mode)
        return self

    def event_targets(self, mel: Tensor, frames: int) -> Tensor:
        """The event head's regression targets: ``frame_audio_targets`` of the log mel (B, n_mels,
        frames * m) -> (B, frames, slots + bands + flux_bands), the onset slots log1p-compressed
        when ``onset_log``, each target standardised over the batch's frames."""
        target = frame_audio_targets(mel, frames, self.event_bands, slots=self.event_slots,
                                     flux_bands=self.event_flux_bands)
        if self.onset_log:
            s = self.event_slots
            target = torch.cat([torch.log1p(target[..., :s]), target[..., s:]], -1)
        return (target - target.mean((0, 1), keepdim=True)) / target.std((0, 1), keepdim=True).clamp_min(1e-3)

    def forward(self, batch, gen: Optional[torch.Generator] = None) -> Losses:
        frames, mel = batch[:2]
        kind = frames.device.type
        low = torch.is_autocast_enabled(kind)
        if frames.dtype == torch.uint8:
            frames = unit_frames(frames, channels_last=self.video.video_encoder.conv1.conv.weight.is_contiguous(
                memory_format=torch.channels_last_3d), dtype=torch.get_autocast_dtype(kind) if low else torch.float32)
        if not low:
            return self._losses(batch, mel, self.video(frames, normalize=True), self.audio(mel, normalize=True))
        # Under bfloat16 autocast (`--bf16 cavp`) only the video backbone, where the time goes, computes in
        # bfloat16; its projection head, the audio branch and every loss stay float32 (the contrastive logits,
        # scaled up to 100x, would otherwise carry bfloat16's ~0.4 % error of each similarity).
        pooled = self.video.backbone(frames)
        with torch.autocast(kind, enabled=False):
            return self._losses(batch, mel, self.video.head(pooled.float(), True), self.audio(mel, normalize=True))

    def _losses(self, batch, mel: Tensor, v: Tensor, a: Tensor) -> Losses:
        """The objective's losses from the video features ``v`` and audio features ``a`` (B, F, D), both
        L2-normalised per frame, the batch's mel (B, n_mels, F * m) and its labels."""
        assert v.shape == a.shape, f"video feats {tuple(v.shape)} vs audio feats {tuple(a.shape)}"
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        b, f, d = v.shape
        sem = contrastive_loss(F.normalize(v.mean(1), dim=-1), F.normalize(a.mean(1), dim=-1), scale) \
            if b > 1 else v.new_zeros(())
        k = min(self.segments, f)
        if f % k:
            raise ValueError(f"{f} frames do not split into {k} temporal segments")
        vs = F.normalize(v.reshape(b, k, f // k, d).mean(2), dim=-1)
        as_ = F.normalize(a.reshape(b, k, f // k, d).mean(2), dim=-1)
        tem = contrastive_loss(vs, as_, scale)
        with torch.no_grad():
            acc = (vs @ as_.transpose(1, 2)).argmax(-1).eq(torch.arange(k, device=v.device)).float().mean()
        out = {"loss": sem + self.temporal_weight * tem, "semantic": sem.detach(),
               "temporal": tem.detach(), "temporal_acc": acc}
        if self.event_head is not None:
            # Regress, from each frame's (normalised) video feature, what the audio of that
            # frame's period does: its onset strength (spectral flux peak) and band loudness.
            # The contrastive terms alone left the features nearly blind to impact timing
            # (linear onset probe AUC 0.59 vs 0.83 for raw frame differences).
            target = self.event_targets(mel, f)                                    # (B, F, targets)
            s = self.event_slots
            o = min(self.event_offset, f - 1)
            pred = self.event_head(v[:, o:])                                       # (B, F - o, targets)
            target = target[:, :f - o]
            ev = F.mse_loss(pred, target)
            onset_corr = _corr(pred[..., 0].reshape(-1), target[..., 0].reshape(-1))
            out["loss"] = out["loss"] + self.event_weight * ev
            out["event"] = ev.detach()
            if self.onset_weight > 0:
                ev_onset = F.mse_loss(pred[..., :s], target[..., :s])
                out["loss"] = out["loss"] + self.event_weight * self.onset_weight * ev_onset
                out["event_onset"] = ev_onset.detach()
            out["onset_corr"] = onset_corr.detach()
        if self.impact_weight > 0 or self.timbre_head is not None:
            onset = frame_audio_targets(mel, f, 1)[..., 0]                     # (B, F)
        if self.impact_weight > 0:
            k = min(self.impact_frames or 2 * b, b * f)
            top = onset.reshape(-1).topk(k).indices                            # (k,)
            imp = contrastive_loss(v.reshape(-1, d)[top], a.reshape(-1, d)[top], scale)
            out["loss"] = out["loss"] + self.impact_weight * imp
            out["impact"] = imp.detach()
        if self.timbre_head is not None:
            shape = onset_timbre(mel, f, self.timbre_bands)                    # (B, F, bands)
            w = onset / onset.mean().clamp_min(1e-6)                           # (B, F)
            tim = (w[..., None] * (self.timbre_head(v) - shape).pow(2)).mean()
            out["loss"] = out["loss"] + self.timbre_weight * tim
            out["timbre"] = tim.detach()
        if (self.material_head is not None or self.presence_head is not None) and len(batch) < 3:
            raise ValueError("the material and presence heads need per-frame material labels (B, F) as the "
                             "batch's third item")
        if self.presence_head is not None:
            hit = (batch[2] >= 0).to(v.dtype)                                 # (B, F)
            logit = self.presence_head(v).squeeze(-1)                         # (B, F)
            pres = F.binary_cross_entropy_with_logits(logit, hit)
            out["loss"] = out["loss"] + self.presence_weight * pres
            out["presence"] = pres.detach()
            with torch.no_grad():
                said = logit > 0
                out["presence_recall"] = (said & hit.bool()).sum() / hit.sum().clamp_min(1)
                out["presence_precision"] = (said & hit.bool()).sum() / said.sum().clamp_min(1)
        if self.material_head is not None:
            label = batch[2]                                                  # (B, F), -1 = no impact
            if self.material_offset:
                # Frame t + offset names the material of an impact in period t: at a low visual
                # rate the frame that opens the impact's period shows the object above the impact
                # point, the next one shows it where it struck.
                o = min(self.material_offset, f)
                label = torch.cat([label.new_full((b, o), -1), label[:, :f - o]], 1)
            label = label.reshape(-1)                                         # (B * F,)
            hit = label >= 0
            if bool(hit.any()):
                logits = self.material_head(v.reshape(-1, d)[hit])
                mat = F.cross_entropy(logits, label[hit])
                out["material_acc"] = logits.argmax(-1).eq(label[hit]).float().mean()
            else:
                mat = v.sum() * 0.0
            out["loss"] = out["loss"] + self.material_weight * mat
            out["material"] = mat.detach()
        return out



def onset_timbre(mel: Tensor, frames: int, bands: int = 20) -> Tensor:
    """What kind of sound starts in each visual frame, without how loud: the onset spectrum of
    :func:`frame_audio_targets` (log positive spectral flux of ``bands`` mel-bin groups) minus
    its mean over the bands, scaled to unit variance over the batch. mel (B, n_mels, frames * m)
    log10 mel -> (B, frames, bands). Frames without an onset give flat rows; callers weight by onset."""
    shape = frame_audio_targets(mel, frames, 1, flux_bands=bands)[..., 2:]     # (B, F, bands)
    shape = shape - shape.mean(-1, keepdim=True)
    return shape / shape.std().clamp_min(1e-3)


def _corr(a: Tensor, b: Tensor) -> Tensor:
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-8)


def mel_rise(mel: Tensor) -> Tensor:
    """Positive increase of a log mel (B, n_mels, T) from the previous mel frame, (B, n_mels, T)
    (0 at the first frame); summed over bins it is the spectral flux."""
    return F.pad((mel[..., 1:] - mel[..., :-1]).clamp_min(0), (1, 0))


def frame_audio_targets(mel: Tensor, frames: int, bands: int = AUX_BANDS, *, slots: int = 1,
                        flux_bands: int = 0) -> Tensor:
    """Per visual frame audio descriptors from a log10 mel (B, n_mels, frames * m)
    -> (B, frames, slots + bands + flux_bands):

    * onset strength, ``slots`` values: the frame's m mel frames cut into ``slots`` equal
      parts, each giving its largest positive spectral flux (sum over mel bins of the
      increase from the previous mel frame). ``slots > 1`` asks *when inside the frame*
      the sound starts (the tiny preset's 4 latent slots per frame: 32 ms each).
    * band loudness, ``bands`` values: mean log mel of equal groups of mel bins over the frame.
    * onset spectrum, ``flux_bands`` values: the positive flux of each of ``flux_bands``
      groups of mel bins summed over the frame, i.e. the spectrum of what *starts* in the
      frame (the struck material's partials) without the ring-out of earlier sounds.
    """
    b, n_mels, t = mel.shape
    m = t // frames
    if m % slots:
        raise ValueError(f"{m} mel frames per visual frame do not split into {slots} onset slots")
    rise = mel_rise(mel)                                                        # (B, n_mels, T)
    flux = rise.sum(1)                                                          # (B, T)
    onset = flux[:, :frames * m].reshape(b, frames, slots, m // slots).amax(-1)  # (B, F, slots)
    k = n_mels // bands
    loud = mel[:, :k * bands, :frames * m].reshape(b, bands, k, frames, m).mean((2, 4))   # (B, bands, F)
    parts = [onset, loud.transpose(1, 2)]
    if flux_bands:
        kf = n_mels // flux_bands
        spec = rise[:, :kf * flux_bands, :frames * m].reshape(b, flux_bands, kf, frames, m).sum((2, 4))
        parts.append(torch.log1p(spec).transpose(1, 2))                         # (B, F, flux_bands)
    return torch.cat(parts, -1)


# --------------------------------------------------------------------------------------
# Flow objectives (CFM, reflow, distillation)
# --------------------------------------------------------------------------------------

def weighted_flow_loss(v_pred: Tensor, target: Tensor, t: Tensor, weight_floor: float = 0.0,
                       position_weight: Optional[Tensor] = None) -> Losses:
    """mean_{b,c,l}( w(t_b) p_{b,l} (v_pred - target)^2 ) with w the logit-normal density clamped to
    at least ``weight_floor`` and p an optional per-latent weight (B, L) (default 1). t (B,) float
    flow time. Returns loss and the unweighted mse."""
    err = (v_pred - target).pow(2)
    w = logit_normal_weight(t)
    if weight_floor > 0:
        w = w.clamp_min(weight_floor)
    w = w.reshape(-1, *([1] * (err.dim() - 1)))                      # (B, 1, 1): B = 1 is fine
    if position_weight is not None:
        w = w * position_weight[:, None, :].to(err.dtype)             # (B, 1, L)
    return {"loss": (w * err).mean(), "mse": err.mean().detach()}


ONSET_WEIGHT_SCALE = math.log1p(50.0)   # log1p of a loud impact's excess flux (log10-mel units)


def latent_onset_weight(mel: Tensor, mel_per_latent: int, weight: float) -> Tensor:
    """Per-latent loss weight that makes the latents where a sound starts count more, quiet
    starts about as much as loud ones.

    mel (B, n_mels, L * mel_per_latent) log10 mel of the windows -> (B, L): 1 + ``weight`` x
    o / log1p(50), o = log1p of the latent's largest spectral flux above the window's median
    flux (0 where nothing starts; about 3.3 for a quiet impact, 3.9 for a loud one), normalised
    so the weights average 1 over the batch (the loss keeps its scale)."""
    b, _, t = mel.shape
    rise = mel_rise(mel).sum(1)                                                   # (B, T)
    excess = (rise - rise.median(dim=1, keepdim=True).values).clamp_min(0)
    o = torch.log1p(excess[:, :t // mel_per_latent * mel_per_latent]
                    .reshape(b, -1, mel_per_latent).amax(-1))                         # (B, L)
    w = 1.0 + weight * o / ONSET_WEIGHT_SCALE
    return w / w.mean()


def guided_velocity(estimator: ChannelConcatDiT, cond: CondEncoder, x: Tensor, t_int: Tensor,
                    feats: Tensor, cfg_scale: float) -> Tensor:
    """v_u + s (v_c - v_u) from ONE batched forward over [null; cond] (unconditional rows
    first, as the reference). The null condition is the condition encoder applied to zero
    features; gradients reach both branches and the encoder. x (B,C,L), t_int (B,), feats (B,F,D)."""
    b = x.shape[0]
    ctx = cond(torch.cat([torch.zeros_like(feats), feats], 0))
    v = estimator(torch.cat([x, x], 0), torch.cat([t_int, t_int], 0), ctx)
    v_u, v_c = v[:b], v[b:]
    return v_u + cfg_scale * (v_c - v_u)


class CFMObjective(nn.Module):
    """Base conditional flow matching (FRIEREN_SPEC §5.1).

    t_int ~ U{0..999}, t = t_int/1000, x0 ~ N(0, I), x_t = t x1 + (1-t) x0, target x1 - x0,
    logit-normal weighted MSE. CFG dropout: with probability ``drop_prob`` per item the raw
    features are replaced by zeros *before* the condition Linear (null = Linear(0) = bias).
    batch: dict(feats (B, F, D), x1 (B, C, L)[, position_weight (B, L): a per-latent loss
    weight, :func:`latent_onset_weight`]).
    """

    def __init__(self, estimator: ChannelConcatDiT, cond: CondEncoder, drop_prob: float = 0.2,
                 weight_floor: float = 0.0) -> None:
        super().__init__()
        self.estimator = estimator
        self.cond = cond
        self.drop_prob = drop_prob
        self.weight_floor = weight_floor

    def forward(self, batch: dict, gen: Optional[torch.Generator] = None) -> Losses:
        feats, x1 = batch["feats"], batch["x1"]
        b = x1.shape[0]
        t_int = sample_train_times(b, generator=gen).to(x1.device)
        t = flow_time(t_int).to(x1.dtype)
        x0 = _randn(x1.shape, gen, x1)
        keep = (_rand((b,), gen, feats) >= self.drop_prob).to(feats.dtype).reshape(b, 1, 1)
        v = self.estimator(interpolate(x0, x1, t), t_int, self.cond(feats * keep))
        return weighted_flow_loss(v, target_velocity(x0, x1), t, self.weight_floor, batch.get("position_weight"))


class ReflowObjective(nn.Module):
    """Reflow with the guided field (FRIEREN_SPEC §6.2): the CFG combination
    v_u + s (v_c - v_u) (s = 4.5) is regressed onto x1 - x0 for the teacher's stored
    (noise, sample) pairs; logit-normal weighting, no CFG dropout.
    batch: dict(feats (B, F, D), x0 (B, C, L), x1 (B, C, L)[, position_weight (B, L)])."""

    def __init__(self, estimator: ChannelConcatDiT, cond: CondEncoder, cfg_scale: float = 4.5,
                 weight_floor: float = 0.0) -> None:
        super().__init__()
        self.estimator = estimator
        self.cond = cond
        self.cfg_scale = cfg_scale
        self.weight_floor = weight_floor

    def forward(self, batch: dict, gen: Optional[torch.Generator] = None) -> Losses:
        feats, x0, x1 = batch["feats"], batch["x0"], batch["x1"]
        b = x1.shape[0]
        t_int = sample_train_times(b, generator=gen).to(x1.device)
        t = flow_time(t_int).to(x1.dtype)
        v = guided_velocity(self.estimator, self.cond, interpolate(x0, x1, t), t_int, feats, self.cfg_scale)
        return weighted_flow_loss(v, target_velocity(x0, x1), t, self.weight_floor, batch.get("position_weight"))


class DistillObjective(nn.Module):
    """One-step distillation (FRIEREN_SPEC §6.3): t = 0 always; x1_hat = x0 + v_cfg(x0, 0);
    plain MSE to the stored sample x1 (per latent weighted by ``position_weight`` (B, L) when the
    batch has one, :func:`latent_onset_weight`). This is the stage that trains t = 0 (§10.5).
    batch: dict(feats, x0, x1[, position_weight]) as for reflow."""

    def __init__(self, estimator: ChannelConcatDiT, cond: CondEncoder, cfg_scale: float = 4.5) -> None:
        super().__init__()
        self.estimator = estimator
        self.cond = cond
        self.cfg_scale = cfg_scale

    def forward(self, batch: dict, gen: Optional[torch.Generator] = None) -> Losses:
        feats, x0, x1 = batch["feats"], batch["x0"], batch["x1"]
        t_int = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        x1_hat = x0 + guided_velocity(self.estimator, self.cond, x0, t_int, feats, self.cfg_scale)
        pw = batch.get("position_weight")
        if pw is None:
            loss = F.mse_loss(x1_hat, x1)
            return {"loss": loss, "mse": loss.detach()}
        err = (x1_hat - x1).pow(2)
        return {"loss": (pw[:, None, :].to(err.dtype) * err).mean(), "mse": err.mean().detach()}


@torch.no_grad()
def generate_reflow_pairs(estimator: ChannelConcatDiT, cond: CondEncoder, feats: Tensor, x0: Tensor,
                          steps: int = 25, cfg_scale: float = 4.5, solver: str = "euler") -> Tensor:
    """Teacher samples for reflow (FRIEREN_SPEC §6.1): integrate from the given noise x0
    (B, C, L) with ``steps`` Euler steps and CFG ``cfg_scale`` -> x1 (B, C, L).

    Unlike the reference we keep the teacher's end-point *latent* as the target instead of
    decoding it to a mel and re-encoding a posterior sample (§10.7), so each (x0, x1) pair is
    an exact coupling of the teacher's ODE.
    """
    from frieren.flow.sampling import sample

    ctx = cond(feats)
    null = cond.null_condition(feats.shape[1])
    return sample(estimator, ctx, null, x0, steps=steps, cfg_scale=cfg_scale, solver=solver).final
