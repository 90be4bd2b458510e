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


def _check_model(model, where):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: expected a torch.nn.Module, got {type(model).__name__}")


def count_params(model: nn.Module, nonzero: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of a model.

    Args:
        nonzero: count only entries that are not exactly zero (the size a sparse format
            has to store). Pruning masks applied with ``torch.nn.utils.prune`` are
            honoured because the masked ``weight`` is what the module uses.
        trainable_only: count only parameters with ``requires_grad``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    _check_model(model, "count_params")
    total = 0
    for name, p in _effective_params(model):
        if trainable_only and not p.requires_grad:
            continue
        total += int((p != 0).sum()) if nonzero else p.numel()
    return total


def _effective_params(model: nn.Module):
    """(name, tensor) of the weights a model actually uses: for a module pruned with
    ``torch.nn.utils.prune`` that is ``weight`` (= ``weight_orig * weight_mask``)."""
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if p_name.endswith("_orig"):
                yield f"{mod_name}.{p_name[:-5]}", getattr(mod, p_name[:-5]).detach()
            else:
                yield f"{mod_name}.{p_name}", p.detach()


def sparsity(obj) -> float:
    """Fraction of exactly-zero entries, in ``[0, 1]``.

    Args:
        obj: a tensor, or a model (then over the weights of its ``Linear`` and
            ``Conv`` layers, which is what pruning targets; biases and norms excluded).

    Raises:
        TypeError: neither a tensor nor a model.
        ValueError: the model has no Linear/Conv weight, or the tensor is empty.
    """
    if isinstance(obj, torch.Tensor):
        if obj.numel() == 0:
            raise ValueError("sparsity: the tensor is empty")
        return float((obj == 0).sum()) / obj.numel()
    _check_model(obj, "sparsity")
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
    """
    from torch.utils.flop_counter import FlopCounterMode

    _check_model(model, "flops")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError("flops: example_input must be a tensor or a tuple of tensors")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args)
    model.train(was_training)
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
        fn_or_model: an ``nn.Module`` (run in eval mode under ``torch.no_grad``) or any
            callable taking ``example_input`` (an ONNX Runtime session wrapper, say).
        example_input: a tensor or tuple of tensors passed positionally.
        warmup: untimed calls first (caches, lazy initialization, allocator), ``>= 0``.
        repeats: timed calls, ``>= 3``.
        device: for CUDA inputs, the device to synchronize before reading the clock.

    Returns:
        A :class:`Latency` in milliseconds.

    Raises:
        ValueError: ``warmup < 0`` or ``repeats < 3``.
        TypeError: ``fn_or_model`` is not callable.
    """
    if not callable(fn_or_model):
        raise TypeError(f"latency: expected a model or callable, got {type(fn_or_model).__name__}")
    if warmup < 0 or repeats < 3:
        raise ValueError(f"latency: need warmup >= 0 and repeats >= 3, got warmup={warmup}, repeats={repeats}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    is_module = isinstance(fn_or_model, nn.Module)
    was_training = fn_or_model.training if is_module else False
    if is_module:
        fn_or_model.eval()
    cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        for _ in range(warmup):
            fn_or_model(*args)
        sync()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn_or_model(*args)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    if is_module:
        fn_or_model.train(was_training)
    q = statistics.quantiles(times, n=10)
    return Latency(statistics.median(times), q[0], q[-1], repeats)


def latency_ratio(model_a, model_b, example_input, rounds: int = 15, repeats: int = 5, warmup: int = 2):
    """Latency of ``model_a`` divided by that of ``model_b``, timed in many short alternating rounds.

    On a shared machine the load changes while we measure, in bursts that can double
    the time of every call for tens of milliseconds.  Timing the two models in short
    turns (a, b, a, b, ...) with :func:`nnbook.measure.latency` exposes both to the same
    conditions.  Each round gives a ratio of the two medians; the result is the median
    of the rounds' ratios, which bursts during a minority of the rounds cannot move.

    Args:
        model_a, model_b: models or callables taking ``example_input``.
        example_input: a tensor or tuple of tensors (on the device to time).
        rounds: alternating rounds, ``>= 1``.
        repeats, warmup: per call of :func:`nnbook.measure.latency`.

    Returns:
        ``(ratio, median_ms_a, median_ms_b)``, the latter two the medians over the rounds, in ms.

    Raises:
        ValueError: ``rounds < 1``; TypeError: a model is not callable.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"latency_ratio: rounds must be an int >= 1, got {rounds!r}")
    a_ms, b_ms = [], []
    for _ in range(rounds):
        a_ms.append(latency(model_a, example_input, warmup=warmup, repeats=repeats).median_ms)
        b_ms.append(latency(model_b, example_input, warmup=warmup, repeats=repeats).median_ms)
    ratio = statistics.median(a / b for a, b in zip(a_ms, b_ms))
    return ratio, statistics.median(a_ms), statistics.median(b_ms)
