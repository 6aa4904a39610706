"""`frieren eval`: the quality/speed table (like Table 2 of the Frieren paper) on held-out scenes.

Held-out clips: synthetic scenes with seeds ``seed0 .. seed0 + clips - 1`` (default 900000;
the recipe trains on seeds from 1000 up). The material classifier is trained on the
ground-truth audio of another disjoint range (``seed0 + 50000 ...``). Each bundle's provenance
names the synthetic seeds it was trained on; the table states them, and a held-out or classifier
seed among them is refused (a model scored on its own training scenes says nothing).

Rows: one per (model, steps), every model at its bundle's CFG scale; plus two reference
rows: the ground-truth audio itself (the detector's and classifier's ceiling) and the
ground-truth mel through the bundle's vocoder (what the vocoder alone loses).

Columns, pooled over all clips:

* onset sync at ±45 ms and ±125 ms (:mod:`frieren.eval.sync`: spectral-flux onsets
  against the clips' ``impact`` and ``continuous_start`` events, closest-pair one-to-one
  matching): precision, recall and F1 from the summed counts; mean signed offset
  (generated - event, ms) over all matched pairs.
* material accuracy (:mod:`frieren.eval.materials`) at the ground-truth impact instants.
* FD between per-frame embeddings of generated and real audio (:mod:`frieren.eval.metrics`;
  the trained CAVP audio branch when its checkpoint exists, and a log-mel statistics
  embedding always).
* mel L1 to the ground truth.
* generation time per window: wall time of :meth:`OfflineGenerator.generate_frames` for a
  clip (CAVP, flow, VAE decoder, vocoder, crossfades) divided by its number of windows,
  averaged over the clips; one thread, CPU unless ``device`` says otherwise.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from frieren.eval.materials import MaterialClassifier, impact_features, impact_samples
from frieren.eval.metrics import NoAudioBranchError, frechet_distance, log_mel, make_embedding, mel_l1
from frieren.eval.sync import TOLERANCES_MS, sync_scores
from frieren.machine import machine_description

log = logging.getLogger(__name__)

ONSET_KINDS = ("impact", "continuous_start")
CLASSIFIER_SEED_OFFSET = 50000


@dataclass(frozen=True)
class ModelSpec:
    name: str                 # e.g. "teacher", "reflow", "reflow+distill"
    bundle: Optional[str]     # None: the shipped default bundle
    steps: Sequence[int]


@dataclass(frozen=True)
class EvalConfig:
    models: Sequence[ModelSpec]
    clips: int = 24
    seconds: float = 8.0
    seed0: int = 900000
    classifier_clips: int = 60
    fd_embeddings: Sequence[str] = ("cavp", "logmel")
    cavp_checkpoint: Optional[str] = "runs/default/cavp/final.pt"
    device: str = "cpu"
    vocoder_row: bool = True
    # Diagnostic rows: each model with the presence channel again, the channel set to the world's
    # truth (what a perfect presence head would say; the generator's ceiling given one).
    presence_truth: bool = False


@dataclass
class HeldOutClip:
    seed: int
    frames: torch.Tensor          # (N, 3K, S, S) float in [0, 1], on the audio clock (K snapshots each)
    audio: np.ndarray             # ground truth
    onsets: List[int]             # event samples (ONSET_KINDS)
    impacts: List[int]            # unambiguous impact samples
    materials: List[str]          # their materials
    events: tuple = ()            # the world's full event list (synth Events, time order)
    extra: Dict[str, object] = field(default_factory=dict)


def render_clips(seeds: Sequence[int], seconds: float, preset) -> List[HeldOutClip]:
    from frieren.synth import SceneConfig, render_clip
    from frieren.training.data import synthetic_clip_frames

    g = preset.geometry
    scene = SceneConfig(duration_s=seconds, sample_rate=g.sample_rate)
    out = []
    for seed in seeds:
        clip = render_clip(seed, scene)
        n = max(1, math.ceil(len(clip.audio) / g.samples_per_frame))
        frames = torch.from_numpy(synthetic_clip_frames(clip, preset, n)).float() / 255.0
        imp = impact_samples(clip.events, scene.materials, sample_rate=g.sample_rate)
        out.append(HeldOutClip(seed, frames, clip.audio.astype(np.float32),
                               [e.sample for e in clip.events if e.kind in ONSET_KINDS],
                               [s for s, _ in imp], [m for _, m in imp], tuple(clip.events)))
    return out


def _truth_edit(clip: HeldOutClip, preset):
    """A ``condition_edit`` that sets the presence channels (and material channels, if any) of ``clip``'s
    condition to the world's truth."""
    from frieren.training.presence import truth_channels

    from frieren.synth import SceneConfig

    g, slots = preset.geometry, preset.cavp.presence_slots
    materials = SceneConfig().materials if preset.cavp.material_channel else ()
    if len(materials) != preset.cavp.material_channel:
        raise ValueError(f"the bundle has {preset.cavp.material_channel} material channels and the synthetic world "
                         f"{len(materials)} materials; --presence-truth cannot say its materials")
    width = slots + len(materials)

    def edit(cond: torch.Tensor) -> torch.Tensor:
        truth = truth_channels(clip.events, cond.shape[0], g.samples_per_frame, slots, g.sample_rate, materials)
        return torch.cat([cond[:, :-width], truth.to(cond)], 1)
    return edit


def reference_audio(gen, mel: torch.Tensor, through_vae: bool) -> np.ndarray:
    """A ground-truth log mel (n_mels, T) made audible by ``gen``'s (an OfflineGenerator) vocoder,
    first through its VAE (encode to the posterior mode, decode) when ``through_vae``: the
    generator's ceilings. -> (samples,) float32 in [-1, 1]; the VAE path keeps whole latent pairs."""
    stack = gen.stack
    x = mel[None].to(gen.device)
    with torch.no_grad():
        if through_vae:
            whole = 2 * stack.preset.geometry.mel_per_latent
            x = stack.decode(stack.encode_mel(x[..., :x.shape[-1] // whole * whole], sample=False))
        return gen._vocode_long(x)[0].float().clamp(-1, 1).cpu().numpy()


def train_material_classifier(seeds: Sequence[int], seconds: float, preset, frontend) -> MaterialClassifier:
    from frieren.synth import SceneConfig, render_clip

    scene = SceneConfig(duration_s=seconds, sample_rate=preset.geometry.sample_rate)
    feats, labels = [], []
    for seed in seeds:
        clip = render_clip(seed, scene)
        imp = impact_samples(clip.events, scene.materials, sample_rate=scene.sample_rate)
        if imp:
            feats.append(impact_features(log_mel(frontend, clip.audio), [s for s, _ in imp], preset.mel.hop_length))
            labels += [m for _, m in imp]
    log.info("material classifier: %d GT impacts from %d clips", len(labels), len(seeds))
    return MaterialClassifier.fit(np.concatenate(feats), labels, scene.materials)


class Scorer:
    """Scores lists of audio (one per held-out clip) against the ground truth."""

    def __init__(self, clips: List[HeldOutClip], preset, frontend, classifier: MaterialClassifier,
                 embeddings: Dict[str, object]) -> None:
        self.clips, self.preset, self.frontend = clips, preset, frontend
        self.classifier, self.embeddings = classifier, embeddings
        self.sr = preset.geometry.sample_rate
        self.gt_mels = [log_mel(frontend, c.audio) for c in clips]
        self.gt_emb = {k: np.concatenate([e(m) for m in self.gt_mels]) for k, e in embeddings.items()}

    def sync(self, audios: Sequence[np.ndarray], onsets: Sequence[Sequence[int]]) -> Dict[str, object]:
        """Pooled P/R/F1 and mean offset per tolerance of ``audios`` against ``onsets`` (per clip)."""
        row: Dict[str, object] = {}
        for tol in TOLERANCES_MS:
            det = ev = matched = 0
            off_sum = 0.0
            for a, o in zip(audios, onsets):
                s = sync_scores(a, self.sr, o, tolerances_ms=(tol,))[f"{int(tol)}ms"]
                det += s["detected"]
                ev += s["events"]
                matched += s["matched"]
                if s["matched"]:
                    off_sum += s["mean_offset_ms"] * s["matched"]
            p = matched / det if det else 0.0
            r = matched / ev if ev else 0.0
            key = f"{int(tol)}ms"
            row[f"precision_{key}"] = p
            row[f"recall_{key}"] = r
            row[f"f1_{key}"] = 2 * p * r / (p + r) if p + r else 0.0
            row[f"offset_ms_{key}"] = off_sum / matched if matched else None
        row["detected"], row["events"] = det, ev
        return row

    def score(self, audios: Sequence[np.ndarray], reference: bool = False) -> Dict[str, object]:
        row = self.sync(audios, [c.onsets for c in self.clips])
        mels = [log_mel(self.frontend, a[:len(c.audio)]) for a, c in zip(audios, self.clips)]
        feats = [impact_features(m, c.impacts, self.preset.mel.hop_length) for m, c in zip(mels, self.clips)
                 if c.impacts]
        labels = [lab for c in self.clips for lab in c.materials]
        row["material_acc"] = self.classifier.accuracy(np.concatenate(feats), labels) if feats else None
        row["material_confusion"] = self.classifier.confusion(np.concatenate(feats), labels) if feats else None
        row["impacts"] = len(labels)
        for k, emb in self.embeddings.items():
            row[f"fd_{k}"] = 0.0 if reference else frechet_distance(np.concatenate([emb(m) for m in mels]),
                                                                    self.gt_emb[k])
        row["mel_l1"] = float(np.mean([mel_l1(self.frontend, a, c.audio) for a, c in zip(audios, self.clips)]))
        return row


def run_eval(cfg: EvalConfig, progress: bool = True) -> Dict[str, object]:
    from frieren.audio import MelFrontend
    from frieren.bundles import DEFAULT_BUNDLE, load_model
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    t_start = time.perf_counter()
    stacks = {}
    for m in cfg.models:
        stacks[m.name] = load_model(m.bundle, device=cfg.device)
    preset = next(iter(stacks.values()))[0].preset
    for name, (st, _) in stacks.items():
        if st.preset.geometry != preset.geometry or st.preset.mel != preset.mel:
            raise ValueError(f"model {name!r} has another geometry/mel config than {cfg.models[0].name!r}")
    frontend = MelFrontend(preset.mel).eval()

    seeds = list(range(cfg.seed0, cfg.seed0 + cfg.clips))
    clf_seeds = list(range(cfg.seed0 + CLASSIFIER_SEED_OFFSET, cfg.seed0 + CLASSIFIER_SEED_OFFSET + cfg.classifier_clips))
    training = {name: training_data(info) for name, (_, info) in stacks.items()}
    check_held_out(training, seeds, clf_seeds)
    clips = render_clips(seeds, cfg.seconds, preset)
    classifier = train_material_classifier(clf_seeds, cfg.seconds, preset, frontend)
    embeddings = {}
    for kind in cfg.fd_embeddings:
        try:
            embeddings[kind] = make_embedding(kind, preset, cfg.cavp_checkpoint)
        except (FileNotFoundError, NoAudioBranchError) as error:
            log.warning("FD embedding %s skipped: %s", kind, error)
    scorer = Scorer(clips, preset, frontend, classifier, embeddings)

    rows: List[Dict[str, object]] = []
    gt = {"model": "ground truth", "steps": None, "cfg_scale": None, "nfe": None, "s_per_window": None}
    gt.update(scorer.score([c.audio for c in clips], reference=True))
    rows.append(gt)
    if cfg.vocoder_row:
        # References for the generator's ceilings: the real mel through the bundle's
        # vocoder, and through the bundle's VAE (encode to the posterior mode, decode) first.
        st0, info0 = next(iter(stacks.values()))
        gen0 = OfflineGenerator(st0, cfg.device)
        voc = [reference_audio(gen0, m, through_vae=False) for m in scorer.gt_mels]
        vae_voc = [reference_audio(gen0, m, through_vae=True) for m in scorer.gt_mels]
        for name, audios in (("GT mel + vocoder", voc), ("GT mel + VAE + vocoder", vae_voc)):
            row = {"model": name, "steps": None, "cfg_scale": None, "nfe": None, "s_per_window": None}
            row.update(scorer.score([np.pad(v[:len(c.audio)], (0, max(0, len(c.audio) - len(v))))
                                     for v, c in zip(audios, clips)]))
            rows.append(row)

    bundles = {}
    for spec in cfg.models:
        stack, info = stacks[spec.name]
        bundles[spec.name] = {"path": spec.bundle or f"shipped default ({DEFAULT_BUNDLE.parent.parent.name}/assets/default)",
                              "flow_stage": (info.provenance or {}).get("flow_stage") if info else None,
                              "default_steps": stack.preset.sampling.steps,
                              "cfg_scale": stack.preset.sampling.cfg_scale,
                              "training_data": training[spec.name]}
        gen = OfflineGenerator(stack, cfg.device)
        cfg_scale = stack.preset.sampling.cfg_scale
        for steps in spec.steps:
            audios, per_window = [], []
            for c in clips:
                t0 = time.perf_counter()
                res = gen.generate_frames(c.frames, len(c.audio),
                                          GenerateOptions(steps=steps, seed=c.seed, progress=False))
                per_window.append((time.perf_counter() - t0) / res.num_windows)
                audios.append(res.audio)
            row = {"model": spec.name, "steps": int(steps), "cfg_scale": cfg_scale,
                   "nfe": int(steps) * (2 if cfg_scale not in (None, 1.0) else 1),
                   "s_per_window": float(np.mean(per_window))}
            row.update(scorer.score(audios))
            rows.append(row)
            last_audios, last_row = audios, row
            if cfg.presence_truth and stack.preset.cavp.presence_channel:
                told = "presence and material channels" if stack.preset.cavp.material_channel else "presence channel"
                truth = {"model": f"{spec.name}, {told} = the world's truth", "steps": int(steps),
                         "cfg_scale": cfg_scale, "nfe": row["nfe"], "s_per_window": None}
                truth.update(scorer.score([gen.generate_frames(c.frames, len(c.audio),
                                                               GenerateOptions(steps=steps, seed=c.seed, progress=False),
                                                               condition_edit=_truth_edit(c, stack.preset)).audio
                                           for c in clips]))
                rows.append(truth)
            if progress:
                log.info("%s %d steps: F1@45 %.3f F1@125 %.3f mat %.3f %s mel L1 %.3f %.1f ms/window",
                         spec.name, steps, row["f1_45ms"], row["f1_125ms"], row["material_acc"] or float("nan"),
                         " ".join(f"FD[{k}] {row[f'fd_{k}']:.3f}" for k in embeddings),
                         row["mel_l1"], 1000 * row["s_per_window"])

    if len(clips) > 1 and rows[-1]["steps"] is not None:
        # Chance level of the sync metrics: the last model row's audio against another clip's events.
        ctl = {"model": f"control: {last_row['model']} {last_row['steps']}-step vs another clip's events",
               "steps": None, "cfg_scale": None, "nfe": None, "s_per_window": None, "material_acc": None,
               "impacts": None, "mel_l1": None, **{f"fd_{k}": None for k in embeddings}}
        ctl.update(scorer.sync(last_audios, [clips[(i + 1) % len(clips)].onsets for i in range(len(clips))]))
        rows.append(ctl)

    return {
        "rows": rows,
        "config": {
            "clips": cfg.clips, "seconds": cfg.seconds, "seeds": [seeds[0], seeds[-1]] if seeds else [],
            "classifier_seeds": [clf_seeds[0], clf_seeds[-1]] if clf_seeds else [],
            "classifier": classifier.as_dict(),
            "material_chance": _majority_rate([m for c in clips for m in c.materials]),
            "classifier_train_accuracy_note": "trained on GT audio only; 'ground truth' row = its held-out accuracy",
            "fd_embeddings": {k: getattr(e, "checkpoint", "parameter-free log-mel mean+std per visual frame")
                              for k, e in embeddings.items()},
            "onset_kinds": list(ONSET_KINDS), "tolerances_ms": list(TOLERANCES_MS),
            "device": cfg.device, "torch_threads": torch.get_num_threads(),
            "window_s": preset.geometry.frames_per_window * preset.geometry.frame_period_s,
            "bundles": bundles,
        },
        "environment": machine_description(),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def training_data(info) -> Optional[Dict[str, object]]:
    """The ``data`` record of a bundle's provenance (``kind``, ``clips``, ``seed0`` for synthetic
    data), or None when the bundle does not say (random weights, converted official weights)."""
    data = (getattr(info, "provenance", None) or {}).get("data")
    return dict(data) if isinstance(data, dict) else None


def _synthetic_seeds(data: Optional[Dict[str, object]]) -> Optional[range]:
    if not data or data.get("kind") != "synthetic" or data.get("clips") is None or data.get("seed0") is None:
        return None
    return range(int(data["seed0"]), int(data["seed0"]) + int(data["clips"]))


def _trained_seed_ranges(data: Optional[Dict[str, object]]) -> List[range]:
    """The synthetic seeds a bundle trained on: its CAVP's clips and, when the flow stages had clips
    of their own (``frieren train --flow-clips``), those (provenance ``data.flow``)."""
    parts = [data, (data or {}).get("flow")]
    return [r for r in (_synthetic_seeds(d) if isinstance(d, dict) else None for d in parts) if r is not None]


def check_held_out(training: Dict[str, Optional[Dict[str, object]]], seeds: Sequence[int],
                   classifier_seeds: Sequence[int]) -> None:
    """Raise ValueError if a held-out or classifier seed is one a model was trained on."""
    for name, data in training.items():
        for trained in _trained_seed_ranges(data):
            for what, used in (("held-out", seeds), ("material-classifier", classifier_seeds)):
                clash = [s for s in used if s in trained]
                if clash:
                    raise ValueError(
                        f"{what} seed {clash[0]} is one model {name!r} was trained on (its bundle's provenance: "
                        f"synthetic seeds {trained.start}..{trained.stop - 1}); pass --seed0 so that seeds "
                        f"seed0.. and seed0+{CLASSIFIER_SEED_OFFSET}.. lie outside that range")


def describe_training(bundles: Dict[str, Dict[str, object]]) -> str:
    """'training used seeds 1000–1599' (one phrase per distinct training set), from the bundles' provenance."""
    phrases = []
    for b in bundles.values():
        data = b.get("training_data")
        ranges = _trained_seed_ranges(data)
        if ranges:
            phrase = f"seeds {ranges[0].start}–{ranges[0].stop - 1}"
            if len(ranges) > 1:
                phrase += f" (CAVP, VAE) and {ranges[1].start}–{ranges[1].stop - 1} (flow stages)"
        elif data:
            phrase = f"{data.get('clips', '?')} {data.get('kind', 'other')} clips"
        else:
            phrase = "unknown data (no provenance)"
        if phrase not in phrases:
            phrases.append(phrase)
    return "training used " + ("; ".join(phrases) if phrases else "unknown data")


def _majority_rate(labels: Sequence[str]) -> Optional[float]:
    """Accuracy of always answering the most frequent material (the chance level)."""
    if not labels:
        return None
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / len(labels))


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------

def _fmt(v, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def to_markdown(result: Dict[str, object]) -> str:
    rows = result["rows"]
    fds = [k[3:] for k in rows[0] if k.startswith("fd_")]
    cfg = result["config"]
    head = ["Model", "Steps", "CFG", "NFE", "P ±45", "R ±45", "F1 ±45", "Offset ±45 (ms)", "F1 ±125",
            "Offset ±125 (ms)", "Material acc"] + [f"FD ({k})" for k in fds] + ["Mel L1", "Time / window (ms)"]
    lines = [f"`{result['command']}`", ""] if result.get("command") else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt(r["steps"], "d"), _fmt(r["cfg_scale"], "g"), _fmt(r["nfe"], "d"),
                 _fmt(r["precision_45ms"]), _fmt(r["recall_45ms"]), _fmt(r["f1_45ms"]),
                 _fmt(r["offset_ms_45ms"], "+.1f"), _fmt(r["f1_125ms"]), _fmt(r["offset_ms_125ms"], "+.1f"),
                 _fmt(r["material_acc"])] + [_fmt(r[f"fd_{k}"], ".4f" if k == "cavp" else ".2f") for k in fds] + [
                 _fmt(r["mel_l1"]), _fmt(None if r["s_per_window"] is None else 1000 * r["s_per_window"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    r0 = rows[0]
    notes = [
        "",
        f"{cfg['clips']} held-out synthetic clips of {cfg['seconds']:g} s (seeds {cfg['seeds'][0]}–{cfg['seeds'][-1]}; "
        f"{describe_training(cfg.get('bundles', {}))}), {r0['events']} onset events, {r0['impacts']} isolated impacts for the material "
        f"classifier (trained on GT audio of seeds {cfg['classifier_seeds'][0]}–{cfg['classifier_seeds'][-1]}; "
        f"chance = majority class = {_fmt(cfg.get('material_chance'))}).",
        f"Window {cfg['window_s']:.3f} s; time per window = wall time of the whole offline pipeline per window "
        f"on {cfg['device']}, {cfg['torch_threads']} thread(s).",
        "FD embeddings: " + "; ".join(f"{k}: {v}" for k, v in cfg["fd_embeddings"].items()) + ".",
        "Reference rows: 'ground truth' scores the real audio (detector/classifier ceiling; FD and L1 are 0 by "
        "definition); 'GT mel + vocoder' is the real mel through the bundle's vocoder, 'GT mel + VAE + "
        "vocoder' through its VAE first (the generator's ceiling); 'control' scores the "
        "last model's audio against the next clip's events (the sync metrics' chance level).",
    ]
    return "\n".join(lines + notes) + "\n"


PLOT_METRICS = (("f1_45ms", "onset F1 ±45 ms"), ("f1_125ms", "onset F1 ±125 ms"), ("material_acc", "material accuracy"),
                ("fd_cavp", "FD (CAVP audio)"), ("fd_logmel", "FD (log-mel stats)"), ("mel_l1", "mel L1"),
                ("s_per_window", "s / window"))


def plot(result: Dict[str, object], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = result["rows"]
    metrics = [(k, t) for k, t in PLOT_METRICS if k in rows[0]]
    cols = 4
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in rows if r["steps"] is not None))
    refs = [r for r in rows if r["steps"] is None]
    for ax, (key, title) in zip(axes.flat, metrics):
        for name in models:
            pts = sorted((r["steps"], r[key]) for r in rows if r["model"] == name and r[key] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        for ref, (color, style) in zip(refs, (("k", "--"), ("k", ":"), ("0.6", "--"))):
            trivial = ref["model"] == "ground truth" and (key.startswith("fd_") or key == "mel_l1")
            if ref.get(key) is not None and not trivial:
                label = "control (other clip's events)" if ref["model"].startswith("control") else ref["model"]
                ax.axhline(ref[key], color=color, linestyle=style, linewidth=1, label=label)
        if key == "material_acc" and result["config"].get("material_chance") is not None:
            ax.axhline(result["config"]["material_chance"], color="0.6", linestyle="-.", linewidth=1,
                       label="chance (majority material)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["steps"] for r in rows if r["steps"] is not None}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    legend = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: Dict[str, object], out_dir: Path, *, png: bool = True) -> Dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "table.md", "json": out_dir / "table.json"}
    paths["md"].write_text(to_markdown(result))
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    if png:
        paths["png"] = plot(result, out_dir / "metrics_vs_steps.png")
    return paths
