"""Frieren video-to-audio in plain PyTorch: models, flow matching, checkpoints, offline pipeline.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already
chooses a policy. OpenMP's default of spin-waiting made every CPU stage 10-70x slower on
a shared 2-core machine whenever another process was busy (measured with
``frieren bench --preset tiny --random-init``: CAVP 1678 ms with spinning threads vs
25 ms passive). It must be set before torch loads OpenMP, hence here.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
