"""Which of the flow stages' operations change their bits with torch's kernel settings (experiment code).

Runs a few operations the estimator's training uses (linear layers forward and backward, a batched
product, a 1-D convolution and its weight gradient, softmax, layer norm, GELU, a sum) on fixed random
tensors, one thread, and prints a short hash of each result with torch's CPU capability, as JSON.
Run it under different settings and compare the hashes:

    python docs/eval/experiments/recipe_from_nothing/kernel_bits.py
    ATEN_CPU_CAPABILITY=avx2 python docs/eval/experiments/recipe_from_nothing/kernel_bits.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python docs/eval/experiments/recipe_from_nothing/kernel_bits.py
    MKL_ENABLE_INSTRUCTIONS=SSE4_2 python docs/eval/experiments/recipe_from_nothing/kernel_bits.py

The settings are read when torch starts, so each needs its own process.
"""
import hashlib
import json
import os

import torch
import torch.nn.functional as F


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().contiguous().numpy().tobytes()).hexdigest()[:8]


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 128, 64, generator=g)                      # (B, T, D) as in the estimator
    w, b = torch.randn(256, 64, generator=g), torch.randn(256, generator=g)
    kernel = torch.randn(64, 64, 3, generator=g)
    out = {
        "linear": digest(F.linear(x, w, b)),
        "bmm": digest(torch.bmm(x, x.transpose(1, 2))),
        "conv1d": digest(F.conv1d(x.transpose(1, 2), kernel, padding=1)),
        "softmax": digest(torch.softmax(x, -1)),
        "layer_norm": digest(F.layer_norm(x, (64,))),
        "gelu": digest(F.gelu(x)),
        "sum": digest(x.sum(-1)),
    }
    xg = x.clone().requires_grad_(True)
    F.linear(xg, w, b).sum().backward()
    out["linear_input_grad"] = digest(xg.grad)
    kg = kernel.clone().requires_grad_(True)
    F.conv1d(x.transpose(1, 2), kg, padding=1).pow(2).sum().backward()
    out["conv1d_weight_grad"] = digest(kg.grad)
    settings = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                           "MKL_CBWR") if k in os.environ}
    print(json.dumps({"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "settings": settings,
                      "hashes": out}))


if __name__ == "__main__":
    main()
