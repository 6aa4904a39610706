"""CAVP video branch: SlowOnly 3D ResNet-50 backbone + linear projection (FRIEREN_SPEC §3.2).

Frieren conditions on per-frame CAVP features (Diff-Foley's contrastive audio-visual
pre-training). Only the *video* branch of ``CAVP_Inference`` is used; the Cnn14 audio
branch (``spec_encoder.*``) and ``logit_scale`` exist in the checkpoint only so that it
loads, and are dropped by name here (:func:`select_video_branch`).

Architecture (mmaction2 ``ResNet3dSlowOnly(depth=50)``, ``style='pytorch'``):

* stem ``conv1``: Conv3d 3→C, kernel (1,7,7), stride (1,2,2), padding (0,3,3), no bias,
  BN3d, ReLU; then MaxPool3d kernel (1,3,3), stride (1,2,2), padding (0,1,1); no pool2.
* ``layer1..layer4``: Bottleneck3d blocks (expansion 4), stage depths (3,4,6,3), planes
  C·(1,2,4,8), spatial strides (1,2,2,2) on the 3x3 conv, temporal stride always 1.
* inflation (0,0,1,1), style '3x1x1': in layer3 and layer4 *every* block's conv1 is a
  (3,1,1) conv with temporal padding 1; elsewhere conv1 is 1x1x1. conv2 is always (1,3,3).
* every conv is an mmcv ``ConvModule`` (``.conv`` without bias, ``.bn``, ReLU except conv3);
  the first block of each stage has a ``downsample`` 1x1x1 conv (+BN) with the block stride.
* the output (B, 8·4·C, T, h, w) is averaged over h, w per frame → (B, 4·8·C, T, 1, 1).

The head reshapes to (B, T, feat_dim), applies ``video_project_head`` Linear(feat_dim →
embed_dim) and (Frieren: ``pool=False``) L2-normalises per frame.

Parameter counts (checked by ``tests/frieren/test_cavp.py`` against the reference manifest):

==========================  ===============  =====================
config                      backbone         + head = video branch
==========================  ===============  =====================
full (base_channels=64)     31,634,496       1,049,088 → 32,683,584
reduced (base_channels=8)   501,128          131,584 → 632,712
==========================  ===============  =====================

The nine inflated (3,1,1) convs give a temporal receptive field of ±9 frames (±2.25 s at
4 fps); zero temporal padding applies at the edges of every processed clip, so features
depend on how frames are chunked (the reference extractor uses 40-frame chunks).

Measured CPU cost (dev machine, 2 threads, inference_mode, random weights): full size on
(1, 32, 3, 224, 224) ≈ 3.7 s (≈ 117 ms per frame); base_channels=8 on (1, 16, 3, 64, 64) ≈ 10 ms.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from frieren.config import CAVPConfig

logger = logging.getLogger(__name__)

# Stage depths of the bottleneck ResNets that ResNet3dSlowOnly supports. 50, 101 and 152 are
# mmaction2's (the official CAVP is 50); 14 and 26 (one and two blocks per stage, 3 layers per
# block plus stem and head) are shallower stacks for small presets trained here
# (``frieren train --cavp-depth``), whose CAVP step costs less on a CPU.
_STAGE_BLOCKS: Dict[int, Tuple[int, ...]] = {14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3),
                                             101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
CAVP_DEPTHS = tuple(sorted(_STAGE_BLOCKS))

_EXPANSION = 4
_SPATIAL_STRIDES = (1, 2, 2, 2)
_INFLATE = (0, 0, 1, 1)  # per stage; a 1 inflates conv1 of every block of that stage to (3,1,1)
# (the official layout; CAVPConfig.inflate may differ for presets trained here)

# State-dict prefixes that belong to the video branch; everything else in a CAVP checkpoint
# (spec_encoder.*, logit_scale) is ignored.
VIDEO_BRANCH_PREFIXES = ("video_encoder.", "video_project_head.")


def depth_of_stage_blocks(blocks: Tuple[int, ...]) -> int:
    """The depth whose stages hold ``blocks`` (e.g. (2, 2, 2, 2) -> 26); ValueError if none."""
    for depth, b in _STAGE_BLOCKS.items():
        if tuple(blocks) == b:
            return depth
    raise ValueError(f"no supported ResNet3dSlowOnly depth has {tuple(blocks)} blocks per stage "
                     f"(supported: { {d: b for d, b in _STAGE_BLOCKS.items()} })")


def depth_of_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "video_encoder.") -> int:
    """The ResNet depth of a video branch's state dict, from the blocks its stages hold
    (``<prefix>layer<i>.<j>.*`` keys); ValueError if the layout is not a supported one."""
    blocks = [0, 0, 0, 0]
    for key in state_dict:
        if key.startswith(prefix + "layer"):
            stage, block = key[len(prefix) + len("layer"):].split(".", 2)[:2]
            if stage.isdigit() and block.isdigit() and 1 <= int(stage) <= 4:
                blocks[int(stage) - 1] = max(blocks[int(stage) - 1], int(block) + 1)
    return depth_of_stage_blocks(tuple(blocks))



def with_depth_of(cfg: CAVPConfig, state_dict: Mapping[str, torch.Tensor],
                  prefix: str = "video_encoder.") -> CAVPConfig:
    """``cfg`` with the depth the video branch in ``state_dict`` was trained at (``--cavp-depth``);
    ``cfg`` unchanged when the keys hold no supported layout (loading them then names the misfit)."""
    try:
        return dataclasses.replace(cfg, depth=depth_of_state_dict(state_dict, prefix))
    except ValueError:
        return cfg

def _triple(v) -> Tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class ConvModule(nn.Module):
    """mmcv ``ConvModule`` subset: Conv3d (no bias) → BatchNorm3d → optional ReLU.

    Submodule names ``conv`` and ``bn`` match the checkpoint keys.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, _triple(kernel_size), stride=_triple(stride),
                              padding=_triple(padding), bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.1)
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class Bottleneck3d(nn.Module):
    """mmaction2 Bottleneck3d, ``style='pytorch'`` (stride on conv2), inflate style '3x1x1'."""

    expansion = _EXPANSION

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, inflate: bool = False,
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        if inflate:
            k1, p1 = (3, 1, 1), (1, 0, 0)
        else:
            k1, p1 = (1, 1, 1), (0, 0, 0)
        self.conv1 = ConvModule(inplanes, planes, k1, stride=1, padding=p1)
        self.conv2 = ConvModule(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                                padding=(0, 1, 1))
        self.conv3 = ConvModule(planes, planes * self.expansion, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class ResNet3dSlowOnly(nn.Module):
    """SlowOnly 3D ResNet backbone; input (B, 3, T, H, W), output (B, feat_dim, T, 1, 1)."""

    def __init__(self, depth: int = 50, base_channels: int = 64, in_channels: int = 3,
                 inflate: Tuple[int, ...] = _INFLATE):
        super().__init__()
        if len(inflate) != len(_SPATIAL_STRIDES):
            raise ValueError(f"ResNet3dSlowOnly: inflate needs one flag per stage, got {tuple(inflate)}")
        if depth not in _STAGE_BLOCKS:
            raise ValueError(f"ResNet3dSlowOnly: depth must be one of {sorted(_STAGE_BLOCKS)}, got {depth}")
        self.depth = depth
        self.base_channels = base_channels
        self.conv1 = ConvModule(in_channels, base_channels, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = base_channels
        for i, n_blocks in enumerate(_STAGE_BLOCKS[depth]):
            planes = base_channels * 2 ** i
            stride = _SPATIAL_STRIDES[i]
            downsample = None
            if stride != 1 or inplanes != planes * _EXPANSION:
                downsample = ConvModule(inplanes, planes * _EXPANSION, 1, stride=(1, stride, stride), act=False)
            blocks = [Bottleneck3d(inplanes, planes, stride, bool(inflate[i]), downsample)]
            inplanes = planes * _EXPANSION
            blocks += [Bottleneck3d(inplanes, planes, 1, bool(inflate[i])) for _ in range(1, n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.feat_dim = inplanes
        # AdaptiveAvgPool2d((1,1)) on the 5-D map: averages H, W per frame (no parameters).
        self.pool = nn.AdaptiveAvgPool2d((1, 1))

    def stages(self) -> Iterable[Tuple[str, nn.Module]]:
        return [("stem", nn.Sequential(self.conv1, self.maxpool))] + [
            (f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, 5)]

    def forward_stages(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All stage outputs: keys ``stem``, ``layer1`` .. ``layer4``, ``pooled``."""
        out: Dict[str, torch.Tensor] = {}
        for name, mod in self.stages():
            x = mod(x)
            out[name] = x
        out["pooled"] = self.pool(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x)


def select_video_branch(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The video-branch entries of a CAVP checkpoint state_dict.

    Accepts a raw checkpoint dict too (uses ``['state_dict']`` if present), strips the
    DataParallel ``module.`` prefix like the reference extractor, and drops ``spec_encoder.*``,
    ``logit_scale`` and anything else outside :data:`VIDEO_BRANCH_PREFIXES`.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    out = {}
    for key, value in state_dict.items():
        key = key.replace("module.", "")
        if key.startswith(VIDEO_BRANCH_PREFIXES):
            out[key] = value
    return out


class CAVPVideoEncoder(nn.Module):
    """CAVP video branch producing per-frame features.

    Submodules ``video_encoder`` (:class:`ResNet3dSlowOnly`) and ``video_project_head``
    (Linear feat_dim → embed_dim, feat_dim = 32·base_channels) give state_dict keys equal to
    the checkpoint's ``video_encoder.*`` / ``video_project_head.*`` keys.

    The encoder is frozen in Frieren: it is built in eval mode and ``train()`` keeps its
    BatchNorm layers in eval mode (running statistics), as the reference extractor uses them.

    With ``cfg.presence_channel`` (presets trained here; never the official model) it also holds
    ``presence_head`` (Linear embed_dim → ``cfg.presence_slots`` on the normalised feature: with one
    slot the CAVP stage's ``--cavp-presence-weight`` head, with more a head fitted on the frozen
    features, one logit per equal slot of the frame's period) and the buffer ``presence_threshold``
    (a logit), and :meth:`condition` appends the head's decisions to each frame's feature. With
    ``cfg.presence_edge`` also a detector for windows read as a stream reads them, newest frame last:
    ``presence_edge_net`` (the detector's architecture), ``presence_edge_head`` and the buffers
    ``presence_edge_threshold`` (each window's newest frame) and ``presence_edge_window_threshold``
    (its other frames); :meth:`condition` decides with it, :meth:`extract_condition` (a whole clip)
    with ``presence_net``. With ``cfg.material_channel`` (M) ``presence_material_head`` (Linear
    embed_dim → M + 1 on ``presence_net``'s features: the struck material, or none) and the
    condition's last M channels are its decision (:func:`material_one_hot`).
    """

    def __init__(self, cfg: CAVPConfig = CAVPConfig()):
        super().__init__()
        self.cfg = cfg
        self.video_encoder = ResNet3dSlowOnly(depth=cfg.depth, base_channels=cfg.base_channels,
                                              in_channels=cfg.in_channels, inflate=cfg.inflate)
        self.feat_dim = self.video_encoder.feat_dim
        self.video_project_head = nn.Linear(self.feat_dim, cfg.embed_dim)
        if cfg.presence_channel:
            self.presence_head = nn.Linear(cfg.embed_dim, cfg.presence_slots)
            self.register_buffer("presence_threshold", torch.zeros(()))
            if cfg.presence_detector:
                plain = dataclasses.replace(cfg, presence_channel=False, presence_detector=False, presence_edge=False)
                self.presence_net = CAVPVideoEncoder(plain)
                if cfg.material_channel:
                    self.presence_material_head = nn.Linear(cfg.embed_dim, cfg.material_channel + 1)
                if cfg.presence_edge:
                    self.presence_edge_net = CAVPVideoEncoder(plain)
                    self.presence_edge_head = nn.Linear(cfg.embed_dim, cfg.presence_slots)
                    self.register_buffer("presence_edge_threshold", torch.zeros(()))
                    self.register_buffer("presence_edge_window_threshold", torch.zeros(()))
        self.eval()

    # -- mode -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "CAVPVideoEncoder":
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    # -- loading ----------------------------------------------------------------------------
    def load_checkpoint_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load a CAVP checkpoint (full ``CAVP_Inference`` state_dict or just the video branch).

        ``spec_encoder.*`` and ``logit_scale`` are ignored by name; with ``strict`` every
        video-branch key must be present with the right shape.
        """
        sd = select_video_branch(state_dict)
        if not sd:
            raise ValueError("CAVP checkpoint has no 'video_encoder.*' / 'video_project_head.*' keys; "
                             "is this a Diff-Foley CAVP checkpoint?")
        own = self.state_dict()
        bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
               for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"CAVP checkpoint shapes do not match {self.cfg} (first: {bad[0]}); "
                             f"{len(bad)} mismatched tensors")
        return self.load_state_dict(sd, strict=strict)

    # -- forward ----------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        c = self.cfg.in_channels
        if video.dim() != 5 or video.shape[2] != c:
            raise ValueError(f"CAVP expects video (B, T, {c}, H, W) ({self.cfg.subframes} RGB snapshot(s) "
                             f"per frame), got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"CAVP expects float video in [0, 1], got dtype {video.dtype}")

    def backbone(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, C, H, W) in [0, 1] → pooled backbone output (B, feat_dim, T, 1, 1)."""
        self._check_video(video)
        return self.video_encoder(video.permute(0, 2, 1, 3, 4))

    def backbone_stages(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """video (B, T, C, H, W) → every stage output (B, C, T, h, w) and ``pooled``."""
        self._check_video(video)
        return self.video_encoder.forward_stages(video.permute(0, 2, 1, 3, 4))

    def head(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, feat_dim, T, 1, 1) → (B, T, embed_dim), L2-normalised per frame if ``normalize``."""
        b, c, t = pooled.shape[:3]
        x = self.video_project_head(pooled.reshape(b, c, t).permute(0, 2, 1))
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, video: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """video (B, T, C, H, W) float in [0, 1] → features (B, T, embed_dim); C = 3, or
        3 * ``cfg.subframes`` when each frame stacks several RGB snapshots (oldest first).

        The frames of each batch item form one clip (temporal zero padding at its edges).
        """
        return self.head(self.backbone(video), normalize)

    def presence_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised features (..., embed_dim) → the presence head's logits (..., presence_slots)
        that an onset starts in each slot of the frame (one slot: an impact in the frame). Only
        with ``cfg.presence_channel``."""
        if not self.cfg.presence_channel:
            raise RuntimeError("this CAVP has no presence head (CAVPConfig.presence_channel is off)")
        return self.presence_head(feats)

    def window_presence_logits(self, video: torch.Tensor, feats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video (B, F, C, H, W) in [0, 1], each window one clip -> the presence logits (B, F, slots)
        that :meth:`condition` decides on: ``presence_edge_net``'s with ``cfg.presence_edge``, else
        the detector's, else the head's on ``feats`` (the window's features, computed here when not
        given)."""
        if not self.cfg.presence_channel:
            raise RuntimeError("this CAVP has no presence head (CAVPConfig.presence_channel is off)")
        if self.cfg.presence_edge:
            return self.presence_edge_head(self.presence_edge_net(video, normalize=True))
        if self.cfg.presence_detector:
            return self.presence_logits(self.presence_net(video, normalize=True))
        return self.presence_logits(self.forward(video, normalize=True) if feats is None else feats)

    def condition(self, video: torch.Tensor) -> torch.Tensor:
        """What the generator is conditioned on: video (B, T, C, H, W) in [0, 1] → (B, T,
        ``cfg.condition_dim``): the L2-normalised features, and with ``cfg.presence_channel``
        ``cfg.presence_slots`` more channels, 1.0 where the slot's presence logit exceeds the
        threshold, else 0.0. Each window is one clip, its newest frame last: how a stream reads the
        frames it has; with ``cfg.presence_edge`` the edge detector decides, the newest frame at
        ``presence_edge_threshold`` and the others at ``presence_edge_window_threshold``, else one
        threshold (``presence_threshold``) for every frame. With ``cfg.material_channel`` the detector
        (``presence_net``) decides the slots and, in M more channels, the struck material."""
        feats = self.forward(video, normalize=True)
        if not self.cfg.presence_channel:
            return feats
        if self.cfg.material_channel:
            said = self.presence_net(video, normalize=True)
            return self._with_presence(feats, self.presence_logits(said), self.presence_material_head(said))
        logits = self.window_presence_logits(video, feats=feats)
        if not self.cfg.presence_edge:
            return self._with_presence(feats, logits)
        said = torch.cat([logits[..., :-1, :] > self.presence_edge_window_threshold,
                          logits[..., -1:, :] > self.presence_edge_threshold], dim=-2)
        return torch.cat([feats, said.to(feats.dtype)], dim=-1)

    @torch.no_grad()
    def extract_condition(self, frames: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """frames (T, C, H, W) in [0, 1] → (T, ``cfg.condition_dim``), chunked like :meth:`extract`:
        the generator's condition (:meth:`condition`) of a whole clip."""
        feats = self.extract(frames, chunk_frames)
        if not self.cfg.presence_channel:
            return feats
        if self.cfg.material_channel:
            said = self.presence_net.extract(frames, chunk_frames)
            return self._with_presence(feats, self.presence_logits(said), self.presence_material_head(said))
        return self._with_presence(feats, self.extract_presence_logits(frames, chunk_frames, feats))

    @torch.no_grad()
    def extract_presence_logits(self, frames: torch.Tensor, chunk_frames: Optional[int] = None,
                                feats: Optional[torch.Tensor] = None, edge: bool = False) -> torch.Tensor:
        """frames (T, C, H, W) in [0, 1] → the presence head's logits (T, presence_slots) of a whole
        clip, from the detector network's features with ``cfg.presence_detector``, else from the
        CAVP's (``feats``, this clip's :meth:`extract`, when already at hand); ``edge``: the edge
        detector's (``cfg.presence_edge``), as it reads a whole clip."""
        if edge:
            if not self.cfg.presence_edge:
                raise RuntimeError("this CAVP has no edge detector (CAVPConfig.presence_edge is off)")
            return self.presence_edge_head(self.presence_edge_net.extract(frames, chunk_frames))
        if self.cfg.presence_detector:
            feats = self.presence_net.extract(frames, chunk_frames)
        elif feats is None:
            feats = self.extract(frames, chunk_frames)
        return self.presence_logits(feats)

    def _with_presence(self, feats: torch.Tensor, logits: torch.Tensor,
                       material_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(..., embed_dim) normalised features, the presence logits (..., slots) and with
        ``cfg.material_channel`` the material head's logits (..., M + 1) → (..., condition_dim)."""
        said = (logits > self.presence_threshold).to(feats.dtype)
        if material_logits is None:
            return torch.cat([feats, said], dim=-1)
        return torch.cat([feats, said, material_one_hot(material_logits)], dim=-1)

    @torch.no_grad()
    def extract(self, frames: torch.Tensor, chunk_frames: Optional[int] = None,
                normalize: bool = True) -> torch.Tensor:
        """frames (T, C, H, W) in [0, 1] (C = ``cfg.in_channels``: 3, or 3 per stacked snapshot)
        → (T, embed_dim), like the reference extractor.

        Consecutive chunks of ``chunk_frames`` (default ``cfg.chunk_frames`` = 40) are encoded
        independently as separate clips; a trailing partial chunk is its own shorter clip.
        """
        if frames.dim() != 4 or frames.shape[1] != self.cfg.in_channels:
            raise ValueError(f"CAVP.extract expects frames (T, {self.cfg.in_channels}, H, W), got {tuple(frames.shape)}")
        chunk = chunk_frames or self.cfg.chunk_frames
        if chunk <= 0:
            raise ValueError(f"chunk_frames must be positive, got {chunk}")
        if frames.shape[0] == 0:
            return frames.new_zeros(0, self.cfg.embed_dim)
        outs = [self.forward(frames[s:s + chunk].unsqueeze(0), normalize)[0]
                for s in range(0, frames.shape[0], chunk)]
        return torch.cat(outs, dim=0)


def material_one_hot(material_logits: torch.Tensor) -> torch.Tensor:
    """The material channels of a decision: logits (..., M + 1), the last class "no impact" →
    float (..., M), 1.0 at the most likely material, all zero where "no impact" wins."""
    m = material_logits.shape[-1] - 1
    return F.one_hot(material_logits.argmax(-1), m + 1)[..., :m].to(material_logits.dtype)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in module.parameters())
