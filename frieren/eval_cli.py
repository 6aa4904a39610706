"""`frieren eval`: quality and speed of teacher, reflow and distilled models on held-out scenes.

Writes ``<out>/table.md``, ``<out>/table.json`` and ``<out>/metrics_vs_steps.png``: one row
per (model, steps) with onset sync P/R/F1 and mean offset at ±45 and ±125 ms, material
accuracy, Fréchet distances, mel L1 and generation time per window (see
:mod:`frieren.eval.table` for the definitions).

    bash scripts/train_default.sh     # also writes runs/default/bundle_cfm and bundle_reflow
    frieren eval --clips 64 --classifier-clips 80 --out docs/eval

A model whose bundle is not given (teacher, reflow) or missing is skipped; the distilled
model defaults to the shipped bundle. Mount under the main CLI with
``add_arguments(sub.add_parser("eval"))`` and ``run(args)``; ``python -m frieren.eval_cli``
works standalone.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import List, Optional

log = logging.getLogger("frieren.eval")

# Run folder of scripts/train_default.sh (the shipped model's recipe).
DEFAULT_RUN = "runs/default"


def _steps(text: str) -> List[int]:
    try:
        out = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}")
    if not out or any(s < 1 for s in out):
        raise argparse.ArgumentTypeError(f"step counts must be positive integers, got {text!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default=f"{DEFAULT_RUN}/bundle_cfm",
                   help=f"teacher (base CFM) bundle; skipped if missing (default {DEFAULT_RUN}/bundle_cfm, "
                        "written by scripts/train_default.sh); '' or 'none' to skip")
    p.add_argument("--reflow", default=f"{DEFAULT_RUN}/bundle_reflow",
                   help=f"reflow bundle; skipped if missing (default {DEFAULT_RUN}/bundle_reflow); '' or 'none' to skip")
    p.add_argument("--distilled", default=None,
                   help="reflow+distill bundle (default: the shipped model); '' or 'none' to skip")
    p.add_argument("--teacher-steps", type=_steps, default=[1, 2, 4, 8, 25], help="default 1,2,4,8,25")
    p.add_argument("--reflow-steps", type=_steps, default=[1, 2, 4], help="default 1,2,4")
    p.add_argument("--distilled-steps", type=_steps, default=[1], help="default 1")
    p.add_argument("--steps", type=_steps, help="one list of step counts for every model (overrides the three above)")
    p.add_argument("--clips", type=int, default=24, help="held-out clips (default 24)")
    p.add_argument("--seconds", type=float, default=8.0, help="clip length (default 8)")
    p.add_argument("--seed0", type=int, default=900000,
                   help="first held-out seed (default 900000; the recipe trains on seeds from 1000 up, and a seed a bundle was trained on is refused)")
    p.add_argument("--classifier-clips", type=int, default=60,
                   help="GT clips to train the material classifier on (seeds seed0+50000...)")
    p.add_argument("--fd", default="cavp,logmel",
                   help="FD embeddings, comma-separated: cavp (needs --cavp-checkpoint) and/or logmel")
    p.add_argument("--cavp-checkpoint", default=f"{DEFAULT_RUN}/cavp/final.pt",
                   help="CAVP stage checkpoint with the trained audio branch (skipped with a warning if missing)")
    p.add_argument("--no-vocoder-row", action="store_true",
                   help="omit the reference rows 'GT mel + vocoder' and 'GT mel + VAE + vocoder'")
    p.add_argument("--presence-truth", action="store_true",
                   help="also score each model that has the presence channel with the channel set to the synthetic "
                        "world's truth (a perfect presence head; with material channels also those): the "
                        "generator's ceiling given one")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default="eval_out", help="output folder (default eval_out)")


def _skipped(bundle: Optional[str]) -> bool:
    """'' and 'none' (any case) leave a model out, the same for --teacher, --reflow and --distilled."""
    return bundle is not None and bundle.strip().lower() in ("", "none")


def _models(args):
    from frieren.eval.table import ModelSpec

    specs = []
    for name, bundle, steps in (("teacher", args.teacher, args.teacher_steps),
                                ("reflow", args.reflow, args.reflow_steps)):
        if _skipped(bundle):
            continue
        if not (Path(bundle) / "config.json").is_file():
            log.warning("%s bundle %s not found: skipped", name, bundle)
            continue
        specs.append(ModelSpec(name, bundle, args.steps or steps))
    if not _skipped(args.distilled):
        specs.append(ModelSpec("reflow+distill", args.distilled, args.steps or args.distilled_steps))
    return specs


def _command(args: argparse.Namespace) -> str:
    """The command line, for the record (``args.argv`` when called through :func:`main`)."""
    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
        if argv[:1] == ["eval"]:   # mounted as `frieren eval`
            argv = argv[1:]
    return " ".join(["frieren eval"] + [shlex.quote(a) for a in argv])


def run(args: argparse.Namespace) -> int:
    import torch

    from frieren.eval.table import EvalConfig, run_eval, to_markdown, write_outputs

    torch.set_num_threads(args.threads)
    models = _models(args)
    if not models:
        raise ValueError("no model to evaluate")
    cfg = EvalConfig(models=models, clips=args.clips, seconds=args.seconds, seed0=args.seed0,
                     classifier_clips=args.classifier_clips,
                     fd_embeddings=tuple(x for x in args.fd.split(",") if x),
                     cavp_checkpoint=args.cavp_checkpoint, device=args.device,
                     vocoder_row=not args.no_vocoder_row, presence_truth=args.presence_truth)
    result = run_eval(cfg)
    result["command"] = _command(args)
    paths = write_outputs(result, Path(args.out), png=not args.no_plot)
    sys.stdout.write(to_markdown(result))
    sys.stdout.write("wrote " + ", ".join(str(p) for p in paths.values()) + f" in {result['wall_s']} s\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="frieren eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    add_arguments(ap)
    args = ap.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
