"""Training Frieren models from scratch: data caches, objectives, one generic trainer, DDP.

* :mod:`frieren.training.data` — clip sources (synthetic world, video folders, VGGSound CSV),
  the resumable clip and feature/latent caches, window crops;
* :mod:`frieren.training.objectives` — VAE, CAVP contrastive, CFM, reflow and distillation
  objectives as ``nn.Module`` wrappers around the shared networks;
* :mod:`frieren.training.cavp_audio` — the small mel encoder CAVP training needs;
* :mod:`frieren.training.loop` — the trainer (AdamW, warm-up, EMA, checkpoint/resume, JSONL);
* :mod:`frieren.training.ddp` — torchrun / DDP support;
* :mod:`frieren.training.hparams` — the recipe's per-stage hyper-parameters and defaults;
* :mod:`frieren.training.run` — the ``--run-dir`` context: data, caches, finished stages;
* :mod:`frieren.training.stages` — the stage functions (vae, cavp, cfm, reflow-data, reflow, distill);
* :mod:`frieren.training.bundle` — the bundle export and its provenance record.

The CLI (argument parsing and dispatch) lives in :mod:`frieren.train_cli`.
"""
