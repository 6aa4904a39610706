"""The shared state of one training ``--run-dir``: data, caches and the finished stages' outputs."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional, Tuple

import torch

from frieren.training.atomic_io import atomic_torch_save, write_json_atomic
from frieren.training.hparams import STAGES, StageHParams

log = logging.getLogger("frieren.train")


class Run:
    """The data, caches and stage outputs of one ``--run-dir``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from frieren.config import get_preset
        from frieren.training.ddp import setup

        self.args = args
        self.dir = Path(args.run_dir)
        self.preset = get_preset(args.preset)
        if getattr(args, "subframes", 1) != self.preset.geometry.subframes:
            from frieren.config import with_subframes
            self.preset = with_subframes(self.preset, args.subframes)
        self.ctx = setup(args.device)
        import dataclasses
        est = self._recorded_size(args, "estimator", (("hidden_size", "estimator_hidden"), ("depth", "estimator_depth")))
        if est:
            self.preset = dataclasses.replace(self.preset, estimator=dataclasses.replace(self.preset.estimator, **est))
        # the detector network is part of the architecture: recorded (as a flag) like the sizes
        args.presence_detector = True if getattr(args, "presence_detector_steps", 0) > 0 else None
        args.presence_edge = True if getattr(args, "presence_edge_steps", 0) > 0 else None
        args.material_channel = world_materials() if getattr(args, "material_channel_steps", 0) > 0 else None
        cavp = self._recorded_size(args, "cavp", (("depth", "cavp_depth"), ("presence_channel", "presence_channel"),
                                                  ("presence_slots", "presence_slots"),
                                                  ("presence_detector", "presence_detector"),
                                                  ("presence_edge", "presence_edge"),
                                                  ("material_channel", "material_channel")))
        presence = bool(cavp.pop("presence_channel", False))
        slots = int(cavp.pop("presence_slots", 1))
        detector = bool(cavp.pop("presence_detector", False))
        edge = bool(cavp.pop("presence_edge", False))
        materials = int(cavp.pop("material_channel", 0))
        if edge and not detector:
            raise SystemExit("--presence-edge-steps fine-tunes the presence detector further; it needs "
                             "--presence-detector-steps (for example 6000)")
        if materials and not (presence and detector):
            raise SystemExit("--material-channel-steps teaches the presence detector to name the struck material; it "
                             "needs --presence-channel --presence-slots 4 --presence-detector-steps N")
        if materials and edge:
            raise SystemExit("--material-channel-steps and --presence-edge-steps cannot be combined (the newest-frame "
                             "detector has no material head); drop one of them, or use another --run-dir")
        if cavp:
            self.preset = dataclasses.replace(self.preset, cavp=dataclasses.replace(self.preset.cavp, **cavp))
        if presence:
            from frieren.config import with_presence_channel
            if self.preset.geometry.samples_per_frame % slots:
                raise SystemExit(f"--presence-slots {slots} does not split a visual frame of "
                                 f"{self.preset.geometry.samples_per_frame} samples into equal slots; use a divisor "
                                 f"(for example latents_per_frame = {self.preset.geometry.latents_per_frame})")
            if detector and slots == 1:
                raise SystemExit("--presence-detector-steps fine-tunes the slot presence head's network; it needs "
                                 "--presence-slots > 1 (for example 4)")
            self.preset = with_presence_channel(self.preset, slots=slots, detector=detector, edge=edge,
                                                materials=materials)
        elif getattr(args, "presence_channel_train", "head") != "head" or slots != 1 or detector:
            raise SystemExit("--presence-channel-train, --presence-slots and --presence-detector-steps say what the "
                             "presence channel holds; each needs --presence-channel (in this command or recorded "
                             "in the run dir)")
        self.progress = not args.no_progress
        self._clips = {}
        self._windows = {}
        self._latents = None
        check_flow_clips(args)
        check_material_clips(args)
        check_detector_clips(args)

    # -- data ---------------------------------------------------------------------------
    @property
    def separate_flow_clips(self) -> bool:
        """True when the flow stages train on clips of their own (``--flow-clips N``), not the CAVP's."""
        return getattr(self.args, "flow_clips", 0) > 0

    def source_description(self, part: str = "cavp") -> dict:
        """The data that ``part`` trains on: "cavp" (also the VAE), "flow" (latents, CFM, reflow
        pairs; the CAVP's clips unless ``--flow-clips``), "material" (the material phase's own
        clips, ``--material-channel-clips``) or "detector" (the presence detector's own clips,
        ``--presence-detector-clips``; the same seeds as the material phase's, right after the run's
        last clips)."""
        a = self.args
        flow_own = part == "flow" and self.separate_flow_clips
        if part in ("material", "detector"):
            n = a.material_channel_clips if part == "material" else a.presence_detector_clips
            desc = {"kind": "synthetic", "clips": n, "seed0": material_seed0(a),
                    "clip_seconds": a.clip_seconds, "preset": self.preset.name}
        elif a.data_dir and not flow_own:
            desc = {"kind": "folder", "data_dir": str(Path(a.data_dir).resolve()), "csv": a.csv,
                    "csv_split": a.csv_split, "preset": self.preset.name}
        else:
            clips, seed0 = (a.flow_clips, flow_seed0(a)) if flow_own else (a.synthetic, a.synthetic_seed)
            desc = {"kind": "synthetic", "clips": clips, "seed0": seed0,
                    "clip_seconds": a.clip_seconds, "preset": self.preset.name}
        if self.preset.geometry.subframes > 1:  # the cached frames stack that many snapshots
            desc["subframes"] = self.preset.geometry.subframes
        return desc

    def data_record(self) -> dict:
        """What a bundle's provenance says it trained on: the CAVP's (and VAE's) data, with the flow
        stages' own clips under ``flow`` when they had them."""
        record = self.source_description()
        if self.separate_flow_clips:
            record["flow"] = self.source_description("flow")
        return record

    def cache_dir(self, part: str = "cavp") -> Path:
        """``<run-dir>/cache`` (the CAVP's clips), ``cache_flow`` for the flow stages' own clips,
        ``cache_material`` for the material phase's (``--material-channel-clips``) or
        ``cache_detector`` for the presence detector's (``--presence-detector-clips``)."""
        if part in ("material", "detector"):
            return self.dir / f"cache_{part}"
        return self.dir / ("cache_flow" if part == "flow" and self.separate_flow_clips else "cache")

    def clips(self, part: str = "cavp", workers: Optional[int] = None):
        """The clips ``part`` ("cavp", "flow", "material" or "detector") trains on, from its clip cache (built on
        first use, by ``workers`` processes: default ``--data-workers``)."""
        key = self.cache_dir(part).name
        if key not in self._clips:
            from frieren.training.data import (build_clip_cache, csv_source, folder_source,
                                               load_clip_cache, synthetic_source)
            from frieren.training.ddp import barrier
            a = self.args
            cache = self.cache_dir(part)
            cache.mkdir(parents=True, exist_ok=True)
            meta = cache / "source.json"
            desc = self.source_description(part)
            built = json.loads(meta.read_text()) if meta.is_file() else desc
            if built != desc:
                if {k: v for k, v in built.items() if k != "subframes"} == \
                        {k: v for k, v in desc.items() if k != "subframes"}:
                    raise SystemExit(f"{cache} holds {built.get('subframes', 1)} snapshot(s) per visual frame, "
                                     f"this command asks for {desc.get('subframes', 1)}; pass --subframes "
                                     f"{built.get('subframes', 1)} (as the run that built it did)")
                raise SystemExit(f"{cache} was built from another data source ({meta.read_text().strip()}); "
                                 f"use another --run-dir or delete {cache}")
            if self.ctx.is_main and not meta.is_file():
                # rank 0 alone writes, atomically: another rank reading it mid-write saw "" (CI flake)
                write_json_atomic(meta, desc)
            if desc["kind"] != "synthetic":
                items = (csv_source(a.data_dir, a.csv, self.preset, a.csv_split) if a.csv
                         else folder_source(a.data_dir, self.preset))
            else:
                from frieren.synth import SceneConfig
                scene = SceneConfig(duration_s=a.clip_seconds, sample_rate=self.preset.geometry.sample_rate)
                items = synthetic_source(desc["clips"], desc["seed0"], self.preset, scene)
            if self.ctx.is_main:
                paths = build_clip_cache(items, cache, self.preset, progress=self.progress,
                                         workers=workers or max(1, getattr(a, "data_workers", 1)))
            barrier(self.ctx)
            if not self.ctx.is_main:
                paths = build_clip_cache(items, cache, self.preset, progress=False)
            self._clips[key] = load_clip_cache(paths)
        return self._clips[key]

    def forget_clips(self, part: str) -> None:
        """Drop ``part``'s clips (and windows) from memory; :meth:`clips` loads them again from the cache."""
        key = self.cache_dir(part).name
        self._clips.pop(key, None)
        self._windows.pop(key, None)

    def windows(self, part: str = "cavp"):
        """The training windows of ``part``'s clips (see :meth:`clips`)."""
        key = self.cache_dir(part).name
        if key not in self._windows:
            from frieren.training.data import WindowData, window_index
            g = self.preset.geometry
            clips = self.clips(part)
            self._windows[key] = WindowData(clips, window_index(clips, g.frames_per_window, self.args.window_stride),
                                            g.frames_per_window, g.latents_per_frame * g.mel_per_latent)
            log.info("%s: %d clips, %d training windows", key, len(clips), len(self._windows[key].windows))
        return self._windows[key]

    # -- stage outputs ------------------------------------------------------------------
    def _recorded_size(self, args: argparse.Namespace, part: str, fields) -> dict:
        """The size of ``part`` ("estimator" or "cavp") this run trains, from the flags of ``fields``
        ((config field, args attribute) pairs: --estimator-hidden/--estimator-depth, --cavp-depth),
        recorded in ``<run-dir>/<part>.json`` by the first command that sets it, so every later stage
        and ``bundle`` of the run builds the same network without repeating the flags. {} = the preset's."""
        given = {k: getattr(args, a) for k, a in fields if getattr(args, a, None) is not None}
        path = self.dir / f"{part}.json"
        if path.is_file():
            recorded = json.loads(path.read_text())
            if any(recorded.get(k) != v for k, v in given.items()):
                raise SystemExit(f"{self.dir} trains the {part} size {recorded}, not {given}; use another --run-dir "
                                 f"for another {part} size")
            if not given:
                log.info("%s size %s, as recorded in %s", part, recorded, path)
            return recorded
        if given and self.ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, given)
        return given

    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage.replace("-", "_")

    def final(self, stage: str) -> dict:
        from frieren.training.loop import load_final
        fin = load_final(self.stage_dir(stage))
        if fin is None:
            raise SystemExit(f"stage {stage!r} has not finished in {self.dir}; run `frieren train {stage}` first")
        return fin

    def trained_vae(self):
        from frieren.models.vae import MelVAE
        vae = MelVAE(self.preset.vae)
        vae.load_state_dict(sub_state(self.final("vae")["state"], "vae."))
        scale = json.loads((self.stage_dir("vae") / "scale.json").read_text())["scale_factor"]
        return vae.eval(), float(scale)

    def trained_cavp(self):
        """The CAVP stage's video branch, as the generator's condition uses it: with
        ``--presence-channel`` also its presence head and the threshold chosen for it on
        validation clips (:mod:`frieren.training.presence`)."""
        from frieren.models.cavp import CAVPVideoEncoder
        cfg = self.preset.cavp
        state = self.final("cavp")["state"]
        weights = sub_state(state, "video.")
        if cfg.presence_channel and cfg.presence_slots > 1:
            head = self.slot_head(weights)
            if cfg.presence_detector:
                net, head = self.presence_detector(weights, head)
                if cfg.material_channel:
                    net, head, material_head = self.material_detector(net, head)
                    weights.update({f"presence_material_head.{k}": v for k, v in material_head.items()})
                weights.update({f"presence_net.{k}": v for k, v in net.items()})
                if cfg.presence_edge:
                    edge_net, edge_head = self.edge_detector(net, head)
                    weights.update({f"presence_edge_net.{k}": v for k, v in edge_net.items()})
                    weights.update({f"presence_edge_head.{k}": v for k, v in edge_head.items()})
                    weights["presence_edge_threshold"] = torch.zeros(())
                    weights["presence_edge_window_threshold"] = torch.zeros(())
            weights.update({f"presence_head.{k}": v for k, v in head.items()})
            weights["presence_threshold"] = torch.zeros(())
        elif cfg.presence_channel:
            head = sub_state(state, "presence_head.")
            adopted = self.final("cavp")["result"].get("adopted_from")
            if not head and adopted:
                raise SystemExit(f"--presence-channel (one slot) needs a CAVP with a frame presence head, and the bundle "
                                 f"{adopted} that --cavp-from adopted has none (its channel, if any, has slots): "
                                 f"pass --presence-slots (for example 4), or train the CAVP stage with "
                                 f"--cavp-presence-weight 1 in a new run dir")
            if not head:
                raise SystemExit(f"--presence-channel needs a CAVP with a presence head, and {self.dir / 'cavp'} has "
                                 f"none: train the CAVP stage with --cavp-presence-weight (for example 1), or use a "
                                 f"run dir without --presence-channel")
            weights.update({f"presence_head.{k}": v for k, v in head.items()})
            weights["presence_threshold"] = torch.zeros(())
        cavp = CAVPVideoEncoder(cfg)
        cavp.load_state_dict(weights)
        if cfg.presence_channel:
            from frieren.training.presence import validation_threshold
            threshold = validation_threshold(cavp, self.preset, self.stage_dir("cavp") / "presence_threshold.json",
                                             seconds=self.args.clip_seconds,
                                             clips=getattr(self.args, "presence_validation_clips", 48))
            cavp.presence_threshold.fill_(threshold)
        if cfg.presence_edge:
            kw = dict(seconds=self.args.clip_seconds, clips=getattr(self.args, "presence_validation_clips", 48))
            cavp.presence_edge_window_threshold.fill_(validation_threshold(
                cavp, self.preset, self.stage_dir("cavp") / "presence_edge_window_threshold.json", edge=True, **kw))
            cavp.presence_edge_threshold.fill_(validation_threshold(
                cavp, self.preset, self.stage_dir("cavp") / "presence_edge_threshold.json", newest=True, **kw))
        return cavp.eval()

    def clip_onsets(self, clips, part: str = "flow", workers: Optional[int] = None) -> list:
        """Per clip (of ``part``'s cache) the synthetic world's onset samples
        (:mod:`frieren.training.onset_labels`), simulated once by ``workers`` processes (default
        ``--data-workers``) and kept in the cache's ``onsets.json``."""
        from frieren.training.onset_labels import synthetic_onsets
        onsets = synthetic_onsets([c.key for c in clips], self.args.clip_seconds, self.preset.geometry.sample_rate,
                                  self.cache_dir(part) / "onsets.json",
                                  workers=workers or max(1, getattr(self.args, "data_workers", 1)),
                                  progress=self.progress)
        return [onsets[c.key] for c in clips]

    def slot_labels(self, clips, part: str = "flow") -> list:
        """Per clip (of ``part``'s cache) its slot presence labels (N_c, presence_slots) (:func:`onset_slot_labels`)."""
        from frieren.training.presence import onset_slot_labels
        g = self.preset.geometry
        return [onset_slot_labels(o, c.num_frames, g.samples_per_frame, self.preset.cavp.presence_slots, g.sample_rate)
                for o, c in zip(self.clip_onsets(clips, part), clips)]

    def slot_head(self, video_weights: dict) -> dict:
        """``--presence-slots`` > 1: the slot presence head's weights, a linear map of the CAVP's frozen
        features of the flow stages' clips to their slot labels (:func:`fit_slot_head`), fitted once
        per CAVP and kept in ``<run>/cavp/presence_slot_head.pt``."""
        import dataclasses

        from frieren.models.cavp import CAVPVideoEncoder
        from frieren.training.data import state_fingerprint
        from frieren.training.presence import fit_slot_head
        slots = self.preset.cavp.presence_slots
        path = self.stage_dir("cavp") / "presence_slot_head.pt"
        w = self.windows("flow")
        fp = state_fingerprint(video_weights) + f"-{slots}-{len(w.clips)}"
        if path.is_file():
            kept = torch.load(path, map_location="cpu", weights_only=True)
            if kept.get("fingerprint") == fp:
                return kept["state"]
        labels = self.slot_labels(w.clips)
        video = CAVPVideoEncoder(dataclasses.replace(self.preset.cavp, presence_channel=False))
        video.load_state_dict(video_weights)
        video.eval()
        from tqdm import tqdm
        with torch.no_grad():
            feats = [video.extract(c.frames.float() / 255.0) for c in tqdm(w.clips, desc="slot head features",
                                                                            unit="clip", disable=not self.progress)]
        head, scores = fit_slot_head(feats, labels, seed=self.args.seed)
        log.info("slot presence head (%d slots) fitted on %d clips: precision %.3f, recall %.3f at logit 0 on them",
                 slots, len(feats), scores["precision"], scores["recall"])
        state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if self.ctx.is_main:
            atomic_torch_save({"state": state, "fingerprint": fp, "scores": scores}, path)
        return state

    def presence_detector(self, video_weights: dict, head: dict):
        """``--presence-detector-steps N``: the CAVP video branch and the fitted slot head, fine-tuned
        together on the slot labels of the flow stages' clips and of ``--presence-detector-clips`` more
        (:mod:`frieren.training.presence_detector`), once per CAVP; kept in
        ``<run>/cavp/presence_detector.pt``. -> (network state, head state)."""
        from frieren.training.data import state_fingerprint
        from frieren.training.presence_detector import fine_tune_detector
        steps = getattr(self.args, "presence_detector_steps", 0)
        rotate = float(getattr(self.args, "presence_detector_rotate", 0.0) or 0.0)
        extra = int(getattr(self.args, "presence_detector_clips", 0) or 0)
        # kernel settings, recorded only when on (a detector trained before them keeps its record)
        kernels = {k: True for k, on in (("channels_last", getattr(self.args, "presence_detector_channels_last", False)),
                                         ("bf16", "detector" in self.bf16_parts)) if on}
        path = self.stage_dir("cavp") / "presence_detector.pt"
        w = self.windows("flow")
        weights_fp = state_fingerprint(video_weights, head)
        source = weights_fp + f"-{len(w.clips)}" + (f"+{extra}" if extra else "")
        own_seed = getattr(self.args, "presence_detector_seed", None)
        seed = self.args.seed + 7 if own_seed is None else own_seed
        fp = f"{source}-{self.args.seed}" + ("" if own_seed is None else f"d{own_seed}")
        if path.is_file():
            kept = torch.load(path, map_location="cpu", weights_only=True)
            kept_fp = kept.get("fingerprint", "")
            if (kept_fp == fp and steps == kept["info"]["steps"] and kept["info"].get("rotate", 0.0) == rotate
                    and all(kept["info"].get(k, False) == kernels.get(k, False) for k in ("channels_last", "bf16"))):
                return kept["net"], kept["head"]
            if steps == 0 and kept_fp.split("-", 1)[0] == weights_fp:
                # a later command of the run (`bundle`) repeats neither the step count, the seed nor the extra clips
                return kept["net"], kept["head"]
        if steps < 1:
            raise SystemExit(f"{self.dir} records a presence detector (cavp.json) and none is trained for this CAVP "
                             f"yet: pass --presence-detector-steps N (for example 3000)")
        ckpt = self.stage_dir("cavp") / (f"presence_detector_ckpt_{fp.split('-')[0][:12]}_{steps}"
                                         + (f"_rotate{rotate:g}" if rotate else "")
                                         + (f"_{extra}clips" if extra else "")
                                         + ("" if own_seed is None else f"_seed{own_seed}")
                                         + "".join(f"_{k}" for k in kernels) + ".pt")
        clips, labels = list(w.clips), self.slot_labels(w.clips)
        if extra:
            more = self.clips("detector")
            clips, labels = clips + list(more), labels + self.slot_labels(more, "detector")
        net, head, info = fine_tune_detector(self.preset.cavp, video_weights, head, [c.frames for c in clips],
                                             labels, steps=steps, seed=seed,
                                             ckpt=ckpt, progress=self.progress, rotate=rotate,
                                             channels_last=bool(kernels.get("channels_last")),
                                             bf16=bool(kernels.get("bf16")))
        if rotate:
            info["rotate"] = rotate
        if extra:
            info["detector_clips"] = extra
        if own_seed is not None:
            info["seed"] = own_seed
        info.update(kernels)
        log.info("presence detector fine-tuned for %d steps: loss %.4f (last 50 steps)", steps, info["loss"])
        if self.ctx.is_main:
            atomic_torch_save({"net": net, "head": head, "fingerprint": fp, "info": info}, path)
        return net, head

    def edge_detector(self, net: dict, head: dict):
        """``--presence-edge-steps N``: the presence detector (``net``, ``head``) fine-tuned N more steps
        with the loss of each window's newest frame added (``--presence-edge-weight``), once per
        detector; kept in ``<run>/cavp/presence_detector_edge.pt``. -> (network state, head state)."""
        from frieren.training.data import state_fingerprint
        from frieren.training.presence_detector import fine_tune_detector
        steps = getattr(self.args, "presence_edge_steps", 0)
        weight = float(getattr(self.args, "presence_edge_weight", 1.0))
        path = self.stage_dir("cavp") / "presence_detector_edge.pt"
        source = state_fingerprint(net, head)
        kept = kept_phase(path, source, steps, weight, "edge_weight")
        if kept is not None:
            return kept["net"], kept["head"]
        if steps < 1:
            raise SystemExit(f"{self.dir} records a newest-frame presence phase (cavp.json) and none is trained for "
                             f"this detector yet: pass --presence-edge-steps N (for example 2000)")
        w = self.windows("flow")
        fp = f"{source}-{steps}-{weight}"
        ckpt = self.stage_dir("cavp") / f"presence_detector_edge_ckpt_{source[:12]}_{steps}_{weight:g}.pt"
        net, head, info = fine_tune_detector(self.preset.cavp, net, head, [c.frames for c in w.clips],
                                             self.slot_labels(w.clips), steps=steps, seed=self.args.seed + 8,
                                             ckpt=ckpt, progress=self.progress, edge_weight=weight,
                                             desc="presence detector, newest frame")
        info["edge_weight"] = weight
        log.info("presence detector fine-tuned %d more steps with the newest frame's loss x %g: loss %.4f (last 50 "
                 "steps)", steps, weight, info["loss"])
        if self.ctx.is_main:
            atomic_torch_save({"net": net, "head": head, "fingerprint": fp, "info": info}, path)
        return net, head

    def material_detector(self, net: dict, head: dict):
        """``--material-channel-steps N``: the presence detector (``net``, ``head``) fine-tuned N more steps
        with a material head added (the struck material of each frame, or none; the world's labels of the
        flow stages' clips and of ``--material-channel-clips`` more, ``--material-channel-weight`` times its
        cross-entropy beside the slot loss), once per detector; kept in ``<run>/cavp/presence_detector_material.pt``.
        -> (network state, slot head state, material head state)."""
        from frieren.training.data import state_fingerprint
        from frieren.training.presence_detector import fine_tune_detector
        steps = getattr(self.args, "material_channel_steps", 0)
        weight = float(getattr(self.args, "material_channel_weight", 1.0))
        extra = int(getattr(self.args, "material_channel_clips", 0) or 0)
        path = self.stage_dir("cavp") / "presence_detector_material.pt"
        source = state_fingerprint(net, head)
        kept = kept_phase(path, source, steps, weight, "material_weight", more=("material_clips", extra))
        if kept is not None:
            return kept["net"], kept["head"], kept["material_head"]
        if steps < 1:
            raise SystemExit(f"{self.dir} records material channels (cavp.json) and no material detector is trained "
                             f"for this presence detector yet: pass --material-channel-steps N (for example 2000)")
        w = self.windows("flow")
        if not w.has_frame_material():
            raise SystemExit("--material-channel-steps learns the struck material from per-frame labels, which only "
                             "synthetic clips carry: train on --synthetic data, or drop --material-channel-steps")
        clips, labels = list(w.clips), self.slot_labels(w.clips)
        if extra:
            more = self.clips("material")
            clips, labels = clips + list(more), labels + self.slot_labels(more, "material")
        fp = f"{source}-{steps}-{weight}" + (f"-{extra}" if extra else "")
        ckpt = self.stage_dir("cavp") / (f"presence_detector_material_ckpt_{source[:12]}_{steps}_{weight:g}"
                                         + (f"_{extra}clips" if extra else "") + ".pt")
        net, head, info = fine_tune_detector(self.preset.cavp, net, head, [c.frames for c in clips],
                                             labels, steps=steps, seed=self.args.seed + 9,
                                             ckpt=ckpt, progress=self.progress,
                                             material_labels=[c.frame_material for c in clips],
                                             material_classes=self.preset.cavp.material_channel,
                                             material_weight=weight, desc="presence detector, materials")
        material_head = info.pop("material_head")
        info["material_weight"] = weight
        if extra:
            info["material_clips"] = extra
        log.info("presence detector fine-tuned %d more steps with a material head (x %g): loss %.4f, material "
                 "accuracy on the impact frames of the last 50 steps %.3f", steps, weight, info["loss"],
                 info["material_acc"])
        if self.ctx.is_main:
            atomic_torch_save({"net": net, "head": head, "material_head": material_head, "fingerprint": fp,
                               "info": info}, path)
        return net, head, material_head

    @property
    def channels_from_truth(self) -> bool:
        """``--presence-channel --presence-channel-train truth``: the flow stages read the world's truth in
        the condition's channels, never the presence head's or detector's decision."""
        return bool(self.preset.cavp.presence_channel
                    and getattr(self.args, "presence_channel_train", "head") == "truth")

    def feature_cavp(self):
        """The CAVP stage's video branch alone (no presence head, detector or threshold): the feature
        part of the generator's condition, (T, embed_dim) per clip. With :attr:`channels_from_truth` the
        flow stages read only these features (their channels are the truth), so they do not wait for the
        presence detector, which can train beside them (``frieren train default --side-by-side``)."""
        import dataclasses

        from frieren.models.cavp import CAVPVideoEncoder
        plain = CAVPVideoEncoder(dataclasses.replace(self.preset.cavp, presence_channel=False,
                                                     presence_detector=False, presence_edge=False))
        weights = sub_state(self.final("cavp")["state"], "video.")
        missing = sorted(set(plain.state_dict()) - set(weights))
        if missing:
            raise SystemExit(f"{self.stage_dir('cavp')}: the CAVP stage's weights lack {missing[:3]} of this run's video "
                             f"branch; delete that stage's final.pt and train (or adopt) it again")
        # an adopted bundle's extra heads (e.g. a material head) are not part of the features
        plain.load_state_dict({k: weights[k] for k in plain.state_dict()})
        return plain.eval()

    def latents(self):
        if self._latents is None:
            from frieren.training.data import build_latent_cache, state_fingerprint
            vae, scale = self.trained_vae()
            truth = self.channels_from_truth
            # With truth channels only the features are cached; the channels are the world's (below).
            cavp = self.feature_cavp() if truth else self.trained_cavp()
            fp = state_fingerprint(vae.state_dict(), cavp.state_dict()) + f"-{scale:.6g}"
            w = self.windows("flow")
            cache = self.cache_dir("flow")
            if self.ctx.is_main:
                build_latent_cache(w.clips, w.windows, cavp, vae, self.preset, cache, scale, fp,
                                   progress=self.progress)
            from frieren.training.ddp import barrier
            barrier(self.ctx)
            self._latents = build_latent_cache(w.clips, w.windows, cavp, vae, self.preset, cache,
                                               scale, fp, progress=False)
            if truth:
                extra = self.preset.cavp.condition_dim - self.preset.cavp.embed_dim
                slots = self.slot_labels(w.clips) if self.preset.cavp.presence_slots > 1 else None
                feats = [torch.cat([f, f.new_zeros(len(f), extra)], 1) for f in self._latents.feats]
                self._latents.feats = presence_truth(feats, w.clips, slots, materials=self.preset.cavp.material_channel)
        return self._latents

    def flow_modules(self, init_from: Optional[str]):
        """Estimator + condition encoder, from scratch (seeded) or from a finished stage.

        Both are restored (FRIEREN_SPEC §10.1 fix: the condition encoder is *not* re-initialised)."""
        from frieren.models.cond import CondEncoder
        from frieren.models.estimator import ChannelConcatDiT
        torch.manual_seed(self.args.seed + 3)
        est, cond = ChannelConcatDiT(self.preset.estimator), CondEncoder(self.preset.cond)
        if init_from is not None:
            state = self.final(init_from)["state"]
            est.load_state_dict(sub_state(state, "estimator."))
            cond.load_state_dict(sub_state(state, "cond."))
        return est, cond

    def train_config(self, stage: str, hp: StageHParams):
        from frieren.training.loop import TrainConfig
        a = self.args
        return TrainConfig(steps=hp.steps, batch_size=hp.batch_size, lr=hp.lr, warmup_steps=hp.warmup,
                           grad_clip=hp.grad_clip, ema_decay=hp.ema, final_lr_factor=hp.final_lr_factor,
                           decay_steps=hp.decay_steps, seed=a.seed + STAGES.index(stage) * 101,
                           ckpt_every=max(50, min(500, hp.steps // 5)), log_every=10,
                           max_seconds=a.max_minutes * 60 if a.max_minutes else None,
                           bf16=stage in self.bf16_parts)

    @property
    def bf16_parts(self):
        """The parts that train under bfloat16 autocast (``--bf16``; :mod:`frieren.training.precision`)."""
        from frieren.training.precision import parse_bf16_parts
        return parse_bf16_parts(getattr(self.args, "bf16", None))


def flow_seed0(args: argparse.Namespace) -> int:
    """The first seed of the ``--flow-clips`` clips: ``--flow-synthetic-seed``, else right after the CAVP's."""
    given = getattr(args, "flow_synthetic_seed", None)
    return args.synthetic_seed + args.synthetic if given is None else given


def material_seed0(args: argparse.Namespace) -> int:
    """The first seed of the ``--material-channel-clips`` clips: right after the last clips the run
    renders (the CAVP's, or the flow stages' own when they come later)."""
    end = args.synthetic_seed + args.synthetic
    if getattr(args, "flow_clips", 0) > 0:
        end = max(end, flow_seed0(args) + args.flow_clips)
    return end


def _check_extra_clips(args: argparse.Namespace, clips: str, steps: str, steps_example: int, what: str,
                       folder_fix: str) -> None:
    """Refuse an extra-clips flag (``clips``, e.g. "material-channel-clips") that cannot mean what it says:
    a negative count, no phase to train on them (``steps``), or a folder of clips instead of the synthetic
    world (SystemExit naming the fix)."""
    n = getattr(args, clips.replace("-", "_"), 0)
    if n < 0:
        raise SystemExit(f"--{clips} must be 0 (the flow stages' clips only) or more, got {n}")
    if n and getattr(args, steps.replace("-", "_"), 0) < 1:
        raise SystemExit(f"--{clips} gives {what} more clips; it needs --{steps} N (for example {steps_example})")
    if n and args.data_dir:
        raise SystemExit(f"--{clips} renders synthetic clips with the world's labels; {folder_fix}")


def check_material_clips(args: argparse.Namespace) -> None:
    """Refuse ``--material-channel-clips`` settings that cannot mean what they say (SystemExit naming the fix)."""
    _check_extra_clips(args, "material-channel-clips", "material-channel-steps", 3000, "the material phase",
                       "the material channels need synthetic data, so drop --data-dir (or the material flags)")


def check_detector_clips(args: argparse.Namespace) -> None:
    """Refuse ``--presence-detector-clips`` settings that cannot mean what they say (SystemExit naming the fix)."""
    _check_extra_clips(args, "presence-detector-clips", "presence-detector-steps", 6000, "the presence detector",
                       "with --data-dir the detector trains on the folder's clips, so drop --presence-detector-clips")


def check_flow_clips(args: argparse.Namespace) -> None:
    """Refuse ``--flow-clips`` settings that cannot mean what they say (SystemExit naming the fix)."""
    n = getattr(args, "flow_clips", 0)
    if n < 0:
        raise SystemExit(f"--flow-clips must be 0 (the flow stages use the CAVP's clips) or more, got {n}")
    if n == 0:
        if getattr(args, "flow_synthetic_seed", None) is not None:
            raise SystemExit("--flow-synthetic-seed needs --flow-clips N (how many clips to render from it)")
        return
    if args.data_dir:
        raise SystemExit("--flow-clips renders extra synthetic clips; with --data-dir the flow stages train on "
                         "the folder's clips (drop --flow-clips)")
    seed0 = flow_seed0(args)
    cavp_seeds = range(args.synthetic_seed, args.synthetic_seed + args.synthetic)
    if seed0 < cavp_seeds.stop and cavp_seeds.start < seed0 + n:
        raise SystemExit(f"--flow-clips seeds {seed0}..{seed0 + n - 1} overlap the CAVP's clips "
                         f"({cavp_seeds.start}..{cavp_seeds.stop - 1}); the point is clips the CAVP never saw: "
                         f"pick another --flow-synthetic-seed")


def kept_phase(path: Path, source: str, steps: int, weight: float, weight_key: str,
               more: Optional[Tuple[str, object]] = None) -> Optional[dict]:
    """A later detector phase's kept result (``path``) if it was trained from the detector whose
    fingerprint is ``source`` with ``steps`` and ``weight`` (``info[weight_key]``) and, given ``more``
    (key, value), ``info[key]`` equal to value (0 when absent), or with any when ``steps`` is 0 (a
    later command of the run, ``bundle``, repeats no flags); else None."""
    if not path.is_file():
        return None
    kept = torch.load(path, map_location="cpu", weights_only=True)
    if kept.get("fingerprint", "").split("-")[0] != source:
        return None
    if steps == 0:
        return kept
    info = kept["info"]
    if steps == info["steps"] and weight == info[weight_key] and (more is None or info.get(more[0], 0) == more[1]):
        return kept
    return None


def world_materials() -> int:
    """How many materials the synthetic world names (the material channels' width)."""
    from frieren.synth import SceneConfig
    return len(SceneConfig().materials)


def presence_truth(feats, clips, slot_labels=None, materials: int = 0):
    """``--presence-channel-train truth``: each clip's condition (N_c, D + S [+ M]) with its last S channels
    replaced by the ground truth: with one slot 1.0 where an impact starts in the frame (the
    synthetic clips' labels), else ``slot_labels`` (per clip (N_c, S), :meth:`Run.slot_labels`); with
    ``materials`` M > 0 its last M channels by the one-hot of each frame's struck material."""
    if materials:
        from frieren.training.presence import material_channels
        if slot_labels is None or any(c.frame_material is None for c in clips):
            raise SystemExit("material channels need the slot labels and per-frame materials of synthetic clips")
        truth = [torch.cat([y[:len(f)].to(f.dtype), material_channels(c.frame_material[:len(f)], materials).to(f.dtype)], 1)
                 for f, y, c in zip(feats, slot_labels, clips)]
        return [torch.cat([f[:, :-t.shape[1]], t], 1) for f, t in zip(feats, truth)]
    if slot_labels is not None:
        s = slot_labels[0].shape[1]
        return [torch.cat([f[:, :-s], y[:len(f)].to(f.dtype)], 1) for f, y in zip(feats, slot_labels)]
    if any(c.frame_material is None for c in clips):
        raise SystemExit("--presence-channel-train truth needs per-frame impact labels, which only synthetic clips "
                         "carry: train on --synthetic data, or use --presence-channel-train head")
    return [torch.cat([f[:, :-1], (c.frame_material[:len(f)] >= 0).to(f.dtype)[:, None]], 1)
            for f, c in zip(feats, clips)]


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix``, with the prefix stripped."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
