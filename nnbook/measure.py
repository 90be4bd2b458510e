"""Measuring what a model costs: parameters, FLOPs, bytes on disk, latency, sparsity.

The book reports these next to every accuracy, because an optimization that does
not show up in bytes or milliseconds has not paid off yet.
"""
from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_bool, check_int, check_model, check_tensor

__all__ = ["count_params", "sparsity", "flops", "model_size_bytes", "Latency", "latency",
           "LatencyRatio", "latency_ratio"]


def _check_model(model, where):
    check_model(model, where)


def _save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """The train/eval flag of every sub-module (``model.train(flag)`` would overwrite a mixed state)."""
    return [(m, m.training) for m in model.modules()]


def _restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    for m, training in saved:
        m.training = training


def _as_args(example_input, where: str) -> tuple:
    """``example_input`` as a tuple of tensors, or a clear ``TypeError``."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        given = type(example_input).__name__
        raise TypeError(f"{where}: example_input must be a tensor or a non-empty tuple of tensors, got a {given}")
    return args


def count_params(model: nn.Module, nonzero: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of a model.

    Args:
        nonzero: count only entries that are not exactly zero (the size a sparse format
            has to store). Pruning masks applied with ``torch.nn.utils.prune`` are
            honoured because the masked ``weight`` is what the module uses.
        trainable_only: count only parameters with ``requires_grad`` (for a module pruned
            with ``torch.nn.utils.prune``, that of ``weight_orig``).

    Returns:
        The count, an ``int``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``nonzero``/``trainable_only`` not bools.

    Examples:
        >>> from torch import nn
        >>> layer = nn.Linear(3, 2)
        >>> count_params(layer)
        8
        >>> layer.bias.requires_grad_(False)
        Parameter containing:...
        >>> count_params(layer, trainable_only=True)
        6
    """
    _check_model(model, "count_params")
    check_bool(nonzero, "count_params", "nonzero")
    check_bool(trainable_only, "count_params", "trainable_only")
    total = 0
    for name, p, trainable in _effective_params(model):
        if trainable_only and not trainable:
            continue
        total += int((p != 0).sum()) if nonzero else p.numel()
    return total


def _effective_params(model: nn.Module):
    """(name, tensor, requires_grad) of the weights a model actually uses: for a module pruned with
    ``torch.nn.utils.prune`` that is ``weight`` (= ``weight_orig * weight_mask``), trainable when
    ``weight_orig`` is."""
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if p_name.endswith("_orig"):
                yield f"{mod_name}.{p_name[:-5]}", getattr(mod, p_name[:-5]).detach(), p.requires_grad
            else:
                yield f"{mod_name}.{p_name}", p.detach(), p.requires_grad


def sparsity(obj) -> float:
    """Fraction of exactly-zero entries, in ``[0, 1]``.

    Args:
        obj: a tensor, or a model (then over the weights of its ``Linear`` and
            ``Conv`` layers, which is what pruning targets; biases and norms excluded).

    Raises:
        TypeError: neither a tensor nor a model.
        ValueError: the model has no Linear/Conv weight, or the tensor is empty.

    Examples:
        >>> import torch
        >>> sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0]))
        0.5
    """
    if isinstance(obj, torch.Tensor):
        check_tensor(obj, "sparsity", "obj")
        return float((obj == 0).sum()) / obj.numel()
    if not isinstance(obj, nn.Module):
        raise TypeError(f"sparsity: obj must be a tensor or a torch.nn.Module, got a {type(obj).__name__}")
    zeros = total = 0
    for mod in obj.modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = mod.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
    if total == 0:
        raise ValueError("sparsity: the model has no Linear or Conv weight")
    return zeros / total


def flops(model: nn.Module, example_input, ) -> int:
    """Floating-point operations of one forward pass, counted by ``torch.utils.flop_counter``.

    A multiply–accumulate counts as 2 FLOPs (PyTorch's convention). Only the
    operations PyTorch has formulas for are counted (matrix products, convolutions,
    attention); element-wise activations and normalizations are not, which is the
    usual convention and changes little for these models.

    Operations with no formula are silently counted as 0. Notably, on the CPU the fused
    kernels of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` and the inference fast path of
    ``nn.TransformerEncoderLayer`` are not counted; count such layers from their
    equations, or write them out (chapter 2 does both).

    Args:
        model: the model; run in eval mode without gradients.
        example_input: a tensor (or tuple of tensors) of batch size 1 gives FLOPs per sample.

    Returns:
        FLOPs as an ``int``.

    Raises:
        TypeError: ``model`` is not a module or ``example_input`` is not a tensor/tuple of tensors.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> flops(nn.Linear(4, 3), torch.zeros(1, 4))   # 2 * 4 * 3 multiply-accumulates
        24
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_model(model, "flops")
    args = _as_args(example_input, "flops")
    modes = _save_modes(model)
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(*args)
    finally:
        _restore_modes(modes)  # also when the forward pass raises: a failed call leaves the model as it was
    return int(counter.get_total_flops())


def model_size_bytes(model_or_state) -> int:
    """Bytes of the model's ``state_dict`` serialized with :func:`torch.save` (in memory).

    This is the honest size of a checkpoint file: it includes every stored tensor
    (a pruned weight still stored densely costs as much as before) plus a little
    pickle overhead.

    Args:
        model_or_state: an ``nn.Module`` or a state dict.

    Raises:
        TypeError: neither a module nor a dict.

    Examples:
        >>> from torch import nn
        >>> model_size_bytes(nn.Linear(1000, 10)) > 4 * 10_010
        True
    """
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
    elif isinstance(model_or_state, dict):
        state = model_or_state
    else:
        raise TypeError(f"model_size_bytes: expected an nn.Module or a state dict, got {type(model_or_state).__name__}")
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


@dataclass(frozen=True)
class Latency:
    """Result of :func:`latency`, all times in milliseconds per call.

    Attributes:
        median_ms: median over the timed repeats (the number to quote).
        p10_ms, p90_ms: 10th and 90th percentiles (the spread to quote with it).
        repeats: number of timed calls.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}, n={self.repeats})"


def latency(fn_or_model, example_input, warmup: int = 10, repeats: int = 50, device=None) -> Latency:
    """Time one forward call with warm-up and repeats; report median and spread in ms.

    Args:
        fn_or_model: an ``nn.Module`` (run in eval mode under ``torch.no_grad``; its
            train/eval mode is restored afterwards, also when the call raises) or any
            callable taking ``example_input`` (an ONNX Runtime session wrapper, say).
        example_input: a tensor or tuple of tensors passed positionally.
        warmup: untimed calls first (caches, lazy initialization, allocator), ``>= 0``.
        repeats: timed calls, ``>= 3``.
        device: for CUDA inputs, the device to synchronize before reading the clock.

    Returns:
        A :class:`Latency` in milliseconds.

    Raises:
        TypeError: ``fn_or_model`` is not callable; ``example_input`` is not a tensor or
            tuple of tensors; ``warmup``/``repeats`` are not ints.
        ValueError: ``warmup < 0`` or ``repeats < 3``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> t = latency(nn.Linear(4, 3), torch.zeros(1, 4), warmup=1, repeats=5)
        >>> t.repeats, t.p10_ms <= t.median_ms <= t.p90_ms
        (5, True)
    """
    if not callable(fn_or_model):
        raise TypeError(f"latency: fn_or_model must be a model or callable, got a {type(fn_or_model).__name__}")
    args = _as_args(example_input, "latency")
    warmup = check_int(warmup, "latency", "warmup", minimum=0)
    repeats = check_int(repeats, "latency", "repeats", minimum=3)
    is_module = isinstance(fn_or_model, nn.Module)
    modes = _save_modes(fn_or_model) if is_module else []
    cuda = any(a.is_cuda for a in args)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    times = []
    try:
        if is_module:
            fn_or_model.eval()
        with torch.no_grad():
            for _ in range(warmup):
                fn_or_model(*args)
            sync()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn_or_model(*args)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        _restore_modes(modes)  # every sub-module back in the mode it had, also when the call raised
    q = statistics.quantiles(times, n=10, method="inclusive")
    return Latency(statistics.median(times), q[0], q[-1], repeats)


@dataclass(frozen=True)
class LatencyRatio:
    """Result of :func:`latency_ratio`: two latencies measured together and their ratio (times in ms).

    All three numbers are computed the same way, from the same interleaved rounds:
    ``a_ms`` and ``b_ms`` are the medians over the rounds of each round's median call
    time, and ``ratio = a_ms / b_ms`` exactly, so the ratio never disagrees with the two
    times printed next to it.  The spread is the 10th–90th percentile range over the
    rounds (of the per-round times, and of the per-round ratios ``a_r / b_r``).

    Unpacks like the tuple ``(ratio, a_ms, b_ms)``.

    Attributes:
        ratio: ``a_ms / b_ms`` (below 1: ``a`` is faster).
        a_ms, b_ms: median latencies in ms.
        a_p10_ms, a_p90_ms, b_p10_ms, b_p90_ms: spread of the per-round medians, ms.
        ratio_p10, ratio_p90: spread of the per-round ratios.
        rounds: number of interleaved rounds.
    """

    ratio: float
    a_ms: float
    b_ms: float
    a_p10_ms: float
    a_p90_ms: float
    b_p10_ms: float
    b_p90_ms: float
    ratio_p10: float
    ratio_p90: float
    rounds: int

    def __iter__(self):
        return iter((self.ratio, self.a_ms, self.b_ms))

    @property
    def speedup(self) -> float:
        """``b_ms / a_ms``: how many times faster ``a`` is than ``b``."""
        return self.b_ms / self.a_ms

    def __str__(self) -> str:
        return (f"a {self.a_ms:.3f} ms (p10-p90 {self.a_p10_ms:.3f}-{self.a_p90_ms:.3f}), "
                f"b {self.b_ms:.3f} ms (p10-p90 {self.b_p10_ms:.3f}-{self.b_p90_ms:.3f}): "
                f"ratio a/b {self.ratio:.2f} (per-round p10-p90 {self.ratio_p10:.2f}-{self.ratio_p90:.2f}), "
                f"medians over {self.rounds} interleaved rounds")


def _spread(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=10, method="inclusive")
    return q[0], q[-1]


def latency_ratio(model_a, model_b, example_input, rounds: int = 15, repeats: int = 5,
                  warmup: int = 2) -> LatencyRatio:
    """Latency of ``model_a`` divided by that of ``model_b``, timed in many short interleaved rounds.

    On a shared machine the load changes while we measure, in bursts that can double
    the time of every call for tens of milliseconds.  Timing the two models in short
    turns (a, b, then b, a, ...) with :func:`latency` exposes both to the same
    conditions.  Each round gives one median time per model; each model's latency is
    the median of its rounds, which bursts during a minority of the rounds cannot move,
    and the ratio is the ratio of those two medians, so the ratio and the two times are
    always consistent ("a 0.36 ms, b 0.37 ms" never comes with "a is 1.3x faster").

    Args:
        model_a, model_b: models or callables taking ``example_input``.
        example_input: a tensor or tuple of tensors (on the device to time).
        rounds: interleaved rounds, ``>= 1``.
        repeats, warmup: per call of :func:`latency` (``repeats >= 3``, ``warmup >= 0``).

    Returns:
        A :class:`LatencyRatio` (unpacks as ``ratio, a_ms, b_ms``).

    Raises:
        TypeError: a model is not callable; bad ``example_input``; non-int counts.
        ValueError: ``rounds < 1``, ``repeats < 3`` or ``warmup < 0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> r = latency_ratio(nn.Linear(8, 8), nn.Linear(8, 8), torch.zeros(1, 8), rounds=3, repeats=3)
        >>> abs(r.ratio - r.a_ms / r.b_ms) < 1e-12
        True
        >>> ratio, a_ms, b_ms = r
    """
    for name, m in (("model_a", model_a), ("model_b", model_b)):
        if not callable(m):
            raise TypeError(f"latency_ratio: {name} must be a model or callable, got a {type(m).__name__}")
    _as_args(example_input, "latency_ratio")
    rounds = check_int(rounds, "latency_ratio", "rounds", minimum=1)
    repeats = check_int(repeats, "latency_ratio", "repeats", minimum=3)
    warmup = check_int(warmup, "latency_ratio", "warmup", minimum=0)
    a_ms, b_ms = [], []
    for r in range(rounds):
        order = ((model_a, a_ms), (model_b, b_ms)) if r % 2 == 0 else ((model_b, b_ms), (model_a, a_ms))
        for m, out in order:
            out.append(latency(m, example_input, warmup=warmup, repeats=repeats).median_ms)
    a_med, b_med = statistics.median(a_ms), statistics.median(b_ms)
    return LatencyRatio(a_med / b_med, a_med, b_med, *_spread(a_ms), *_spread(b_ms),
                        *_spread([a / b for a, b in zip(a_ms, b_ms)]), rounds)
