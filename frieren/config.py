"""Typed configuration for every Frieren component, and the named presets.

Field names follow the reference constructors' keyword arguments, so a reference
JSON config maps onto these dataclasses without renaming. Configs are frozen:
library code takes them as typed objects and never parses dicts itself; only
entry points (CLI, bundle loader, tests) build them from JSON via ``from_dict``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Tuple, Type, TypeVar

T = TypeVar("T")

# The Stable-Diffusion / Diff-Foley latent scale that Frieren inherits (FRIEREN_SPEC §2.5).
LATENT_SCALE_FACTOR = 0.18215


def _coerce(value: Any) -> Any:
    """Turn JSON lists (possibly nested) into tuples so configs stay hashable."""
    if isinstance(value, list):
        return tuple(_coerce(v) for v in value)
    return value


def config_from_dict(cls: Type[T], data: Mapping[str, Any], *, strict: bool = False) -> T:
    """Build a frozen config dataclass from a mapping.

    Unknown keys are ignored unless ``strict`` (reference JSON files carry extra
    keys such as ``monitor``); nested dataclass fields are built recursively.
    """
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if strict and unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        sub = _nested_type(cls, name)
        if sub is not None and isinstance(value, Mapping):
            value = config_from_dict(sub, value, strict=strict)
        elif value is not None:
            value = _coerce(value)
        kwargs[name] = value
    return cls(**kwargs)


def _nested_type(cls: type, name: str) -> Optional[type]:
    hints = {
        "Preset": {
            "mel": MelConfig, "vae": VAEConfig, "estimator": EstimatorConfig,
            "cond": CondConfig, "cavp": CAVPConfig, "vocoder": VocoderConfig,
            "geometry": WindowGeometry, "sampling": SamplingConfig,
        }
    }
    return hints.get(cls.__name__, {}).get(name)


def config_to_dict(cfg: Any) -> dict:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class MelConfig:
    """Log10-mel front end (FRIEREN_SPEC §1.1)."""
    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    clamp_min: float = 1e-5
    magnitude_eps: float = 1e-9

    @classmethod
    def from_reference_hparams(cls, hp: Mapping[str, Any]) -> "MelConfig":
        """Map the reference's NAT_mel hparams names onto this config."""
        return cls(sample_rate=hp["audio_sample_rate"], n_fft=hp["fft_size"],
                   win_length=hp["win_size"], hop_length=hp["hop_size"],
                   n_mels=hp["audio_num_mel_bins"], fmin=hp["fmin"], fmax=hp["fmax"])


@dataclass(frozen=True)
class VAEConfig:
    """1-D mel VAE (Make-An-Audio-2 AutoencoderKL; FRIEREN_SPEC §2). Names follow ``ddconfig``."""
    embed_dim: int = 20
    double_z: bool = True
    in_channels: int = 80
    out_ch: int = 80
    z_channels: int = 20
    kernel_size: int = 5
    ch: int = 384
    ch_mult: Tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_layers: Tuple[int, ...] = (3,)
    down_layers: Tuple[int, ...] = (0,)
    dropout: float = 0.0

    @classmethod
    def from_reference(cls, params: Mapping[str, Any]) -> "VAEConfig":
        """From the reference ``AutoencoderKL(embed_dim=..., ddconfig={...})`` kwargs."""
        merged = dict(params.get("ddconfig", {}))
        merged["embed_dim"] = params["embed_dim"]
        return config_from_dict(cls, merged)


@dataclass(frozen=True)
class EstimatorConfig:
    """ChannelConcatDiT vector-field estimator (FRIEREN_SPEC §4).

    ``latents_per_frame`` is the length regulator's nearest-upsampling factor
    (8 in the reference: one visual frame covers 8 latent frames).
    """
    in_channels: int = 20
    context_dim: int = 768
    hidden_size: int = 576
    num_heads: int = 8
    depth: int = 4
    max_len: int = 1000
    latents_per_frame: int = 8


@dataclass(frozen=True)
class CondConfig:
    """Condition encoder: one Linear(origin_dim -> embed_dim) (FRIEREN_SPEC §3.3)."""
    origin_dim: int = 512
    embed_dim: int = 768


@dataclass(frozen=True)
class CAVPConfig:
    """CAVP video branch: SlowOnly 3D ResNet-50 + Linear head (FRIEREN_SPEC §3.2)."""
    depth: int = 50  # the official layout; 26 and 14 (2 / 1 blocks per stage) for presets trained here
    base_channels: int = 64
    embed_dim: int = 512
    image_size: int = 224
    chunk_frames: int = 40  # the reference extractor's clip length ("Don't change it")
    # Per stage (layer1..layer4): 1 makes conv1 of every block a (3,1,1) temporal conv.
    # The official SlowOnly inflates only layer3 and layer4 (checkpoint shapes depend on it).
    inflate: Tuple[int, int, int, int] = (0, 0, 1, 1)
    # RGB snapshots stacked on the channel axis of each visual frame (WindowGeometry.subframes):
    # the stem conv takes 3 * subframes channels. 1 (the official model): one RGB frame.
    subframes: int = 1
    # An extension for presets trained here (off in the official model): a linear presence head
    # on each frame's feature says whether an impact starts in that frame, and its decision
    # (0/1 at a threshold chosen on validation clips) is appended to the feature as one more
    # condition channel, so the generator is told where to place a sound, not only shown it.
    presence_channel: bool = False
    # With ``presence_channel``: the decision's channels, one per equal slot of the frame's period
    # (1: an impact starts in the frame; the geometry's latents_per_frame: in which latent an onset
    # starts). More than one slot comes with a head fitted on the frozen features
    # (frieren.training.presence), not the CAVP stage's.
    presence_slots: int = 1
    # With ``presence_channel``: the head reads the features of a network of its own (the video
    # branch's architecture, fine-tuned from it on the slot labels: ``presence_net``), not the
    # generator's features; the condition's features stay the CAVP's.
    presence_detector: bool = False
    # With ``presence_detector``: a second detector for windows read as a stream reads them
    # (``presence_edge_net`` and ``presence_edge_head``, the detector fine-tuned further with the
    # loss of each window's newest frame, the frame a stream without look-ahead emits and reads with
    # nothing after it) and its thresholds (``presence_edge_threshold`` for a window's newest frame,
    # ``presence_edge_window_threshold`` for the others). :meth:`CAVPVideoEncoder.condition` (the
    # streaming path) reads it; a whole clip (offline) is read by ``presence_net`` as before.
    presence_edge: bool = False
    # With ``presence_channel`` and ``presence_detector`` (else 0): M material channels more (M =
    # the number of material classes; 0 = none). The detector network also carries
    # ``presence_material_head`` (Linear embed_dim -> M + 1: which material's impact starts in the
    # frame, or none, the last class), and the condition appends its decision one-hot (all zero
    # where it says none), so the generator is told which material strikes, not only shown it.
    material_channel: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inflate", tuple(int(bool(v)) for v in self.inflate))
        if int(self.presence_slots) < 1:
            raise ValueError(f"CAVPConfig.presence_slots must be >= 1, got {self.presence_slots}")
        if self.presence_channel and self.presence_edge and not self.presence_detector:
            raise ValueError("CAVPConfig.presence_edge is a second presence detector; it needs presence_detector")
        if int(self.material_channel) < 0 or int(self.material_channel) == 1:
            raise ValueError(f"CAVPConfig.material_channel counts material classes (0 = off, else >= 2), "
                             f"got {self.material_channel}")
        if not (self.presence_channel and self.presence_detector):
            # like presence_slots and the detector flags, meaningless without the detector: a config
            # that turns the presence channel off (the plain video branch) drops it too
            object.__setattr__(self, "material_channel", 0)
        if int(self.material_channel) and self.presence_edge:
            raise ValueError("CAVPConfig.material_channel and presence_edge together are not supported: the "
                             "newest-frame detector has no material head; turn one of them off")
        if len(self.inflate) != 4:
            raise ValueError(f"CAVPConfig.inflate needs one flag per stage (4), got {self.inflate}")
        if int(self.subframes) < 1:
            raise ValueError(f"CAVPConfig.subframes must be >= 1, got {self.subframes}")

    @property
    def in_channels(self) -> int:
        """Channels of one visual frame at the CAVP input (3 per RGB snapshot)."""
        return 3 * int(self.subframes)

    @property
    def condition_dim(self) -> int:
        """Width of the per-frame condition the CAVP hands the generator: the feature, plus the
        presence decision (``presence_slots`` channels) when ``presence_channel``, plus the struck
        material's one-hot (``material_channel`` channels)."""
        return (int(self.embed_dim) + (int(self.presence_slots) if self.presence_channel else 0)
                + int(self.material_channel))


@dataclass(frozen=True)
class VocoderConfig:
    """BigVGAN generator (FRIEREN_SPEC §7). Names follow ``args.yml``."""
    num_mels: int = 80
    upsample_rates: Tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: Tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock: str = "1"
    resblock_kernel_sizes: Tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: Tuple[Tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    activation: str = "snakebeta"
    snake_logscale: bool = True


@dataclass(frozen=True)
class WindowGeometry:
    """How one model window maps visual frames to latents, mels and samples.

    frames_per_window visual frames -> frames_per_window * latents_per_frame latent
    frames -> x mel_per_latent mel frames -> x hop_length samples. Visual frames are
    sampled on the audio clock (DESIGN §3.1): one frame period is the audio span of
    one visual frame, ``window_samples / sample_rate / frames_per_window`` seconds.

    ``subframes`` K > 1 makes each visual frame a stack of K camera snapshots taken every
    ``samples_per_frame / K`` samples up to the frame's instant (oldest first, the last one at
    the instant itself), stacked on the channel axis: (3K, S, S). The frame rate of the
    features, and so the latency, stays the same; the CAVP sees the motion between its frames
    (an impact between two 128 ms frames shows in the snapshots of the next one).
    """
    frames_per_window: int = 32
    latents_per_frame: int = 8
    mel_per_latent: int = 2
    hop_length: int = 256
    sample_rate: int = 16000
    subframes: int = 1

    def __post_init__(self) -> None:
        k = int(self.subframes)
        if k < 1 or self.samples_per_frame % k:
            raise ValueError(f"WindowGeometry.subframes={self.subframes} must be >= 1 and divide the "
                             f"{self.samples_per_frame} samples of a visual frame")

    @property
    def subframe_offsets(self) -> Tuple[int, ...]:
        """Sample offsets (<= 0) of a visual frame's snapshots from its instant, oldest first."""
        k = int(self.subframes)
        step = self.samples_per_frame // k
        return tuple(-(k - 1 - i) * step for i in range(k))

    def snapshot_instants_s(self, num_frames: int):
        """Seconds of the snapshots of visual frames ``0 .. num_frames - 1``: float64
        (num_frames, subframes), frame i's last one at ``i * frame_period_s``; instants before
        0 are clamped to 0 (the first frame repeated, as at any clip's start)."""
        import numpy as np

        base = np.arange(int(num_frames), dtype=np.int64)[:, None] * self.samples_per_frame
        samples = np.maximum(base + np.asarray(self.subframe_offsets, dtype=np.int64)[None, :], 0)
        return samples.astype(np.float64) / self.sample_rate

    @property
    def latent_frames(self) -> int:
        return self.frames_per_window * self.latents_per_frame

    @property
    def mel_frames(self) -> int:
        return self.latent_frames * self.mel_per_latent

    @property
    def window_samples(self) -> int:
        return self.mel_frames * self.hop_length

    @property
    def samples_per_frame(self) -> int:
        """Audio samples covered by one visual frame (4096 for the official preset)."""
        return self.latents_per_frame * self.mel_per_latent * self.hop_length

    @property
    def samples_per_latent(self) -> int:
        return self.mel_per_latent * self.hop_length

    @property
    def frame_period_s(self) -> float:
        return self.samples_per_frame / self.sample_rate

    @property
    def visual_fps(self) -> float:
        return self.sample_rate / self.samples_per_frame


@dataclass(frozen=True)
class SamplingConfig:
    """Default sampler settings of a preset (FRIEREN_SPEC §5.2, §6.4)."""
    steps: int = 25
    cfg_scale: float = 4.5
    solver: str = "euler"
    reference_time_grid: bool = True  # reproduce torchdyn's float32 grid + long() truncation


@dataclass(frozen=True)
class Preset:
    """Everything needed to build a model stack. ``vocoder=None`` means Griffin-Lim."""
    name: str
    mel: MelConfig = field(default_factory=MelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    cavp: CAVPConfig = field(default_factory=CAVPConfig)
    vocoder: Optional[VocoderConfig] = field(default_factory=VocoderConfig)
    geometry: WindowGeometry = field(default_factory=WindowGeometry)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    scale_factor: float = LATENT_SCALE_FACTOR

    def __post_init__(self) -> None:
        g = self.geometry
        problems = []
        if self.estimator.latents_per_frame != g.latents_per_frame:
            problems.append(f"estimator.latents_per_frame={self.estimator.latents_per_frame} "
                            f"!= geometry.latents_per_frame={g.latents_per_frame}")
        if self.estimator.in_channels != self.vae.embed_dim:
            problems.append(f"estimator.in_channels={self.estimator.in_channels} != vae.embed_dim={self.vae.embed_dim}")
        if self.cond.embed_dim != self.estimator.context_dim:
            problems.append(f"cond.embed_dim={self.cond.embed_dim} != estimator.context_dim={self.estimator.context_dim}")
        if self.cond.origin_dim != self.cavp.condition_dim:
            problems.append(f"cond.origin_dim={self.cond.origin_dim} != cavp.condition_dim={self.cavp.condition_dim} "
                            f"(embed_dim {self.cavp.embed_dim}"
                            f"{f' + {self.cavp.presence_slots} presence channel(s)' if self.cavp.presence_channel else ''}"
                            f"{f' + {self.cavp.material_channel} material channels' if self.cavp.material_channel else ''})")
        if self.mel.hop_length != g.hop_length or self.mel.sample_rate != g.sample_rate:
            problems.append("mel hop/sample_rate disagree with geometry")
        if self.cavp.subframes != g.subframes:
            problems.append(f"cavp.subframes={self.cavp.subframes} != geometry.subframes={g.subframes}")
        if g.latent_frames + 1 > self.estimator.max_len:
            problems.append(f"window of {g.latent_frames} latents exceeds max_len={self.estimator.max_len}")
        if problems:
            raise ValueError(f"inconsistent preset {self.name!r}: " + "; ".join(problems))


def with_subframes(preset: Preset, subframes: int) -> Preset:
    """``preset`` whose visual frames stack ``subframes`` snapshots (geometry and CAVP stem)."""
    return dataclasses.replace(preset, geometry=dataclasses.replace(preset.geometry, subframes=int(subframes)),
                               cavp=dataclasses.replace(preset.cavp, subframes=int(subframes)))


def with_presence_channel(preset: Preset, on: bool = True, slots: int = 1, detector: bool = False,
                          edge: bool = False, materials: int = 0) -> Preset:
    """``preset`` whose CAVP appends its presence decision to each frame's feature (``on``), one
    channel per slot of the frame (``slots``), the condition encoder taking those inputs too, the
    head reading a detector network of its own (``detector``), stream windows decided by a second
    detector with thresholds of its own (``edge``), the detector also naming the struck material in
    ``materials`` channels (0 = not); ``on=False`` removes it."""
    cavp = dataclasses.replace(preset.cavp, presence_channel=bool(on), presence_slots=int(slots) if on else 1,
                               presence_detector=bool(detector) and bool(on), presence_edge=bool(edge) and bool(on),
                               material_channel=int(materials) if on and detector else 0)
    cond = dataclasses.replace(preset.cond, origin_dim=cavp.condition_dim)
    return dataclasses.replace(preset, cavp=cavp, cond=cond)


def _official(name: str, steps: int) -> Preset:
    return Preset(name=name, sampling=SamplingConfig(steps=steps, cfg_scale=4.5))


def _tiny() -> Preset:
    """Our small preset for tests and CPU demos (same structure, smaller everything).

    Geometry: 16 visual frames at 7.8125 fps (128 ms each) -> 64 latents -> 128 mels
    -> 32 768 samples (2.048 s). A higher visual rate than the official 3.9 fps gives
    finer timing and a 128 ms hop; the shorter window keeps a CPU tick cheap.
    Estimator hidden size 64 (was 96): measured on the shared 2-core CPU, a B=32 CFM
    training step costs 0.20 s instead of 0.37 s, which is what lets the shipped model's
    whole recipe (CFM, reflow, distillation) fit in 45 minutes; it also halves inference.
    VAE: 16 latent channels, width 64 (was 8 and 32). The narrow VAE was the ceiling of the
    whole model: a ground-truth mel sent through it (encode, decode, Griffin-Lim) kept onset
    F1 +-125 ms 0.81 and material accuracy 0.59 on held-out synthetic clips; this one keeps
    0.85 and 0.78 (16 clips, same training steps; a Griffin-Lim of the unchanged mel: 0.89, 0.95).
    """
    geometry = WindowGeometry(frames_per_window=16, latents_per_frame=4)
    return Preset(
        name="tiny",
        vae=VAEConfig(embed_dim=16, z_channels=16, ch=64, ch_mult=(1, 1, 2), num_res_blocks=1),
        estimator=EstimatorConfig(in_channels=16, context_dim=128, hidden_size=64, num_heads=4,
                                  depth=2, max_len=256, latents_per_frame=4),
        cond=CondConfig(origin_dim=128, embed_dim=128),
        cavp=CAVPConfig(depth=50, base_channels=8, embed_dim=128, image_size=64, chunk_frames=40),
        vocoder=None,
        geometry=geometry,
        sampling=SamplingConfig(steps=1, cfg_scale=4.5),
    )


PRESETS = {
    "frieren-16k": lambda: _official("frieren-16k", steps=25),
    "frieren-16k-1step": lambda: _official("frieren-16k-1step", steps=1),
    "tiny": _tiny,
}


def get_preset(name: str) -> Preset:
    """The one preset factory; fails loudly on an unknown name."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
