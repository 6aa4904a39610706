"""`frieren`: offline generation, conversion of official checkpoints, info, benchmarks.

Only this module configures logging. Errors at the boundary (a bad video, a bad
checkpoint, a bad flag) become one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

log = logging.getLogger("frieren")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="model bundle directory (default: the embedded model)")
    p.add_argument("--preset", help="preset name with --random-init (tiny, frieren-16k, frieren-16k-1step)")
    p.add_argument("--random-init", action="store_true",
                   help="random weights of --preset instead of a bundle (development/timing only)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="frieren", description="Frieren video-to-audio (offline tools)")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate audio for a video file or a folder of videos")
    g.add_argument("video", help="video file, or a folder (then --out is a folder)")
    g.add_argument("--out", required=True, help="output .wav (or folder in folder mode)")
    g.add_argument("--mux", help="also write a copy of the video with the generated audio (file mode)")
    g.add_argument("--steps", type=int, help="ODE steps (default: the preset's)")
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the preset's)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--overlap-frames", type=int, help="visual frames shared by consecutive windows")
    g.add_argument("--dtype", choices=["bf16", "fp16"], help="reduced precision on CUDA")
    _add_model_args(g)

    c = sub.add_parser("convert", help="official checkpoints -> one bundle")
    c.add_argument("--preset", default="frieren-16k-1step",
                   help="preset name, or a JSON file with a preset (as in a bundle's config.json)")
    c.add_argument("--frieren-ckpt", required=True, help="Frieren Lightning .ckpt")
    c.add_argument("--cavp-ckpt", help="Diff-Foley cavp_epoch66.ckpt")
    c.add_argument("--vae-ckpt", help="MAA2 VAE .ckpt, if the Frieren file lacks first_stage_model.*")
    c.add_argument("--vocoder-dir", help="BigVGAN folder with best_netG.pt and args.yml (default: Griffin-Lim)")
    c.add_argument("--allow-random-cavp", action="store_true", help="timing only: keep CAVP random")
    c.add_argument("--out", required=True, help="bundle directory to write")

    from frieren import train_cli

    train_cli.add_arguments(sub.add_parser("train", help="the training recipe: vae, cavp, cfm, reflow-data, "
                                                         "reflow, distill, bundle, default"))

    from frieren import eval_cli

    eval_cli.add_arguments(sub.add_parser("eval", help="held-out evaluation: sync, materials, FD, mel L1, time; "
                                                       "writes the Table-2-style table"))

    i = sub.add_parser("info", help="print a bundle's preset, geometry and parameter counts")
    i.add_argument("bundle", nargs="?", help="bundle directory (default: the embedded model)")
    i.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="time each stage of one window")
    _add_model_args(b)
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--threads", type=int)
    b.add_argument("--json-out", help="also write the JSON here")
    return ap


def _preset_arg(value: str):
    from frieren.config import Preset, config_from_dict, get_preset

    path = Path(value)
    if path.suffix == ".json" and path.is_file():
        data = json.loads(path.read_text())
        return config_from_dict(Preset, data.get("preset", data))
    return get_preset(value)


def _cmd_generate(args) -> int:
    from frieren.bundles import load_model
    from frieren.pipeline import GenerateOptions, OfflineGenerator, find_videos
    from frieren.video_io import mux_audio, write_wav

    stack, _ = load_model(args.bundle, preset=args.preset, random_init=args.random_init, device=args.device,
                          seed=args.seed)
    gen = OfflineGenerator(stack, device=args.device)
    opts = GenerateOptions(steps=args.steps, cfg_scale=args.cfg, seed=args.seed,
                           overlap_frames=args.overlap_frames, dtype=args.dtype)
    src = Path(args.video)
    if src.is_dir():
        if args.mux:
            raise ValueError("--mux is for a single file; in folder mode the muxed copies go next to the wavs "
                             "only with --mux-folder (not supported yet)")
        videos = find_videos(src)
        if not videos:
            raise ValueError(f"{src}: no video files (mp4, webm, mov, mkv, avi) found")
        out_dir = Path(args.out)
        failures = 0
        for video in videos:
            try:
                res = gen.generate_video(video, opts)
                write_wav(out_dir / (video.stem + ".wav"), res.audio, res.sample_rate)
                log.info("%s -> %s (%.2f s)", video, out_dir / (video.stem + ".wav"), res.duration_s)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                failures += 1
                log.error("%s: %s", video, error)
        return 1 if failures else 0
    res = gen.generate_video(src, opts)
    write_wav(args.out, res.audio, res.sample_rate)
    log.info("wrote %s: %.3f s at %d Hz (%d windows)", args.out, res.duration_s, res.sample_rate, res.num_windows)
    if args.mux:
        mux_audio(src, res.audio, res.sample_rate, args.mux)
        log.info("wrote %s", args.mux)
    return 0


def _cmd_convert(args) -> int:
    from frieren.convert import convert_official

    out = convert_official(_preset_arg(args.preset), Path(args.out), frieren_ckpt=Path(args.frieren_ckpt),
                           cavp_ckpt=Path(args.cavp_ckpt) if args.cavp_ckpt else None,
                           vae_ckpt=Path(args.vae_ckpt) if args.vae_ckpt else None,
                           vocoder_dir=Path(args.vocoder_dir) if args.vocoder_dir else None,
                           allow_random_cavp=args.allow_random_cavp)
    log.info("wrote bundle %s", out)
    return 0


def _cmd_info(args) -> int:
    from frieren.bundles import load_model

    stack, info = load_model(args.bundle)
    g = stack.preset.geometry
    counts = stack.parameter_counts()
    data = {
        "bundle": str(info.path) if info else None,
        "preset": stack.preset.name,
        "geometry": {"frames_per_window": g.frames_per_window, "visual_fps": g.visual_fps,
                     "frame_period_s": g.frame_period_s, "latent_frames": g.latent_frames,
                     "mel_frames": g.mel_frames, "window_samples": g.window_samples,
                     "window_s": g.window_samples / g.sample_rate, "sample_rate": g.sample_rate,
                     "snapshots_per_frame": g.subframes},
        "vocoder": "bigvgan" if stack.has_neural_vocoder else "griffin-lim",
        "sampling": {"steps": stack.preset.sampling.steps, "cfg_scale": stack.preset.sampling.cfg_scale},
        "parameters": {"cavp": counts.cavp, "cond": counts.cond, "estimator": counts.estimator,
                       "vae": counts.vae, "vocoder": counts.vocoder, "total": counts.total},
        "provenance": info.provenance if info else {},
    }
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        lines = [f"preset      {data['preset']}  ({data['bundle']})",
                 f"window      {g.frames_per_window} frames @ {g.visual_fps:.4g} fps -> {g.latent_frames} latents "
                 f"-> {g.mel_frames} mels -> {g.window_samples} samples ({data['geometry']['window_s']:.3f} s)"
                 + (f"; each frame stacks {g.subframes} snapshots {1000 * g.frame_period_s / g.subframes:.4g} ms "
                    "apart" if g.subframes > 1 else ""),
                 f"vocoder     {data['vocoder']}",
                 f"sampling    {data['sampling']['steps']} steps, cfg {data['sampling']['cfg_scale']}"]
        lines += [f"params      {k:<9} {v:>13,}" for k, v in data["parameters"].items()]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_bench(args) -> int:
    from frieren.bench import run_stage_benchmark

    report = run_stage_benchmark(args.bundle, preset=args.preset, random_init=args.random_init,
                                 device=args.device, repeats=args.repeats, threads=args.threads)
    sys.stdout.write(report.as_text() + "\n")
    sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.as_dict(), indent=2))
    return 0


def _cmd_train(args) -> int:
    from frieren import train_cli

    return train_cli.run(args)


def _cmd_eval(args) -> int:
    from frieren import eval_cli

    return eval_cli.run(args)


COMMANDS = {"eval": _cmd_eval, "train": _cmd_train, "generate": _cmd_generate, "convert": _cmd_convert, "info": _cmd_info, "bench": _cmd_bench}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from frieren.checkpoints import CheckpointError
    from frieren.video_io import VideoError

    try:
        return COMMANDS[args.command](args)
    except (CheckpointError, VideoError, ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"frieren {args.command}: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
