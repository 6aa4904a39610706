"""Training Frieren models from scratch: data caches, objectives, one generic trainer, DDP.

* :mod:`frieren.training.data` — clip sources (synthetic world, video folders, VGGSound CSV),
  the resumable clip and feature/latent caches, window crops;
* :mod:`frieren.training.objectives` — VAE, CAVP contrastive, CFM, reflow and distillation
  objectives as ``nn.Module`` wrappers around the shared networks;
* :mod:`frieren.training.cavp_audio` — the small mel encoder CAVP training needs;
* :mod:`frieren.training.loop` — the trainer (AdamW, warm-up, EMA, checkpoint/resume, JSONL);
* :mod:`frieren.training.ddp` — torchrun / DDP support.

The stage orchestration and CLI live in :mod:`frieren.train_cli`.
"""
