"""Opt-in ``torch.compile`` of the per-window hot spots of a :class:`FrierenStack`.

:class:`CompiledStages` offers the four stage methods that
:class:`frieren.streaming.StreamingGenerator` calls on a stack (``features``,
``sample_latent``, ``decode``, ``vocode_span``), with these parts compiled:

    cavp        ``stack.features``          frames (B, F, 3K, S, S) -> features (B, F, D)
    estimator   ``stack.estimator``         one flow step's forward, (2B, C, L) under CFG
    vae_decode  ``stack.decode``            latent (B, C, L) -> mel (B, n_mels, T)
    vocoder     ``stack.vocode_span``       BigVGAN only; Griffin-Lim (complex STFTs) stays eager

Each part wraps the stack's own bound method or module, so the weights are shared (no
copies) and the stack itself is untouched: eager callers of the same stack (the offline
generator, the trainer) are unaffected. Compilation is lazy: it happens at a part's first
call for each input shape (``dynamic=False`` specialises on shapes, so the streaming
generator pads batches to powers of two, see :func:`batch_bucket`).

If compiling or running a compiled part raises (no C compiler, an unsupported op), the
call is re-run eagerly; if that succeeds the part stays eager for good, with one warning
naming the part and the error, and the stream keeps going (if eager raises too, the
inputs were at fault: that error propagates and the part stays compiled). CUDA
out-of-memory is re-raised as is.

Modes: "default" (inductor), "reduce-overhead" (inductor + CUDA graphs on CUDA),
"max-autotune" (inductor autotuning, plus CUDA graphs on CUDA).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

log = logging.getLogger(__name__)

COMPILE_MODES: Tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")
PARTS: Tuple[str, ...] = ("cavp", "estimator", "vae_decode", "vocoder")
# Distinct input shapes one compiled part may see before dynamo gives up on it and runs it
# eagerly: batch buckets 1..64 (7) times a few emitted spans for the vocoder.
RECOMPILE_LIMIT = 32


def check_compile_mode(mode: Optional[str]) -> Optional[str]:
    """``mode`` if it is None or a known torch.compile mode, else ValueError naming the choices."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)} "
                         "(or None for eager)")
    return mode


def batch_bucket(n: int) -> int:
    """The padded batch size for ``n`` windows under compilation: the next power of two."""
    if n < 1:
        raise ValueError(f"batch must be >= 1, got {n}")
    return 1 << (n - 1).bit_length()


def batch_buckets(max_batch: int) -> Tuple[int, ...]:
    """Every padded batch size up to ``batch_bucket(max_batch)``: 1, 2, 4, ..."""
    top = batch_bucket(max_batch)
    return tuple(1 << i for i in range(top.bit_length()))


class GuardedCompiled:
    """A compiled callable with its eager twin: the first failure switches to eager for good."""

    def __init__(self, name: str, eager: Callable[..., Any], compiled: Callable[..., Any],
                 mode: str, clone_outputs: bool = False) -> None:
        self.name = name
        self.eager = eager
        self.compiled: Optional[Callable[..., Any]] = compiled
        self.mode = mode
        self.clone_outputs = clone_outputs
        self.error: Optional[str] = None

    @property
    def active(self) -> bool:
        """True while the compiled path is in use (no failure so far)."""
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a compiler failure: run eagerly instead
            out = self.eager(*args, **kwargs)   # raises too if the inputs, not the compiler, are at fault
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            self.error = f"{type(exc).__name__}: {first}"
            self.compiled = None
            log.warning("torch.compile(mode=%r) failed for %s (%s); running %s eagerly from now on",
                        self.mode, self.name, self.error, self.name)
            return out
        # CUDA graph outputs live in a pool that the next replay overwrites: hand out copies.
        return out.clone() if self.clone_outputs and isinstance(out, torch.Tensor) else out


class _StackView:
    """The stack with a different ``estimator``: lets ``FrierenStack.sample_latent`` (CFG,
    solver, time grid) run unchanged over the compiled estimator."""

    def __init__(self, stack: Any, estimator: Callable[..., Any]) -> None:
        self._stack = stack
        self.estimator = estimator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stack, name)


class CompiledStages:
    """The stack's streaming stages with ``parts`` compiled in ``mode`` (see module doc).

    ``backend`` is torch.compile's backend, a name or a callable (None: inductor); tests use
    "eager" or "aot_eager" to exercise the wiring without a C compiler's cost.
    """

    def __init__(self, stack: Any, mode: str, *, parts: Sequence[str] = PARTS,
                 backend: Optional[Any] = None, device: Optional[torch.device] = None) -> None:
        check_compile_mode(mode)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown compile parts {unknown}; choose from {', '.join(PARTS)}")
        self.stack = stack
        self.mode = mode
        self.backend = backend
        device = torch.device(device) if device is not None else next(stack.parameters()).device
        self._cuda_graphs = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune") \
            and backend in (None, "inductor")
        import torch._dynamo.config as dynamo_config
        if dynamo_config.recompile_limit < RECOMPILE_LIMIT:
            log.debug("raising torch._dynamo.config.recompile_limit %d -> %d (one entry per batch size)",
                      dynamo_config.recompile_limit, RECOMPILE_LIMIT)
            dynamo_config.recompile_limit = RECOMPILE_LIMIT
        eager: Dict[str, Callable[..., Any]] = {
            "cavp": stack.features, "estimator": stack.estimator, "vae_decode": stack.decode,
            "vocoder": stack.vocode_span,
        }
        self.parts: Dict[str, GuardedCompiled] = {}
        skipped = []
        for name in parts:
            if name == "vocoder" and not stack.has_neural_vocoder:
                skipped.append("vocoder (Griffin-Lim: complex STFTs stay eager)")
                continue
            self.parts[name] = GuardedCompiled(name, eager[name], self._compile(eager[name]), mode,
                                               clone_outputs=self._cuda_graphs)
        self._view = _StackView(stack, self.parts.get("estimator", stack.estimator))
        log.info("torch.compile mode=%r backend=%s dynamic=False: %s%s (compiled at first call per batch size)",
                 mode, backend or "inductor", ", ".join(self.parts) or "nothing",
                 f"; not compiled: {', '.join(skipped)}" if skipped else "")

    def _compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if self.backend in (None, "inductor"):
            return torch.compile(fn, mode=self.mode, dynamic=False)
        return torch.compile(fn, backend=self.backend, dynamic=False)

    @property
    def compiled_parts(self) -> Tuple[str, ...]:
        """The parts still running compiled (a part that failed is no longer listed)."""
        return tuple(n for n, p in self.parts.items() if p.active)

    @property
    def failures(self) -> Dict[str, str]:
        """Part -> the error that sent it back to eager."""
        return {n: p.error for n, p in self.parts.items() if p.error is not None}

    def begin_step(self) -> None:
        """Call once per window batch: lets CUDA graphs reuse their output memory."""
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    # --- the stage methods StreamingGenerator calls (same signatures as FrierenStack) ---------
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, F, 3K, S, S) in [0, 1] -> CAVP features (B, F, D)."""
        return self.parts.get("cavp", self.stack.features)(frames)

    def sample_latent(self, feats: torch.Tensor, x0: torch.Tensor, **kw: Any) -> torch.Tensor:
        """features (B, F, D), noise x0 (B, C, L) -> latent (B, C, L); ``FrierenStack.sample_latent``
        with the compiled estimator."""
        return type(self.stack).sample_latent(self._view, feats, x0, **kw)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, C, L) -> log10 mel (B, n_mels, T)."""
        return self.parts.get("vae_decode", self.stack.decode)(latent)

    def vocode_span(self, mel: torch.Tensor, start: int, end: int, context: Optional[int] = None) -> torch.Tensor:
        """mel (B, n_mels, T), frames [start, end) -> waveform (B, (end - start) * hop)."""
        return self.parts.get("vocoder", self.stack.vocode_span)(mel, start, end, context)
