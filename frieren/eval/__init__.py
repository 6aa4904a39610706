"""Evaluation of Frieren models on held-out synthetic scenes (`frieren eval`).

* :mod:`frieren.eval.sync`: onset detection and ±45/±125 ms matching (also used by frieren-stream)
* :mod:`frieren.eval.materials`: material classifier trained on ground-truth audio
* :mod:`frieren.eval.metrics`: Fréchet distance of audio embeddings, mel L1
* :mod:`frieren.eval.table`: runs the model x steps grid, writes Markdown, JSON and a PNG plot
"""
