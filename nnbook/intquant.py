"""Integer-only inference by hand, and learned step size quantization (chapter 5b).

Two companions of :mod:`nnbook.quantize`, written to be read:

* **Integer-only arithmetic** (Jacob et al., 2018, "Quantization and Training of Neural
  Networks for Efficient Integer-Arithmetic-Only Inference", CVPR; the rounding follows
  Google's gemmlowp library, which that paper's kernels use).  With real values
  ``r = s (q - z)`` for the input ``x``, the weight ``w`` and the output ``y`` of a
  Linear or Conv layer,

      q_y = z_y + M * sum_k (q_x[k] - z_x) (q_w[k] - z_w) + M * q_b,   M = s_x s_w / s_y,

  the sum runs in **int32**: :func:`int_linear` and :func:`int_conv2d` expand it into
  ``sum q_x q_w`` and the zero-point cross terms.  The one real number left, ``M``, is
  stored as a **fixed-point multiplier** ``M = M0 * 2^-n`` with ``M0`` an int32 in
  ``[2^30, 2^31)`` (:func:`quantize_multiplier`), so that even the rescaling is an
  integer multiply and a rounding shift (:func:`requantize`).  :class:`Int8Layer` puts
  the pieces together for a float layer and :func:`ort_reference` runs the same integer
  layer through ONNX Runtime's ``QLinearConv`` operator for comparison.
* **Learned step size quantization** (Esser et al., 2020, "Learned Step Size
  Quantization", ICLR): the step ``s`` of every quantizer is a trained parameter whose
  gradient comes from the straight-through estimator and is scaled by
  ``g = 1 / sqrt(N * Q_P)``.  :func:`grad_scale`, :class:`LSQQuantizer`,
  :class:`LSQLayer`, :func:`lsq_model`, :func:`lsq_size_bytes`.

Conventions.  Integer tensors are computed in ``torch.int64`` (so that products cannot
overflow while they are formed) and checked to fit in the int32 range an integer kernel
accumulates in; codes are returned as ``torch.int32``.  Bit widths run from 2 to 8 here.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import _given, check_bool, check_int, check_model, check_tensor, set_submodule
from .quantize import fold_batchnorm, round_ste

__all__ = [
    "quantize_multiplier", "requantize", "int_linear", "int_conv2d", "Int8Layer", "ort_reference",
    "grad_scale", "LSQQuantizer", "LSQLayer", "lsq_model", "lsq_size_bytes",
]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_LAYERS = (nn.Linear, nn.Conv2d)


# --------------------------------------------------------------------------- checks
def _check_bits(bits, where: str, name: str = "bits") -> int:
    bits = check_int(bits, where, name)
    if not 2 <= bits <= 8:
        raise ValueError(f"{where}: {name} must be in 2..8, got {bits}")
    return bits


def _int_tensor(x, where: str, name: str) -> torch.Tensor:
    check_tensor(x, where, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must be an integer tensor, got dtype {x.dtype}")
    return x.to(torch.int64)


def _int_param(value, where: str, name: str, length: int | None = None) -> torch.Tensor:
    """An integer scalar, or a 1-D integer tensor of ``length`` values (per output channel)."""
    if isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be an int or an integer tensor, got {_given(value)}")
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64)
    if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must be an int or an integer tensor, got {_given(value)}")
    if value.dim() == 0 or (value.dim() == 1 and length is not None and value.numel() == length):
        return value.to(torch.int64)
    want = "a scalar" if length is None else f"a scalar or a vector of length {length}"
    raise ValueError(f"{where}: {name} must be {want}, got shape {tuple(value.shape)}")


def _fits_int32(acc: torch.Tensor, where: str) -> torch.Tensor:
    if acc.numel() and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
        raise ValueError(f"{where}: the accumulator overflows int32 (range [{int(acc.min())}, {int(acc.max())}])")
    return acc


# ------------------------------------------------------- fixed-point requantization
def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Write a real multiplier ``0 < M < 1`` as ``M ≈ M0 * 2^-n`` with an int32 ``M0 in [2^30, 2^31)``.

    This is how an integer kernel stores ``M = s_x * s_w / s_y`` (Jacob et al., 2018,
    section 2.2, equation 6): normalizing ``M0`` into ``[2^30, 2^31)`` keeps 31 bits of
    precision however small ``M`` is; the relative error is at most ``2^-31``.

    Args:
        real_multiplier: a float in ``(0, 1)``.

    Returns:
        ``(M0, n)``: Python ints, ``2^30 <= M0 < 2^31`` and ``n >= 31``.

    Raises:
        TypeError: not a real number.
        ValueError: not in ``(0, 1)`` or too small to be represented (``n > 62``).

    Examples:
        >>> quantize_multiplier(0.75)                 # 0.75 = 3·2^29 · 2^-31
        (1610612736, 31)
        >>> m0, n = quantize_multiplier(0.0123)
        >>> 2 ** 30 <= m0 < 2 ** 31, abs(m0 * 2.0 ** -n - 0.0123) < 1e-11
        (True, True)
    """
    if isinstance(real_multiplier, bool) or not isinstance(real_multiplier, (int, float)):
        if isinstance(real_multiplier, torch.Tensor) and real_multiplier.numel() == 1:
            real_multiplier = float(real_multiplier)
        else:
            raise TypeError(f"quantize_multiplier: real_multiplier must be a real number, got {_given(real_multiplier)}")
    m = float(real_multiplier)
    if not 0.0 < m < 1.0:
        raise ValueError(f"quantize_multiplier: real_multiplier must be in (0, 1), got {m}")
    frac, exp = math.frexp(m)            # m = frac * 2^exp with frac in [0.5, 1)
    m0 = round(frac * 2 ** 31)           # in [2^30, 2^31]
    if m0 == 2 ** 31:                    # frac rounded up to 1.0: renormalize
        m0, exp = m0 // 2, exp + 1
    n = 31 - exp
    if n > 62:
        raise ValueError(f"quantize_multiplier: real_multiplier {m} is too small (needs a shift of {n} > 62 bits)")
    return m0, n


def _rounding_doubling_high_mul(a: torch.Tensor, m0: torch.Tensor) -> torch.Tensor:
    """gemmlowp's SaturatingRoundingDoublingHighMul: ``round(a * m0 / 2^31)``, both int32.

    Rounds half away from zero; the one overflowing case, ``a = m0 = -2^31``, saturates
    (it cannot happen here, since ``m0 > 0``)."""
    ab = a * m0                                             # exact in int64
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")   # C's integer division


def _rounding_right_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """gemmlowp's RoundingDivideByPOT: ``round(x / 2^shift)``, half away from zero."""
    mask = (torch.ones_like(shift) << shift) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).to(x.dtype)
    return (x >> shift) + (remainder > threshold).to(x.dtype)


def requantize(acc: torch.Tensor, m0, n, zero_point, bits: int = 8, signed: bool = False,
               axis: int = 1) -> torch.Tensor:
    """Integer output codes ``clamp(z_y + round(acc * M0 * 2^-n), qmin, qmax)``, computed in integers only.

    Two roundings, exactly as gemmlowp (and TensorFlow Lite) do it: a rounding
    "doubling high" multiply ``round(acc * M0 / 2^31)``, then a rounding right shift by
    ``n - 31`` bits, each rounding half away from zero.  The exact
    ``round(acc * M)`` can differ from this by 1 in rare cases: two roundings in a row
    are not one rounding, and a runtime that rescales in float32 instead (ONNX Runtime's
    CPU kernels) makes its own, different rounding errors.

    Args:
        acc: int32-range integer accumulator, e.g. ``(N, C_out)`` or ``(N, C_out, H, W)``.
        m0, n: the fixed-point multiplier from :func:`quantize_multiplier`; Python ints, or
            integer tensors of one value per output channel (along ``axis``).
        zero_point: the output zero point, an int.
        bits, signed: the output grid: ``[0, 2^bits - 1]`` or ``[-2^(bits-1), 2^(bits-1) - 1]``.
        axis: the channel axis of ``acc`` that per-channel ``m0``/``n`` run along.

    Returns:
        ``torch.int32`` codes with the shape of ``acc``.

    Raises:
        TypeError: ``acc`` not an integer tensor; ``m0``/``n``/``zero_point`` not integers.
        ValueError: ``bits`` outside 2..8; ``m0`` outside ``[2^30, 2^31)``; ``n < 31`` or
            ``n > 62``; ``acc`` outside the int32 range; a zero point outside the grid;
            per-channel values of the wrong length.

    Examples:
        >>> import torch
        >>> m0, n = quantize_multiplier(0.01)
        >>> requantize(torch.tensor([[0, 149, 150, 151, -300, 40000]]), m0, n, zero_point=10, axis=0)
        tensor([[ 10,  11,  12,  12,   7, 255]], dtype=torch.int32)
    """
    acc = _fits_int32(_int_tensor(acc, "requantize", "acc"), "requantize")
    bits = _check_bits(bits, "requantize")
    signed = check_bool(signed, "requantize", "signed")
    axis = check_int(axis, "requantize", "axis", minimum=-acc.dim(), maximum=max(acc.dim() - 1, 0))
    channels = acc.shape[axis] if acc.dim() else None
    m0 = _int_param(m0, "requantize", "m0", channels)
    n = _int_param(n, "requantize", "n", channels)
    zero_point = _int_param(zero_point, "requantize", "zero_point")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if bool(((m0 < 2 ** 30) | (m0 >= 2 ** 31)).any()):
        raise ValueError(f"requantize: m0 must be in [2^30, 2^31), got {m0.tolist()}")
    if bool(((n < 31) | (n > 62)).any()):
        raise ValueError(f"requantize: n must be in 31..62 (a multiplier below 1), got {n.tolist()}")
    if not qmin <= int(zero_point) <= qmax:
        raise ValueError(f"requantize: zero_point must be in [{qmin}, {qmax}], got {int(zero_point)}")
    if m0.dim() == 1 or n.dim() == 1:                       # per-channel: broadcast along axis
        shape = [1] * acc.dim()
        shape[axis] = -1
        m0, n = m0.reshape(shape) if m0.dim() else m0, n.reshape(shape) if n.dim() else n
    scaled = _rounding_right_shift(_rounding_doubling_high_mul(acc, m0), n - 31)
    return torch.clamp(scaled + zero_point, qmin, qmax).to(torch.int32)


# ------------------------------------------------------------- int32 accumulation
def int_linear(qx: torch.Tensor, qw: torch.Tensor, zx=0, zw=0, bias=None) -> torch.Tensor:
    """The int32 accumulator of a quantized Linear layer, zero-point cross terms written out.

    ``acc[i, j] = sum_k (qx[i, k] - zx) (qw[j, k] - zw[j]) + bias[j]``, expanded as an
    integer kernel computes it (Jacob et al., 2018, equation 7):

    * ``sum_k qx qw``: the only term that costs ``N·K·M`` multiply-adds, on raw 8-bit codes;
    * ``- zw * sum_k qx``: one row sum of the input per row;
    * ``- zx * sum_k qw``: the weights' row sums, computed once when the model is loaded;
    * ``+ K * zx * zw``: a constant.

    A symmetric weight grid (``zw = 0``) removes the second term, which is why weights
    are usually stored symmetric.

    Args:
        qx: integer codes ``(N, K)`` (e.g. uint8 activations).
        qw: integer codes ``(M, K)`` (e.g. int8 weights).
        zx: the input zero point (int).
        zw: the weight zero point: an int, or one per output row ``(M,)``.
        bias: ``None`` or int32-range integers ``(M,)`` with scale ``s_x * s_w`` and zero point 0.

    Returns:
        ``torch.int64`` accumulators ``(N, M)``, checked to fit in int32.

    Raises:
        TypeError: a code tensor or zero point that is not an integer.
        ValueError: ``qx``/``qw`` not 2-D, or their ``K`` differ; ``zw``/``bias`` of the wrong
            length; an accumulator that overflows int32.

    Examples:
        >>> import torch
        >>> qx, qw = torch.tensor([[3, 5]]), torch.tensor([[1, 2], [4, 0]])
        >>> int_linear(qx, qw, zx=1, zw=0)      # (3-1)·1 + (5-1)·2, (3-1)·4 + (5-1)·0
        tensor([[10,  8]])
    """
    qx, qw = _int_tensor(qx, "int_linear", "qx"), _int_tensor(qw, "int_linear", "qw")
    if qx.dim() != 2 or qw.dim() != 2 or qx.shape[1] != qw.shape[1]:
        raise ValueError(f"int_linear: expected qx (N, K) and qw (M, K) with the same K, "
                         f"got shapes {tuple(qx.shape)} and {tuple(qw.shape)}")
    k = qx.shape[1]
    zx = _int_param(zx, "int_linear", "zx")
    zw = _int_param(zw, "int_linear", "zw", qw.shape[0])
    acc = qx @ qw.T                                   # sum_k qx*qw: the N·K·M multiply-adds
    acc = acc - zw * qx.sum(1, keepdim=True)          # weight zero point x input row sums
    acc = acc - zx * qw.sum(1)                        # input zero point x weight row sums (precomputable)
    acc = acc + k * zx * zw                           # a constant per output
    if bias is not None:
        acc = acc + _int_param(bias, "int_linear", "bias", qw.shape[0]).reshape(-1)
    return _fits_int32(acc, "int_linear")


def int_conv2d(qx: torch.Tensor, qw: torch.Tensor, zx=0, zw=0, bias=None, stride: int = 1,
               padding: int = 0) -> torch.Tensor:
    """The int32 accumulator of a quantized 2-D convolution, as an :func:`int_linear` over patches.

    The input is padded with its **zero point** ``zx`` (the code of the real value 0, not
    the code 0), cut into ``k×k`` patches (``im2col``), and every patch goes through
    :func:`int_linear` with the weights flattened to ``(C_out, C_in·k·k)``.

    Args:
        qx: integer codes ``(N, C_in, H, W)``.
        qw: integer codes ``(C_out, C_in, kh, kw)``.
        zx, zw, bias: as in :func:`int_linear` (``zw`` and ``bias`` per output channel).
        stride, padding: as in ``torch.nn.Conv2d`` (ints).

    Returns:
        ``torch.int64`` accumulators ``(N, C_out, H_out, W_out)``, checked to fit in int32.

    Raises:
        TypeError: non-integer codes or zero points; ``stride``/``padding`` not ints.
        ValueError: shapes that do not match (4-D tensors with equal ``C_in``), ``stride < 1``,
            ``padding < 0``, a kernel larger than the padded input, an overflow.

    Examples:
        >>> import torch
        >>> qx = torch.full((1, 1, 2, 2), 7)                 # all inputs at their zero point: real 0
        >>> int_conv2d(qx, torch.ones(1, 1, 3, 3, dtype=torch.int8), zx=7, padding=1).flatten().tolist()
        [0, 0, 0, 0]
    """
    qx, qw = _int_tensor(qx, "int_conv2d", "qx"), _int_tensor(qw, "int_conv2d", "qw")
    if qx.dim() != 4 or qw.dim() != 4 or qx.shape[1] != qw.shape[1]:
        raise ValueError(f"int_conv2d: expected qx (N, C_in, H, W) and qw (C_out, C_in, kh, kw) with the same "
                         f"C_in, got shapes {tuple(qx.shape)} and {tuple(qw.shape)}")
    stride = check_int(stride, "int_conv2d", "stride", minimum=1)
    padding = check_int(padding, "int_conv2d", "padding", minimum=0)
    zx_t = _int_param(zx, "int_conv2d", "zx")
    n, _, h, w = qx.shape
    c_out, _, kh, kw = qw.shape
    if h + 2 * padding < kh or w + 2 * padding < kw:
        raise ValueError(f"int_conv2d: kernel {kh}x{kw} is larger than the padded input {h + 2 * padding}x{w + 2 * padding}")
    padded = F.pad(qx.double(), (padding,) * 4, value=float(zx_t))    # pad with the code of real 0
    cols = F.unfold(padded, (kh, kw), stride=stride)                     # (N, C_in·kh·kw, L); exact below 2^53
    h_out, w_out = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    patches = cols.transpose(1, 2).reshape(-1, cols.shape[1]).to(torch.int64)
    acc = int_linear(patches, qw.reshape(c_out, -1), zx, zw, bias)       # (N·L, C_out)
    return acc.reshape(n, h_out * w_out, c_out).transpose(1, 2).reshape(n, c_out, h_out, w_out)


class Int8Layer:
    """A float Linear/Conv2d layer turned into integers: uint8 in, int8 weights, int32 bias, uint8 out.

    Given the layer and the real ranges of its input and output (from calibration data),
    it stores everything an integer kernel needs and nothing else:

    * input and output grids: asymmetric uint8, ``(s_x, z_x)`` and ``(s_y, z_y)``;
    * weights: symmetric int8 codes, one scale ``s_w[c]`` per output channel, zero point 0;
    * bias: int32 codes ``round(b / (s_x s_w[c]))`` with zero point 0;
    * the requantization multiplier per channel, ``M[c] = s_x s_w[c] / s_y = M0[c] 2^-n[c]``.

    The scales are rounded to float32 first, as an ONNX file stores them.  Call it on
    uint8 input codes to get uint8 output codes; :meth:`accumulate` gives the int32 sums.

    Args:
        layer: ``nn.Linear`` or ``nn.Conv2d`` (groups 1, zero padding, equal stride and
            padding in both directions, no dilation).
        x_range, y_range: ``(lo, hi)`` real ranges of the input and the output.

    Raises:
        TypeError: an unsupported layer; ranges that are not pairs of numbers.
        ValueError: ``lo > hi``; a layer option that is not supported; a multiplier
            ``M >= 1`` (the output range is narrower than one input step times one weight step).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> lin = nn.Linear(16, 4)
        >>> q = Int8Layer(lin, x_range=(0.0, 1.0), y_range=(-2.0, 2.0))
        >>> x = torch.rand(5, 16)
        >>> y_int = q.dequantize_output(q(q.quantize_input(x)))
        >>> bool((y_int - lin(x)).abs().max() < 0.05)
        True
    """

    def __init__(self, layer: nn.Module, x_range, y_range):
        from .quantize import qparams

        if not isinstance(layer, _LAYERS):
            raise TypeError(f"Int8Layer: layer must be nn.Linear or nn.Conv2d, got {_given(layer)}")
        if isinstance(layer, nn.Conv2d):
            ok = (layer.groups == 1 and layer.padding_mode == "zeros" and layer.dilation == (1, 1)
                  and isinstance(layer.padding, tuple) and len(set(layer.padding)) == 1 and len(set(layer.stride)) == 1)
            if not ok:
                raise ValueError("Int8Layer: only Conv2d with groups=1, zero padding, no dilation and equal "
                                 f"stride/padding in both directions is supported, got {layer}")
            self.kind, self.stride, self.padding = "conv2d", layer.stride[0], layer.padding[0]
        else:
            self.kind, self.stride, self.padding = "linear", 1, 0
        (x_lo, x_hi), (y_lo, y_hi) = _range(x_range, "x_range"), _range(y_range, "y_range")
        w = layer.weight.detach().float().cpu()
        f32 = lambda t: t.float()                                          # noqa: E731 (the ONNX file's precision)
        sx, zx = qparams(w, 8, symmetric=False, lo=x_lo, hi=x_hi)
        sy, zy = qparams(w, 8, symmetric=False, lo=y_lo, hi=y_hi)
        sw, _ = qparams(w, 8, symmetric=True, axis=0)
        self.x_scale, self.x_zero_point = f32(sx), int(zx)
        self.y_scale, self.y_zero_point = f32(sy), int(zy)
        self.w_scale = f32(sw)                                             # (C_out,)
        view = (-1,) + (1,) * (w.dim() - 1)
        self.qw = torch.clamp(torch.round(w / self.w_scale.reshape(view)), -127, 127).to(torch.int8)
        b = layer.bias.detach().float().cpu() if layer.bias is not None else torch.zeros(w.shape[0])
        bias_scale = self.x_scale.double() * self.w_scale.double()
        self.bias_q = torch.round(b.double() / bias_scale).clamp(INT32_MIN, INT32_MAX).to(torch.int32)
        real_m = (self.x_scale.double() * self.w_scale.double() / self.y_scale.double()).tolist()
        if max(real_m) >= 1.0:
            raise ValueError(f"Int8Layer: a requantization multiplier is >= 1 ({max(real_m):.3g}); widen y_range")
        pairs = [quantize_multiplier(m) for m in real_m]
        self.m0 = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        self.n = torch.tensor([p[1] for p in pairs], dtype=torch.int64)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 codes of a real input (float tensor)."""
        check_tensor(x, "Int8Layer.quantize_input", "x", floating=True, finite=True)
        return torch.clamp(torch.round(x / self.x_scale) + self.x_zero_point, 0, 255).to(torch.uint8)

    def dequantize_output(self, qy: torch.Tensor) -> torch.Tensor:
        """Real values ``s_y (q_y - z_y)`` of output codes."""
        return (_int_tensor(qy, "Int8Layer.dequantize_output", "qy") - self.y_zero_point).float() * self.y_scale

    def accumulate(self, qx: torch.Tensor) -> torch.Tensor:
        """The int32 accumulators (bias included) for uint8 input codes."""
        if self.kind == "linear":
            return int_linear(qx, self.qw, self.x_zero_point, 0, self.bias_q)
        return int_conv2d(qx, self.qw, self.x_zero_point, 0, self.bias_q, self.stride, self.padding)

    def __call__(self, qx: torch.Tensor) -> torch.Tensor:
        """uint8 output codes (as ``torch.int32``) for uint8 input codes, integers only."""
        return requantize(self.accumulate(qx), self.m0, self.n, self.y_zero_point, bits=8, axis=1)


def _range(pair, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise TypeError(f"Int8Layer: {name} must be a pair (lo, hi) of numbers, got {_given(pair)}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"Int8Layer: {name} must be finite with lo <= hi, got ({lo}, {hi})")
    return lo, hi


def ort_reference(layer: Int8Layer, qx: torch.Tensor) -> torch.Tensor:
    """The same integer layer run by ONNX Runtime's ``QLinearConv`` operator (CPU).

    A one-node ONNX graph is built with the layer's own codes and scales (uint8 input
    with ``z_x``, int8 per-channel weights with zero point 0, int32 bias, uint8 output
    with ``z_y``); a Linear layer is run as a 1×1 convolution on ``(N, K, 1, 1)``, which is
    the same sum.  ONNX Runtime accumulates in int32 like :class:`Int8Layer` but rescales
    in float32 (``acc * (s_x s_w / s_y)``, rounded half to even), not with a fixed-point
    multiplier.

    Args:
        layer: an :class:`Int8Layer`.
        qx: uint8 input codes, ``(N, K)`` or ``(N, C_in, H, W)``.

    Returns:
        ``torch.int32`` output codes with the shape :class:`Int8Layer` gives.

    Raises:
        TypeError: ``layer`` is not an :class:`Int8Layer`; ``qx`` not uint8.
        ValueError: ``qx`` of the wrong shape.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(layer, Int8Layer):
        raise TypeError(f"ort_reference: layer must be an Int8Layer, got {_given(layer)}")
    check_tensor(qx, "ort_reference", "qx")
    if qx.dtype != torch.uint8:
        raise TypeError(f"ort_reference: qx must hold uint8 codes, got dtype {qx.dtype}")
    want = 2 if layer.kind == "linear" else 4
    if qx.dim() != want or qx.shape[1] != layer.qw.shape[1]:
        raise ValueError(f"ort_reference: qx must be {want}-D with {layer.qw.shape[1]} channels, got {tuple(qx.shape)}")
    x = qx.numpy()
    w = layer.qw.numpy()
    if layer.kind == "linear":
        x, w = x[:, :, None, None], w[:, :, None, None]
    c_out = w.shape[0]
    inits = [numpy_helper.from_array(np.array(layer.x_scale.item(), np.float32), "x_scale"),
             numpy_helper.from_array(np.array(layer.x_zero_point, np.uint8), "x_zp"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(layer.w_scale.numpy().astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(c_out, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(layer.y_scale.item(), np.float32), "y_scale"),
             numpy_helper.from_array(np.array(layer.y_zero_point, np.uint8), "y_zp"),
             numpy_helper.from_array(layer.bias_q.numpy().astype(np.int32), "b")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
                            ["y"], pads=[layer.padding] * 4, strides=[layer.stride] * 2)
    graph = helper.make_graph([node], "int8_layer",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [None] + list(x.shape[1:]))],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y = torch.from_numpy(sess.run(None, {"x": x})[0].astype(np.int32))
    return y.reshape(y.shape[0], -1) if layer.kind == "linear" else y


# ------------------------------------------------------- learned step size (LSQ)
def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` in the forward pass, ``g`` times its gradient in the backward pass (Esser et al., 2020).

    Examples:
        >>> import torch
        >>> s = torch.tensor(2.0, requires_grad=True)
        >>> (grad_scale(s, 0.1) * 3).backward()
        >>> s.grad.item()      # 3 without the scale
        0.30000001192092896
    """
    return (x - x * g).detach() + x * g


class LSQQuantizer(nn.Module):
    """Learned step size quantization of one tensor (Esser et al., 2020, "LSQ").

    Forward: ``v_hat = round(clamp(v / s, -Q_N, Q_P)) * s`` with a trained step ``s``:
    signed ``Q_N = 2^(b-1), Q_P = 2^(b-1) - 1`` (weights), unsigned ``Q_N = 0,
    Q_P = 2^b - 1`` (non-negative activations, e.g. after a ReLU).  Backward:
    the straight-through estimator for ``round``; for ``s`` this gives
    ``dv_hat/ds = round(v/s) - v/s`` inside the range and ``-Q_N`` or ``Q_P`` where ``v``
    is clipped, so the step learns to balance rounding error against clipping error.
    The step's gradient is multiplied by ``g = 1 / sqrt(N * Q_P)``, with ``N`` the number
    of weights of the layer, or the number of features of one example for activations,
    so that step and weights learn at comparable relative rates.  The step starts at
    ``2 * mean(|v|) / sqrt(Q_P)`` on the first tensor the quantizer sees.

    Args:
        bits: ``2..8``.
        signed: signed grid (weights) or unsigned (activations).
        per_example: ``N`` counts the features of one example (activations, whose first
            axis is the batch) instead of every element (weights).

    Raises:
        TypeError, ValueError: bad ``bits``/flags; (forward) an input with NaN/Inf, or an
            unsigned quantizer initialized on data that are all zero.

    Examples:
        >>> import torch
        >>> q = LSQQuantizer(bits=2, signed=True)
        >>> w = torch.tensor([-1.0, -0.2, 0.1, 0.9])
        >>> codes = q(w).detach() / q.step.detach()           # the grid is {-2, -1, 0, 1}
        >>> round(float(q.step.detach()), 3), codes.tolist()  # the step starts at 2 * mean|w| / sqrt(1)
        (1.1, [-1.0, -0.0, 0.0, 1.0])
    """

    def __init__(self, bits: int, signed: bool = True, per_example: bool = False):
        super().__init__()
        self.bits = _check_bits(bits, "LSQQuantizer")
        self.signed = check_bool(signed, "LSQQuantizer", "signed")
        self.per_example = check_bool(per_example, "LSQQuantizer", "per_example")
        self.qn = 2 ** (bits - 1) if signed else 0
        self.qp = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        check_tensor(v, "LSQQuantizer", "v", floating=True)
        if not bool(self.initialized):
            with torch.no_grad():
                init = 2 * v.detach().abs().mean() / math.sqrt(self.qp)
                if not bool(torch.isfinite(init)) or float(init) <= 0:
                    raise ValueError(f"LSQQuantizer: cannot initialize the step from data with mean |v| = {float(init)}")
                self.step.fill_(float(init))
                self.initialized.fill_(True)
        n = v[0].numel() if self.per_example and v.dim() > 1 else v.numel()
        s = grad_scale(self.step, 1.0 / math.sqrt(n * self.qp))
        return round_ste(torch.clamp(v / s, -self.qn, self.qp)) * s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {'signed' if self.signed else 'unsigned'}, step={float(self.step):.4g}"


class LSQLayer(nn.Module):
    """A Linear/Conv2d layer whose weight and input are quantized by :class:`LSQQuantizer`.

    Weights use one signed learned step per layer, the input one unsigned learned step
    (inputs are non-negative in the book's models: images in [0, 1], ReLU outputs), as
    in Esser et al. (2020).

    Args:
        layer: ``nn.Linear`` or ``nn.Conv2d``.
        w_bits, act_bits: ``2..8``; ``act_bits=None`` keeps the input in float.

    Raises:
        TypeError: another layer type; ValueError: bits outside 2..8.
    """

    def __init__(self, layer: nn.Module, w_bits: int, act_bits: int | None):
        super().__init__()
        if not isinstance(layer, _LAYERS):
            raise TypeError(f"LSQLayer: layer must be nn.Linear or nn.Conv2d, got {_given(layer)}")
        self.layer = layer
        self.w_quant = LSQQuantizer(w_bits, signed=True)
        self.x_quant = None if act_bits is None else LSQQuantizer(act_bits, signed=False, per_example=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.x_quant is not None:
            x = self.x_quant(x)
        w, lay = self.w_quant(self.layer.weight), self.layer
        if isinstance(lay, nn.Linear):
            return F.linear(x, w, lay.bias)
        return F.conv2d(x, w, lay.bias, lay.stride, lay.padding, lay.dilation, lay.groups)


def lsq_model(model: nn.Module, w_bits: int, act_bits: int | None = None, init_inputs: torch.Tensor | None = None,
              fold_bn: bool = True, skip: Iterable[str] = ()) -> nn.Module:
    """A copy of ``model`` with every Linear/Conv2d replaced by an :class:`LSQLayer`.

    Args:
        model: any model (deep-copied, not changed).
        w_bits, act_bits: bit widths (``act_bits=None``: float inputs).
        init_inputs: a batch that initializes every step size (recommended: training
            images); without it the steps start on the first training batch.
        fold_bn: fold BatchNorm into the convolutions first, as deployment does.
        skip: layer names to keep in float.

    Returns:
        The new model, in the train/eval mode of ``model``.

    Raises:
        TypeError: ``model`` not a module; ``skip`` a string; ``init_inputs`` not a float tensor.
        ValueError: bad bits; unknown names in ``skip``; no Linear/Conv2d layer.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = lsq_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 3, 4, torch.rand(16, 4))
        >>> [type(l).__name__ for l in m]
        ['LSQLayer', 'ReLU', 'LSQLayer']
        >>> lsq_size_bytes(m)     # 12 + 6 bytes of 3-bit weights, 10 float32 biases, 4 float32 steps
        74
    """
    check_model(model, "lsq_model")
    _check_bits(w_bits, "lsq_model", "w_bits")
    if act_bits is not None:
        _check_bits(act_bits, "lsq_model", "act_bits")
    if isinstance(skip, str):
        raise TypeError(f"lsq_model: skip must be a collection of layer names, got the string {skip!r}")
    skip = set(skip)
    layers = {n for n, m in model.named_modules() if isinstance(m, _LAYERS)}
    if not layers - skip:
        raise ValueError("lsq_model: the model has no Linear/Conv2d layer to quantize")
    if skip - layers:
        raise ValueError(f"lsq_model: skip names {sorted(skip - layers)} are not Linear/Conv2d layers of the model")
    training = model.training
    new = fold_batchnorm(model) if check_bool(fold_bn, "lsq_model", "fold_bn") else copy.deepcopy(model)
    if "" in layers:
        new = LSQLayer(new, w_bits, act_bits)
    else:
        for name in sorted(layers - skip):
            set_submodule(new, name, LSQLayer(new.get_submodule(name), w_bits, act_bits), "lsq_model")
    if init_inputs is not None:
        check_tensor(init_inputs, "lsq_model", "init_inputs", floating=True, finite=True)
        with torch.no_grad():
            new.eval()(init_inputs.to(next(new.parameters()).device))
    return new.train(training)


def lsq_size_bytes(model: nn.Module) -> int:
    """Bytes to store an :func:`lsq_model`: ``ceil(numel * w_bits / 8)`` per weight tensor, 4 per
    step size, 4 per other float parameter (biases).

    Raises:
        TypeError: ``model`` is not a module.
    """
    check_model(model, "lsq_size_bytes")
    total, counted = 0, set()
    for m in model.modules():
        if isinstance(m, LSQLayer):
            total += math.ceil(m.layer.weight.numel() * m.w_quant.bits / 8)
            counted.add(id(m.layer.weight))
    for t in model.parameters():
        if id(t) not in counted:
            total += 4 * t.numel()
    return total
