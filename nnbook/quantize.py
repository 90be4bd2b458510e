"""Quantization (and its frequent companion, low-rank factorization) written to be read.

Chapter 5 builds everything from these pieces:

* **Uniform affine quantization** (Jacob et al., 2018, "Quantization and Training of
  Neural Networks for Efficient Integer-Arithmetic-Only Inference"; Krishnamoorthi,
  2018, "Quantizing deep convolutional networks for efficient inference: A
  whitepaper"): a real value ``x`` is stored as an integer code
  ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and read back as
  ``x_hat = (q - zero_point) * scale``.  :func:`qparams`, :func:`quantize`,
  :func:`dequantize`, :func:`fake_quantize`.
* **Power-of-two (logarithmic) quantization** (Miyashita, Lee and Murmann, 2016,
  "Convolutional Neural Networks using Logarithmic Data Representation"; Zhou et al.,
  2017, "Incremental Network Quantization: Towards Lossless CNNs with Low-Precision
  Weights"): every value becomes ``0`` or ``±2^e``.  :func:`quantize_pow2`.
* **Quantization-aware training** with the straight-through estimator (Bengio,
  Léonard and Courville, 2013, "Estimating or Propagating Gradients Through Stochastic
  Neurons for Conditional Computation"): :class:`RoundSTE`, :class:`QuantLayer`,
  :func:`quantize_model`, and post-training calibration of activation ranges with
  forward hooks, :func:`calibrate`.
* **Low-rank factorization** by truncated SVD (Denton et al., 2014, "Exploiting Linear
  Structure Within Convolutional Networks for Efficient Evaluation").  This is *not*
  quantization: it changes the shape of the computation, not the number format.
  :func:`factorize_linear`, :func:`factorize_conv2d`, :func:`low_rank`.
* **Real int8 inference** through a maintained runtime: ``torch.onnx.export`` then
  ONNX Runtime's static quantization.  :func:`export_onnx`, :func:`quantize_onnx`,
  :func:`onnx_tensor_bytes`, :class:`OnnxModel`, :func:`cpu_int8_features`.

Why one module: it is the companion of one chapter and is meant to be read top to bottom, in
the chapter's order (grids, power of two, model tools, low rank, ONNX Runtime); every section is
short and stands alone, so splitting it would only add imports between files.

Conventions.  Bit widths from 2 to 16 are accepted (``bits`` outside that range
raises ``ValueError``; 1 bit is rejected because a symmetric 1-bit grid has no
non-zero level).  Integer codes are returned as ``torch.int32`` so that 9- to 16-bit
codes fit; :func:`quantize` can narrow them to ``int8``/``uint8`` for storage.
*Symmetric* grids are signed and narrow, ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with
``zero_point = 0`` (so 8 bits give -127..127 and 2 bits give the ternary -1, 0, 1);
*asymmetric* grids are unsigned, ``[0, 2^b - 1]``, with an integer zero point chosen
so that the real value 0 is represented exactly (Jacob et al., 2018).
"""
from __future__ import annotations

import copy
import logging
import math
import os
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import _given, check_bool, check_choice, check_float, check_int, check_model, check_tensor, set_submodule

__all__ = [
    "MIN_BITS", "MAX_BITS", "qrange", "qparams", "quantize", "dequantize", "fake_quantize",
    "quantize_pow2", "RoundSTE", "round_ste", "fold_batchnorm", "QuantLayer", "quantize_model",
    "calibrate", "quantized_size_bytes", "factorize_linear", "factorize_conv2d", "low_rank",
    "export_onnx", "onnx_tensor_bytes", "quantize_onnx", "OnnxModel", "cpu_int8_features",
]

MIN_BITS, MAX_BITS = 2, 16
_QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


# --------------------------------------------------------------------------- checks
def _check_bits(bits, where: str, name: str = "bits") -> int:
    bits = check_int(bits, where, name)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{where}: {name} must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def _check_tensor(x, where: str, name: str = "x", finite: bool = True) -> torch.Tensor:
    """A non-empty floating-point tensor; with ``finite`` (the default) NaN and Inf are refused,
    because a quantization grid computed from them is meaningless."""
    return check_tensor(x, where, name, floating=True, finite=finite)


def _check_axis(x: torch.Tensor, axis, where: str) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{where}: axis must be an int or None, got {_given(axis)}")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"{where}: axis must be in [{-x.dim()}, {x.dim() - 1}] for a tensor of shape "
                         f"{tuple(x.shape)}, got {axis}")
    return axis % x.dim()


def _check_model(model, where: str) -> nn.Module:
    return check_model(model, where)


def _check_qparam(value, x: torch.Tensor, axis: int | None, where: str, name: str) -> torch.Tensor:
    """``scale``/``zero_point`` as a float32 tensor: a scalar, or one value per slice along ``axis``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a number or a tensor, got {_given(value)}")
    try:
        t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{where}: {name} must be a number or a tensor, got {_given(value)}") from None
    if t.dim() > 1 or (t.dim() == 1 and t.numel() != 1 and (axis is None or t.numel() != x.shape[axis])):
        want = "a scalar" if axis is None else f"a scalar or a vector of length {x.shape[axis]} (x.shape[axis])"
        raise ValueError(f"{where}: {name} must be {want}, got shape {tuple(t.shape)}")
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where}: {name} must be finite, got {t.tolist()}")
    return t.reshape(()) if t.numel() == 1 and axis is None else t


def _check_scale_zp(scale, zero_point, x, axis, bits, symmetric, where):
    """Validated ``(scale, zero_point)``: every scale finite and > 0, every zero point an integer in [qmin, qmax]."""
    s = _check_qparam(scale, x, axis, where, "scale")
    z = _check_qparam(zero_point, x, axis, where, "zero_point")
    if bool((s <= 0).any()):
        raise ValueError(f"{where}: scale must be > 0, got {s.tolist()}")
    qmin, qmax = qrange(bits, symmetric)
    if bool((z != torch.round(z)).any()):
        raise ValueError(f"{where}: zero_point must hold integers, got {z.tolist()}")
    if bool(((z < qmin) | (z > qmax)).any()):
        raise ValueError(f"{where}: zero_point must be in [{qmin}, {qmax}] for a {bits}-bit "
                         f"{'symmetric' if symmetric else 'asymmetric'} grid, got {z.tolist()}")
    return s, z


def _per_channel_view(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector ``t`` (length ``x.shape[axis]``) so it broadcasts against ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def _amin_amax(x: torch.Tensor, axis: int | None):
    """Minimum and maximum of ``x`` over everything (``axis=None``) or per slice along ``axis``."""
    if axis is None:
        return x.min(), x.max()
    dims = [d for d in range(x.dim()) if d != axis]
    if not dims:
        return x, x
    return x.amin(dim=dims), x.amax(dim=dims)


# ------------------------------------------------------------------ uniform affine
def qrange(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """Smallest and largest integer code of a ``bits``-bit grid.

    Symmetric: ``(-(2^(bits-1) - 1), 2^(bits-1) - 1)`` (signed, narrow range, so that
    ``-x`` is representable whenever ``x`` is); asymmetric: ``(0, 2^bits - 1)``.

    Raises:
        TypeError: ``bits`` is not an int; ``symmetric`` is not a bool.
        ValueError: ``bits`` outside ``2..16``.

    Examples:
        >>> qrange(8), qrange(8, symmetric=False), qrange(2)
        ((-127, 127), (0, 255), (-1, 1))
    """
    _check_bits(bits, "qrange")
    if check_bool(symmetric, "qrange", "symmetric"):
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _range_to_qparams(mn: torch.Tensor, mx: torch.Tensor, bits: int, symmetric: bool):
    """Scale and zero point of the grid that covers ``[mn, mx]`` widened to contain 0."""
    mn, mx = torch.clamp(mn, max=0.0), torch.clamp(mx, min=0.0)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = torch.maximum(-mn, mx) / qmax
    else:
        scale = (mx - mn) / (qmax - qmin)
    eps = torch.finfo(torch.float32).eps  # no scale below float32's epsilon (as PyTorch's observers)
    scale = torch.where(scale > 0, scale.clamp(min=eps), torch.ones_like(scale))  # all-zero range: 1
    if symmetric:
        return scale, torch.zeros_like(scale)
    return scale, torch.clamp(qmin - torch.round(mn / scale), qmin, qmax)


def qparams(x: torch.Tensor, bits: int = 8, symmetric: bool = True, axis: int | None = None,
            lo=None, hi=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range of ``x`` onto a ``bits``-bit grid (min–max rule).

    The real range ``[lo, hi]`` (by default ``x.min(), x.max()``, per channel when
    ``axis`` is given) is first widened to contain 0, so that 0 — padding, ReLU
    outputs, pruned weights — is represented exactly.  Then

    * symmetric: ``scale = max(|lo|, |hi|) / qmax``, ``zero_point = 0``;
    * asymmetric: ``scale = (hi - lo) / (qmax - qmin)``,
      ``zero_point = qmin - round(lo / scale)``, an integer in ``[qmin, qmax]``.

    Args:
        x: float tensor of any shape (a weight, or a batch of activations).
        bits: bit width, ``2..16``.
        symmetric: which grid (see the module docstring).
        axis: ``None`` for one scale per tensor; an int for one scale per slice along
            that axis ("per channel": ``axis=0`` for the output channels of a Conv or
            Linear weight).
        lo, hi: a calibrated range (floats or per-channel tensors) to use instead of
            the range of ``x``; both or neither.

    Returns:
        ``(scale, zero_point)``: float32 tensors, scalars for per-tensor or of shape
        ``(x.shape[axis],)`` per channel.  ``zero_point`` holds integers.  An all-zero
        range gets ``scale = 1`` (any scale represents it exactly); a scale below float32's
        machine epsilon (about 1.2e-7) is raised to it, as PyTorch's observers do.

    Raises:
        TypeError: ``x`` is not a floating-point tensor; ``bits``/``axis`` are not ints;
            ``symmetric`` is not a bool.
        ValueError: ``bits`` outside ``2..16``; ``axis`` out of range; ``x`` empty or
            holding NaN/Inf; only one of ``lo``/``hi`` given; ``lo``/``hi`` not finite
            or of the wrong length; ``lo > hi``.

    Examples:
        >>> import torch
        >>> scale, zp = qparams(torch.tensor([-1.0, 0.5, 2.54]), bits=8)
        >>> round(float(scale), 4), int(zp)      # 2.54 / 127
        (0.02, 0)
        >>> scale, zp = qparams(torch.tensor([0.0, 2.55]), bits=8, symmetric=False)
        >>> round(float(scale), 4), int(zp)      # 2.55 / 255
        (0.01, 0)
    """
    _check_tensor(x, "qparams", finite=lo is None)
    _check_bits(bits, "qparams")
    symmetric = check_bool(symmetric, "qparams", "symmetric")
    axis = _check_axis(x, axis, "qparams")
    if (lo is None) != (hi is None):
        raise ValueError("qparams: give both lo and hi, or neither")
    if lo is None:
        mn, mx = _amin_amax(x.detach().float(), axis)
    else:
        mn = _check_qparam(lo, x, axis, "qparams", "lo")
        mx = _check_qparam(hi, x, axis, "qparams", "hi")
        if bool((mn > mx).any()):
            raise ValueError(f"qparams: the range must have lo <= hi, got lo={mn.tolist()}, hi={mx.tolist()}")
    return _range_to_qparams(mn, mx, bits, symmetric)


def quantize(x: torch.Tensor, scale, zero_point, bits: int = 8, symmetric: bool = True,
             axis: int | None = None, storage: bool = False) -> torch.Tensor:
    """Integer codes ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Values outside the representable range ``[(qmin - zp) * scale, (qmax - zp) * scale]``
    are clamped to its ends (saturation).  ``round`` is round-half-to-even
    (``torch.round``).

    Args:
        x: float tensor.
        scale, zero_point: from :func:`qparams` (scalars, or vectors along ``axis``).
        bits, symmetric: the grid, as given to :func:`qparams`.
        axis: the channel axis that ``scale``/``zero_point`` run along, or ``None``.
        storage: return the narrowest storage dtype — ``torch.int8`` (symmetric) or
            ``torch.uint8`` (asymmetric) when ``bits <= 8``, else ``torch.int16``
            / ``torch.int32`` — instead of ``torch.int32``.

    Returns:
        An integer tensor with the shape of ``x``.

    Raises:
        TypeError, ValueError: as :func:`qparams`; also ``scale`` not finite and > 0,
            ``zero_point`` not an integer in ``[qmin, qmax]``, either of the wrong
            length for ``axis``, ``storage`` not a bool.

    Examples:
        >>> import torch
        >>> quantize(torch.tensor([-1.0, 0.26, 9.0]), scale=0.5, zero_point=0, bits=4)
        tensor([-2,  1,  7], dtype=torch.int32)
    """
    _check_tensor(x, "quantize")
    _check_bits(bits, "quantize")
    symmetric = check_bool(symmetric, "quantize", "symmetric")
    storage = check_bool(storage, "quantize", "storage")
    axis = _check_axis(x, axis, "quantize")
    qmin, qmax = qrange(bits, symmetric)
    s, z = _check_scale_zp(scale, zero_point, x, axis, bits, symmetric, "quantize")
    s, z = _per_channel_view(s, x, axis), _per_channel_view(z, x, axis)
    q = torch.clamp(torch.round(x.detach().float() / s) + z, qmin, qmax).to(torch.int32)
    if storage:
        if bits <= 8:
            return q.to(torch.int8 if symmetric else torch.uint8)
        if symmetric:
            return q.to(torch.int16)
    return q


def dequantize(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` of integer codes, as float32.

    Raises:
        TypeError: ``q`` is not an integer tensor.
        ValueError: ``axis`` out of range; ``scale`` not finite and > 0; ``zero_point``
            not a finite integer; either of the wrong length for ``axis``.

    Examples:
        >>> import torch
        >>> dequantize(torch.tensor([0, 3, 255]), scale=0.1, zero_point=3)
        tensor([-0.3000,  0.0000, 25.2000])
    """
    check_tensor(q, "dequantize", "q")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"dequantize: q must be an integer tensor of codes, got dtype {q.dtype}")
    axis = _check_axis(q, axis, "dequantize")
    s = _check_qparam(scale, q, axis, "dequantize", "scale")
    z = _check_qparam(zero_point, q, axis, "dequantize", "zero_point")
    if bool((s <= 0).any()):
        raise ValueError(f"dequantize: scale must be > 0, got {s.tolist()}")
    if bool((z != torch.round(z)).any()):
        raise ValueError(f"dequantize: zero_point must hold integers, got {z.tolist()}")
    s, z = _per_channel_view(s, q, axis), _per_channel_view(z, q, axis)
    return (q.float() - z) * s


class RoundSTE(torch.autograd.Function):
    """``round`` whose backward pass pretends it was the identity: the straight-through estimator.

    ``round`` has zero gradient almost everywhere, so training through it would never
    move a weight.  The STE (Bengio, Léonard and Courville, 2013) passes the incoming
    gradient straight through.  The same thing written without a custom Function is
    the *detach trick*: ``x + (torch.round(x) - x).detach()``.
    """

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round`` with a straight-through (identity) gradient; see :class:`RoundSTE`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.

    Examples:
        >>> import torch
        >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> y = round_ste(x)
        >>> y.sum().backward()
        >>> y.tolist(), x.grad.tolist()
        ([0.0, 2.0], [1.0, 1.0])
    """
    check_tensor(x, "round_ste", "x", floating=True, nonempty=False)
    return RoundSTE.apply(x)


def fake_quantize(x: torch.Tensor, bits: int = 8, symmetric: bool = True, axis: int | None = None,
                  scale=None, zero_point=None) -> torch.Tensor:
    """Quantize then dequantize, staying in float: what a quantized model computes, simulated.

    ``x_hat = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``.
    Differentiable by the "clipped" straight-through estimator (Jacob et al., 2018):
    the gradient with respect to ``x`` is 1 wherever the unclamped code
    ``round(x / scale) + zero_point`` lies in ``[qmin, qmax]`` — *including* values that
    round to the end codes ``qmin`` and ``qmax`` — and 0 only where the code saturates.
    This is the backward pass of ``torch.fake_quantize_per_tensor_affine`` and
    ``torch.fake_quantize_per_channel_affine``.  Scale and zero point are treated as
    constants (no gradient).

    Args:
        x: float tensor.
        bits, symmetric, axis: the grid (see :func:`qparams`).
        scale, zero_point: fixed quantization parameters (e.g. a calibrated activation
            range); by default computed from ``x`` with :func:`qparams`.

    Returns:
        A float tensor like ``x`` holding only values of the grid.

    Raises:
        TypeError, ValueError: as :func:`qparams` and :func:`quantize` (NaN/Inf in ``x``
            included); only one of ``scale``/``zero_point`` given.

    Examples:
        >>> import torch
        >>> x = torch.tensor([-1.0, 0.3, 0.99, 5.0], requires_grad=True)
        >>> y = fake_quantize(x, bits=3, scale=1 / 3, zero_point=0)   # grid -1, -2/3, ..., 1
        >>> y.sum().backward()
        >>> [round(v, 3) for v in y.tolist()], x.grad.tolist()        # 5.0 saturates: gradient 0
        ([-1.0, 0.333, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0])
    """
    _check_tensor(x, "fake_quantize")
    _check_bits(bits, "fake_quantize")
    symmetric = check_bool(symmetric, "fake_quantize", "symmetric")
    axis = _check_axis(x, axis, "fake_quantize")
    if (scale is None) != (zero_point is None):
        raise ValueError("fake_quantize: give both scale and zero_point, or neither")
    if scale is None:
        scale, zero_point = qparams(x, bits, symmetric, axis)
    else:
        scale, zero_point = _check_scale_zp(scale, zero_point, x, axis, bits, symmetric, "fake_quantize")
    qmin, qmax = qrange(bits, symmetric)
    s = _per_channel_view(scale.to(x.dtype), x, axis).detach()
    z = _per_channel_view(zero_point.to(x.dtype), x, axis).detach()
    with torch.no_grad():
        code = torch.round(x / s) + z                     # the integer code before saturation
        inside = (code >= qmin) & (code <= qmax)          # where the STE passes the gradient
        x_hat = (torch.clamp(code, qmin, qmax) - z) * s
    # value: x_hat; gradient: 1 where the code is inside [qmin, qmax] (ends included), 0 where it saturates,
    # exactly the backward of torch.fake_quantize_per_channel_affine / _per_tensor_affine
    pass_through = x * inside
    return pass_through + (x_hat - pass_through).detach()


# ---------------------------------------------------------------- power of two
def quantize_pow2(x: torch.Tensor, bits: int = 4, axis: int | None = None) -> torch.Tensor:
    """Round every value to the nearest of ``{0, ±2^e : e_min <= e <= e_max}`` (fake-quantized).

    A ``bits``-bit code is one sign bit plus ``bits - 1`` bits that choose among
    ``2^(bits-1)`` magnitudes: zero and ``2^(bits-1) - 1`` consecutive powers of two.
    As in INQ (Zhou et al., 2017), the largest exponent is
    ``e_max = floor(log2(4 * max|x| / 3))`` (so the largest value rounds to ``2^e_max``),
    and each value goes to the *nearest* level in the linear domain (a magnitude
    between ``2^e`` and ``2^(e+1)`` rounds up from ``1.5 * 2^e``; below
    ``2^(e_min - 1)`` it becomes 0).  The level *set* is not INQ's: INQ with ``b`` bits
    keeps zero and only ``2^(b-2)`` exponents (one bit marks zero), while this grid uses
    all ``2^(b-1)`` magnitude codes (zero and ``2^(b-1) - 1`` exponents).  Miyashita et
    al. (2016) round in the log domain instead of the linear one.  Multiplying by such a
    weight is a bit shift.

    Args:
        x: float tensor.
        bits: ``2..16`` (2 bits give the ternary ``{0, ±2^e_max}``).
        axis: ``None`` for one ``e_max`` per tensor, or the channel axis for one per channel.

    Returns:
        A float tensor like ``x`` (no gradient is defined through it; use it after training).

    Raises:
        TypeError, ValueError: as :func:`qparams`.

    Examples:
        >>> import torch
        >>> quantize_pow2(torch.tensor([0.9, -0.3, 0.2, 0.1]), bits=3).tolist()   # levels 0, 1/4, 1/2, 1
        [1.0, -0.25, 0.25, 0.0]
    """
    _check_tensor(x, "quantize_pow2")
    _check_bits(bits, "quantize_pow2")
    axis = _check_axis(x, axis, "quantize_pow2")
    x = x.detach()
    mag = x.abs()
    if axis is None:
        peak = mag.max()
    else:
        peak = mag.amax(dim=[d for d in range(x.dim()) if d != axis]) if x.dim() > 1 else mag
    peak = _per_channel_view(peak, x, axis)
    tiny = torch.finfo(x.dtype).tiny
    e_max = torch.floor(torch.log2(torch.clamp(4 * peak / 3, min=tiny)))
    e_min = e_max - (2 ** (bits - 1) - 2)
    e = torch.floor(torch.log2(torch.clamp(mag, min=tiny)))
    e = e + (mag >= 1.5 * torch.exp2(e)).to(x.dtype)       # nearest power in the linear domain
    e = torch.minimum(torch.maximum(e, e_min), e_max)
    out = torch.sign(x) * torch.exp2(e)
    return torch.where(mag < torch.exp2(e_min - 1), torch.zeros_like(x), out)


# ------------------------------------------------------------ model-level tools
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``Conv → BatchNorm`` pair folded into one Conv.

    In eval mode BatchNorm is a per-channel affine map, so it can be merged into the
    preceding convolution's weight and bias (Jacob et al., 2018, section 3.2); a
    deployed int8 model quantizes the *folded* weights.  Folding is done by PyTorch's
    ``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BatchNorm is replaced by
    ``nn.Identity``.  Only pairs that are consecutive children of an ``nn.Sequential``
    are found (the layout of the book's models).

    Returns:
        A new model in eval mode; the input model is not changed.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> folded = fold_batchnorm(m)
        >>> type(folded[1]).__name__, torch.allclose(folded(torch.ones(1, 1, 3, 3)), m(torch.ones(1, 1, 3, 3)))
        ('Identity', True)
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    _check_model(model, "fold_batchnorm")
    model = copy.deepcopy(model).eval()
    bns = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if type(conv) in bns and isinstance(bn, bns[type(conv)]) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


class QuantLayer(nn.Module):
    """A Linear/Conv1d/Conv2d layer whose weight (and optionally input) is fake-quantized.

    The forward pass is what an integer kernel computes, simulated in float:
    the input is fake-quantized with a calibrated range (``act_bits``), the weight with
    its current min–max range (``w_bits``; per output channel when ``per_channel``),
    then the float layer runs on the grid values.  Gradients flow by the
    straight-through estimator, so the same module serves post-training quantization
    (PTQ) and quantization-aware training (QAT).  The bias stays float (in an integer
    kernel it is int32 with scale ``s_input * s_weight``, fine enough to ignore).

    Attributes:
        layer: the wrapped float layer (its parameters are the ones trained by QAT).
        w_bits, symmetric, per_channel, scheme: the weight grid; ``scheme`` is
            ``"affine"`` or ``"pow2"`` (power of two, inference only).
        act_bits, act_symmetric: the input grid, or ``act_bits=None`` for float inputs.
        act_lo, act_hi: the calibrated input range (buffers, ``nan`` until :func:`calibrate`).

    Raises:
        TypeError: ``layer`` is not a Linear/Conv1d/Conv2d; a flag is not a bool; a bit width not an int.
        ValueError: a bit width outside ``2..16``; an unknown ``scheme``; a padding mode other than zeros.
        RuntimeError: (forward) ``act_bits`` is set but :func:`calibrate` was not run.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> q = QuantLayer(nn.Linear(4, 2), w_bits=4)
        >>> len(torch.unique(q.quantized_weight()[0])) <= 2 ** 4 - 1
        True
    """

    def __init__(self, layer: nn.Module, w_bits: int = 8, symmetric: bool = True, per_channel: bool = True,
                 act_bits: int | None = None, act_symmetric: bool = False, scheme: str = "affine"):
        super().__init__()
        if not isinstance(layer, _QUANTIZABLE):
            raise TypeError(f"QuantLayer: expected one of {[c.__name__ for c in _QUANTIZABLE]}, got {type(layer).__name__}")
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.padding_mode != "zeros":
            raise ValueError(f"QuantLayer: only padding_mode='zeros' is supported, got {layer.padding_mode!r}")
        check_choice(scheme, "QuantLayer", "scheme", ("affine", "pow2"))
        self.layer = layer
        self.w_bits = _check_bits(w_bits, "QuantLayer", "w_bits")
        self.act_bits = None if act_bits is None else _check_bits(act_bits, "QuantLayer", "act_bits")
        self.symmetric = check_bool(symmetric, "QuantLayer", "symmetric")
        self.per_channel = check_bool(per_channel, "QuantLayer", "per_channel")
        self.scheme = scheme
        self.act_symmetric = check_bool(act_symmetric, "QuantLayer", "act_symmetric")
        self.register_buffer("act_lo", torch.tensor(float("nan")))
        self.register_buffer("act_hi", torch.tensor(float("nan")))

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight (same shape and dtype as ``layer.weight``)."""
        w, axis = self.layer.weight, (0 if self.per_channel else None)
        if self.scheme == "pow2":
            return quantize_pow2(w, self.w_bits, axis)
        return fake_quantize(w, self.w_bits, self.symmetric, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits is not None:
            if torch.isnan(self.act_lo):
                raise RuntimeError("QuantLayer: activation range not calibrated; run nnbook.quantize.calibrate first")
            scale, zp = _range_to_qparams(self.act_lo, self.act_hi, self.act_bits, self.act_symmetric)
            x = fake_quantize(x, self.act_bits, self.act_symmetric, scale=scale, zero_point=zp)
        w, lay = self.quantized_weight(), self.layer
        if isinstance(lay, nn.Linear):
            return F.linear(x, w, lay.bias)
        conv = F.conv1d if isinstance(lay, nn.Conv1d) else F.conv2d
        return conv(x, w, lay.bias, lay.stride, lay.padding, lay.dilation, lay.groups)

    def extra_repr(self) -> str:
        act = "float" if self.act_bits is None else f"{self.act_bits}-bit {'sym' if self.act_symmetric else 'asym'}"
        grid = "pow2" if self.scheme == "pow2" else ("sym" if self.symmetric else "asym")
        return f"weights={self.w_bits}-bit {grid} {'per-channel' if self.per_channel else 'per-tensor'}, inputs={act}"


def quantize_model(model: nn.Module, w_bits: int = 8, symmetric: bool = True, per_channel: bool = True,
                   act_bits: int | None = None, act_symmetric: bool = False, scheme: str = "affine",
                   fold_bn: bool = True, skip: Iterable[str] = ()) -> nn.Module:
    """A copy of ``model`` with every Linear/Conv1d/Conv2d replaced by a :class:`QuantLayer`.

    Args:
        model: any model; it is deep-copied and not changed.
        w_bits, symmetric, per_channel, scheme: the weight grid (see :class:`QuantLayer`).
        act_bits, act_symmetric: quantize each layer's *input* too (``None``: keep it
            float).  Run :func:`calibrate` before using the model.
        fold_bn: fold BatchNorm into the preceding convolutions first (:func:`fold_batchnorm`),
            as deployment does.
        skip: names (as in ``model.named_modules()``) of layers to leave in float.

    Returns:
        The new model, in the train/eval mode of ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; a flag is not a bool; ``skip`` a string.
        ValueError: bad bit widths or scheme; a name in ``skip`` that is not a
            quantizable layer; a model with no Linear/Conv layer.

    Examples:
        >>> from torch import nn
        >>> q = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), w_bits=4)
        >>> [type(m).__name__ for m in q]
        ['QuantLayer', 'ReLU', 'QuantLayer']
    """
    _check_model(model, "quantize_model")
    _check_bits(w_bits, "quantize_model", "w_bits")
    if act_bits is not None:
        _check_bits(act_bits, "quantize_model", "act_bits")
    check_choice(scheme, "quantize_model", "scheme", ("affine", "pow2"))
    for flag, value in (("symmetric", symmetric), ("per_channel", per_channel), ("act_symmetric", act_symmetric),
                        ("fold_bn", fold_bn)):
        check_bool(value, "quantize_model", flag)
    if isinstance(skip, str):
        raise TypeError(f"quantize_model: skip must be a collection of layer names, got the string {skip!r}")
    skip = set(skip)
    layers = {n for n, m in model.named_modules() if isinstance(m, _QUANTIZABLE)}
    if not layers:
        raise ValueError("quantize_model: the model has no Linear/Conv1d/Conv2d layer to quantize")
    if skip - layers:
        raise ValueError(f"quantize_model: skip names {sorted(skip - layers)} are not Linear/Conv layers of the model")
    training = model.training
    new = fold_batchnorm(model) if fold_bn else copy.deepcopy(model)
    if "" in layers - skip:  # the model is itself one Linear/Conv layer
        return QuantLayer(new, w_bits, symmetric, per_channel, act_bits, act_symmetric, scheme).train(training)
    for name in sorted(layers - skip):
        set_submodule(new, name, QuantLayer(new.get_submodule(name), w_bits, symmetric, per_channel,
                                            act_bits, act_symmetric, scheme), "quantize_model")
    return new.train(training)


@torch.no_grad()
def calibrate(qmodel: nn.Module, inputs, method: str = "minmax", percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """Post-training calibration: set the input range of every :class:`QuantLayer` from data.

    A forward pre-hook on each QuantLayer records the inputs it receives while
    ``inputs`` are run through the model in float (activation quantization is switched
    off during calibration, the usual choice).  The range is then

    * ``"minmax"``: the smallest and largest value seen;
    * ``"percentile"``: the ``(100 - p)``-th and ``p``-th percentiles, which ignores
      rare outliers at the price of clipping them (Krishnamoorthi, 2018; Wu et al.,
      2020, "Integer Quantization for Deep Learning Inference").

    Args:
        qmodel: a model from :func:`quantize_model` (changed in place: its ranges are set).
        inputs: a tensor ``(N, ...)``, or an iterable of tensors or ``(x, y)`` batches.
        method: ``"minmax"`` or ``"percentile"``.
        percentile: ``p`` in ``(50, 100]`` for the percentile method.

    Returns:
        ``{layer name: (lo, hi)}`` — the ranges set.

    Raises:
        TypeError: ``qmodel`` is not a module; a batch is not a floating-point tensor.
        ValueError: unknown method, bad percentile, no QuantLayer, no data, a batch with
            NaN/Inf, a batch the model cannot run (wrong shape), or NaN/Inf activations.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> q = quantize_model(nn.Sequential(nn.Linear(4, 2)), act_bits=8)
        >>> calibrate(q, torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
        {'0': (0.0, 3.0)}
    """
    _check_model(qmodel, "calibrate")
    check_choice(method, "calibrate", "method", ("minmax", "percentile"))
    percentile = check_float(percentile, "calibrate", "percentile", minimum=50.0, maximum=100.0, min_open=True)
    qlayers = {n: m for n, m in qmodel.named_modules() if isinstance(m, QuantLayer)}
    if not qlayers:
        raise ValueError("calibrate: the model has no QuantLayer; build it with quantize_model first")
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in qlayers}
    saved_bits = {n: m.act_bits for n, m in qlayers.items()}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: seen[n].append(args[0].detach().flatten().float().cpu()))
             for n, m in qlayers.items()]
    batches = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    modes = [(m, m.training) for m in qmodel.modules()]
    qmodel.eval()
    dev = next(qmodel.parameters()).device
    try:
        for m in qlayers.values():
            m.act_bits = None
        if not isinstance(batches, Iterable):
            raise TypeError(f"calibrate: inputs must be a tensor or an iterable of batches, got {_given(inputs)}")
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"calibrate: batches must be tensors or (x, y) pairs, got {_given(x)}")
            _check_tensor(x, "calibrate", "a calibration batch")
            try:
                qmodel(x.to(dev))
            except (RuntimeError, ValueError, IndexError) as exc:
                raise ValueError(f"calibrate: the model cannot run on a batch of shape {tuple(x.shape)} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    finally:
        for h in hooks:
            h.remove()
        for n, m in qlayers.items():
            m.act_bits = saved_bits[n]
        for m, training in modes:  # every sub-module back in its own mode, also after an error
            m.training = training
    ranges = {}
    for n, m in qlayers.items():
        if not seen[n]:
            raise ValueError("calibrate: no data was run through the model")
        v = torch.cat(seen[n])
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"calibrate: the input of {n!r} holds NaN or Inf; no range can be set")
        if method == "minmax":
            lo, hi = float(v.min()), float(v.max())
        else:
            if v.numel() > 2 ** 24:  # torch.quantile's limit: subsample evenly
                v = v[:: math.ceil(v.numel() / 2 ** 24)]
            q = torch.tensor([1 - percentile / 100, percentile / 100])
            lo, hi = (float(t) for t in torch.quantile(v, q))
        m.act_lo.fill_(lo)
        m.act_hi.fill_(hi)
        ranges[n] = (lo, hi)
    return ranges


def quantized_size_bytes(model: nn.Module) -> int:
    """Bytes needed to store a model quantized by :func:`quantize_model` (the payload, no file format).

    For each :class:`QuantLayer` weight: ``ceil(numel * w_bits / 8)`` bytes of integer
    codes, plus per scale (one per output channel, or one per tensor) a float32 scale
    (4 bytes) and, for an asymmetric grid, a zero point of ``ceil(w_bits / 8)`` bytes;
    a power-of-two grid stores one int8 exponent ``e_max`` per scale instead.  Every
    other floating-point parameter or buffer (biases, BatchNorm statistics) costs 4 bytes
    per value, and a calibrated input range 8 bytes; a float32 model costs ``4 * numel`` bytes.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> from torch import nn
        >>> quantized_size_bytes(nn.Linear(10, 10))                       # 110 float32 values
        440
        >>> quantized_size_bytes(quantize_model(nn.Linear(10, 10), w_bits=8))   # 100 B + 10 scales + 10 biases
        180
    """
    _check_model(model, "quantized_size_bytes")
    total, counted = 0, set()
    for m in model.modules():
        if isinstance(m, QuantLayer):
            w = m.layer.weight
            n_scales = w.shape[0] if m.per_channel else 1
            if m.scheme == "pow2":
                per_scale = 1
            else:
                per_scale = 4 + (0 if m.symmetric else math.ceil(m.w_bits / 8))
            total += math.ceil(w.numel() * m.w_bits / 8) + n_scales * per_scale
            total += 8 if m.act_bits is not None else 0  # the calibrated input range (two float32)
            counted.update({id(w), id(m.act_lo), id(m.act_hi)})
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in counted and t.is_floating_point():
            total += 4 * t.numel()
    return total


# ------------------------------------------------------------ low-rank factorization
def _check_rank(rank, max_rank: int, where: str) -> int:
    rank = check_int(rank, where, "rank")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"{where}: rank must be in 1..{max_rank} for this layer, got {rank}")
    return rank


@torch.no_grad()
def _truncated_svd(w2d: torch.Tensor, rank: int):
    """Best rank-``rank`` factors ``A (m, r)``, ``B (r, n)`` of a matrix ``(m, n)`` (Eckart–Young)."""
    u, s, vh = torch.linalg.svd(w2d.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Replace ``y = W x + b`` (``W`` of shape ``(out, in)``) by two thinner Linear layers.

    The truncated SVD ``W ≈ U_r S_r V_r^T`` gives ``Linear(in → r, no bias)`` with weight
    ``S_r^{1/2} V_r^T`` followed by ``Linear(r → out)`` with weight ``U_r S_r^{1/2}`` and the
    original bias: ``r * (in + out) + out`` parameters instead of ``in * out + out``.

    Raises:
        TypeError: ``layer`` is not an ``nn.Linear``; ``rank`` is not an int.
        ValueError: ``rank`` outside ``1..min(in, out)``; a weight with NaN/Inf.

    Examples:
        >>> from torch import nn
        >>> f = factorize_linear(nn.Linear(64, 32), rank=4)
        >>> [tuple(m.weight.shape) for m in f], sum(p.numel() for p in f.parameters())   # 4 * (64 + 32) + 32
        ([(4, 64), (32, 4)], 416)
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"factorize_linear: expected nn.Linear, got {type(layer).__name__}")
    out_f, in_f = layer.weight.shape
    _check_rank(rank, min(out_f, in_f), "factorize_linear")
    check_tensor(layer.weight.detach(), "factorize_linear", "the layer's weight", finite=True)
    a, b = _truncated_svd(layer.weight, rank)
    first = nn.Linear(in_f, rank, bias=False)
    second = nn.Linear(rank, out_f, bias=layer.bias is not None)
    first.weight.data.copy_(b)
    second.weight.data.copy_(a)
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)


def factorize_conv2d(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """Replace a ``k×k`` convolution by a rank-``r`` ``k×k`` convolution then a 1×1 convolution.

    The weight ``(out, in, kh, kw)`` is viewed as a matrix ``(out, in·kh·kw)`` and cut by
    truncated SVD (the "matrix" decomposition of Denton et al., 2014): the first conv
    has ``r`` filters ``(in, kh, kw)`` (same stride, padding, dilation), the second
    mixes them with a 1×1 conv ``r → out`` carrying the bias.  Parameters:
    ``r * (in·kh·kw + out) + out`` instead of ``out · in·kh·kw + out``.

    Raises:
        TypeError: ``layer`` is not an ``nn.Conv2d``; ``rank`` is not an int.
        ValueError: grouped convolution or non-zero padding mode; ``rank`` outside
            ``1..min(out, in·kh·kw)``; a weight with NaN/Inf.

    Examples:
        >>> from torch import nn
        >>> f = factorize_conv2d(nn.Conv2d(8, 16, 3, padding=1), rank=2)
        >>> [tuple(m.weight.shape) for m in f]
        [(2, 8, 3, 3), (16, 2, 1, 1)]
    """
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"factorize_conv2d: expected nn.Conv2d, got {type(layer).__name__}")
    if layer.groups != 1 or layer.padding_mode != "zeros":
        raise ValueError(f"factorize_conv2d: only groups=1 and padding_mode='zeros' are supported, "
                         f"got groups={layer.groups}, padding_mode={layer.padding_mode!r}")
    out_c, in_c, kh, kw = layer.weight.shape
    _check_rank(rank, min(out_c, in_c * kh * kw), "factorize_conv2d")
    check_tensor(layer.weight.detach(), "factorize_conv2d", "the layer's weight", finite=True)
    a, b = _truncated_svd(layer.weight.reshape(out_c, -1), rank)
    first = nn.Conv2d(in_c, rank, (kh, kw), layer.stride, layer.padding, layer.dilation, bias=False)
    second = nn.Conv2d(rank, out_c, 1, bias=layer.bias is not None)
    first.weight.data.copy_(b.reshape(rank, in_c, kh, kw))
    second.weight.data.copy_(a.reshape(out_c, rank, 1, 1))
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)


def low_rank(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """A copy of ``model`` whose named Linear/Conv2d layers are factorized by truncated SVD.

    Args:
        model: any model; deep-copied, not changed.
        ranks: ``{layer name: rank}``, names as in ``model.named_modules()``
            (e.g. ``{"features.3": 16, "features.7": 16}``).

    Returns:
        The new model (fewer parameters when every rank is below the layer's
        break-even rank ``in·out / (in + out)``).

    Raises:
        TypeError: ``model`` is not a module or ``ranks`` not a dict; a named layer is
            neither Linear nor Conv2d; a rank is not an int.
        ValueError: an unknown layer name; a rank outside ``1..min(out, in·kh·kw)``.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> small = low_rank(m, {"0": 8})
        >>> sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in m.parameters())
        True
    """
    _check_model(model, "low_rank")
    if not isinstance(ranks, dict) or not ranks:
        raise TypeError(f"low_rank: ranks must be a non-empty dict {{layer name: rank}}, got {_given(ranks)}")
    modules = dict(model.named_modules())
    for name, rank in ranks.items():  # validate everything before building anything
        if name not in modules or name == "":
            raise ValueError(f"low_rank: {name!r} is not a layer of the model")
        lay = modules[name]
        if isinstance(lay, nn.Linear):
            _check_rank(rank, min(lay.weight.shape), "low_rank")
        elif isinstance(lay, nn.Conv2d):
            _check_rank(rank, min(lay.weight.shape[0], lay.weight[0].numel()), "low_rank")
        else:
            raise TypeError(f"low_rank: {name!r} is a {type(lay).__name__}; only Linear and Conv2d can be factorized")
    new = copy.deepcopy(model)
    for name, rank in ranks.items():
        lay = new.get_submodule(name)
        fact = factorize_linear(lay, rank) if isinstance(lay, nn.Linear) else factorize_conv2d(lay, rank)
        set_submodule(new, name, fact, "low_rank")
    return new


# --------------------------------------------------------------- ONNX Runtime int8
def _quiet_onnxruntime():
    """Make ONNX Runtime's C++ logger and its Python quantization tools print errors only."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    for name in ("onnxruntime", "onnxruntime.quantization"):
        logging.getLogger(name).setLevel(logging.ERROR)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> int:
    """Export ``model`` (in eval mode, on the CPU) to one ONNX file with a dynamic batch axis.

    Uses ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter
    (PyTorch's default since 2.9), with every weight inside the one file, and keeps its
    progress messages out of the output.  In eval mode the exporter folds BatchNorm
    into the convolutions.  The debugging metadata the exporter attaches to every node
    (Python stack traces, which also leak local paths) is removed, so the file size is
    what a deployment ships.  The input is named ``"x"``, the output ``"logits"``.

    Args:
        model: the model (not changed; a CPU copy is exported).
        example_input: a float tensor ``(N, ...)`` of the input shape (a batch of 1 is
            repeated to 2, since ``torch.export`` specializes a batch axis of size 1).
        path: the ``.onnx`` file to write (use a temporary folder).

    Returns:
        The file size in bytes.

    Raises:
        TypeError: ``model`` is not a module, ``example_input`` not a float tensor of at
            least one dimension, ``path`` not a path.
        ValueError: ``example_input`` holds NaN/Inf; the model cannot run on it; the
            exported graph has a fixed batch size (the model's forward turned the batch
            size into a constant, e.g. with ``len(x)`` instead of ``x.shape[0]``).

    Examples:
        >>> import os, tempfile, torch
        >>> from torch import nn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "m.onnx")
        ...     _ = export_onnx(nn.Linear(4, 2), torch.zeros(1, 4), path)
        ...     [tuple(OnnxModel(path)(torch.zeros(b, 4)).shape) for b in (1, 3, 64)]
        [(1, 2), (3, 2), (64, 2)]
    """
    import contextlib
    import io

    import onnx

    _check_model(model, "export_onnx")
    _check_tensor(example_input, "export_onnx", "example_input")
    if example_input.dim() < 1:
        raise TypeError("export_onnx: example_input must have a batch axis, got a 0-d tensor")
    path = _check_path(path, "export_onnx")
    m = copy.deepcopy(model).cpu().eval()
    x = example_input.detach().cpu()
    if len(x) == 1:
        x = torch.cat([x, x])
    try:
        with torch.no_grad():
            m(x)
    except Exception as exc:
        raise ValueError(f"export_onnx: the model cannot run on example_input of shape {tuple(x.shape)} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(m, (x,), path, dynamo=True, external_data=False,
                          input_names=["x"], output_names=["logits"], dynamic_shapes=({0: batch},))
    proto = onnx.load(path)
    first = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if first.HasField("dim_value"):
        os.remove(path)
        raise ValueError(f"export_onnx: the exported graph has a fixed batch size of {first.dim_value}: "
                         f"{type(model).__name__}.forward turns the batch size into a constant "
                         f"(use x.shape[0] or -1 rather than len(x) in reshapes)")
    for item in [*proto.graph.node, *proto.graph.input, *proto.graph.output, *proto.graph.initializer]:
        del item.metadata_props[:]
    onnx.save(proto, path)
    return os.path.getsize(path)


def _check_path(path, where: str, name: str = "path", exists: bool = False) -> str:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"{where}: {name} must be a file path (str or os.PathLike), got {_given(path)}")
    path = os.fspath(path)
    if exists and not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no ONNX file at {path!r}")
    return path


def onnx_tensor_bytes(path) -> dict[str, int]:
    """Bytes of the stored tensors (initializers) of an ONNX file, summed by data type.

    Returns:
        ``{dtype name: bytes}`` such as ``{"float32": 680, "int8": 56224, "int32": 680}``,
        plus ``"total"``: what the weights themselves occupy, without the graph.

    Raises:
        TypeError: ``path`` is not a path.
        FileNotFoundError: no such file.
    """
    import onnx
    from onnx import numpy_helper

    path = _check_path(path, "onnx_tensor_bytes", exists=True)
    out: dict[str, int] = {}
    for init in onnx.load(path).graph.initializer:
        arr = numpy_helper.to_array(init)
        out[str(arr.dtype)] = out.get(str(arr.dtype), 0) + arr.nbytes
    out["total"] = sum(out.values())
    return out


def quantize_onnx(float_path, int8_path, calibration: torch.Tensor, per_channel: bool = True,
                  batch_size: int = 64) -> int:
    """Statically quantize an ONNX model to int8 with ONNX Runtime (QDQ format).

    The float model first goes through ONNX Runtime's recommended pre-processing
    (``quant_pre_process``: shape inference and graph optimization); then
    ``onnxruntime.quantization.quantize_static`` runs the calibration inputs through the
    float model (min–max ranges of every activation), then stores int8 weights
    (per output channel when ``per_channel``), int8 activations and int32 biases.
    ONNX Runtime fuses the QuantizeLinear/DequantizeLinear pairs into integer kernels
    when it loads the file.

    Args:
        float_path: the float ``.onnx`` from :func:`export_onnx`.
        int8_path: where to write the quantized model.
        calibration: float tensor ``(N, ...)`` of representative inputs (a few hundred
            training images is plenty).
        per_channel: one weight scale per output channel (recommended for conv nets).
        batch_size: calibration batch size.

    Returns:
        The size of the int8 file in bytes.

    Raises:
        TypeError: ``calibration`` is not a float tensor; bad path or flag types.
        FileNotFoundError: no file at ``float_path``.
        ValueError: ``batch_size < 1``; NaN/Inf in ``calibration``; ONNX Runtime cannot
            quantize the graph (the message names its error).

    Examples:
        >>> import os, tempfile, torch
        >>> from torch import nn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f32, i8 = os.path.join(d, "f.onnx"), os.path.join(d, "i.onnx")
        ...     _ = export_onnx(nn.Linear(64, 64), torch.zeros(1, 64), f32)
        ...     _ = quantize_onnx(f32, i8, torch.randn(32, 64))
        ...     onnx_tensor_bytes(i8)["int8"]   # 64 * 64 weights of one byte + 64 per-channel zero points
        4160
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    float_path = _check_path(float_path, "quantize_onnx", "float_path", exists=True)
    int8_path = _check_path(int8_path, "quantize_onnx", "int8_path")
    _check_tensor(calibration, "quantize_onnx", "calibration")
    per_channel = check_bool(per_channel, "quantize_onnx", "per_channel")
    batch_size = check_int(batch_size, "quantize_onnx", "batch_size", minimum=1)
    _quiet_onnxruntime()
    data = calibration.detach().cpu().numpy()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": data[i:i + batch_size]} for i in range(0, len(data), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    prepared = f"{int8_path}.pre.onnx"  # ONNX Runtime's recommended pre-processing: shape inference + graph optimization
    try:
        try:
            quant_pre_process(str(float_path), prepared)
        except Exception:  # ONNX Runtime's symbolic shape inference fails on some graphs (a Concat of a
            # broadcast buffer, in MessagePassingGNN): ONNX's own shape inference is enough for quantization
            quant_pre_process(str(float_path), prepared, skip_symbolic_shape=True)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ONNX Runtime's quantizer warns on the root logger (e.g. about LayerNorm weights)
        try:
            quantize_static(prepared, int8_path, Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise ValueError(f"quantize_onnx: ONNX Runtime could not quantize {os.fspath(float_path)!r} "
                             f"({type(exc).__name__}: {exc})") from exc
        finally:
            root.setLevel(level)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    return os.path.getsize(int8_path)


class OnnxModel:
    """An ONNX Runtime session that you call like a PyTorch model: tensor in, logits tensor out.

    Args:
        path: an ``.onnx`` file with one input ``"x"``.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).

    Raises:
        TypeError: ``path`` is not a path; ``threads`` not an int.
        FileNotFoundError: no such file.
        ValueError: ``threads < 1``; (call) an input ONNX Runtime rejects (wrong shape).

    Examples:
        >>> import os, tempfile, torch
        >>> from torch import nn
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = export_onnx(nn.Linear(4, 2), torch.zeros(1, 4), os.path.join(d, "m.onnx"))
        ...     OnnxModel(os.path.join(d, "m.onnx"), threads=1)(torch.zeros(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        path = _check_path(path, "OnnxModel", exists=True)
        if threads is not None:
            threads = check_int(threads, "OnnxModel", "threads", minimum=1)
        _quiet_onnxruntime()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads is not None:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "OnnxModel", "x")
        try:
            out = self.session.run(None, {self.input_name: x.detach().cpu().float().numpy()})[0]
        except Exception as exc:  # onnxruntime's InvalidArgument etc.
            raise ValueError(f"OnnxModel: ONNX Runtime rejected an input of shape {tuple(x.shape)} "
                             f"({str(exc).splitlines()[0]})") from exc
        return torch.from_numpy(out)


def cpu_int8_features() -> dict[str, bool]:
    """Which int8 dot-product instructions this CPU advertises (read from ``/proc/cpuinfo``).

    Keys: ``"avx2"``, ``"avx512_vnni"``, ``"avx_vnni"`` (x86 VNNI: 8-bit multiply–accumulate in
    one instruction), ``"amx_int8"`` (Intel AMX tiles), ``"asimddp"`` (Arm dot product).
    All ``False`` where ``/proc/cpuinfo`` does not exist (macOS, Windows): unknown, not absent.
    """
    keys = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = set(fh.read().split())
    except OSError:
        flags = set()
    return {k: k in flags for k in keys}
