"""Weight-only group-wise integer quantization of Linear layers, written to be read.

Large Linear-heavy models (language models above all) are limited by the bytes their
weights occupy and move, not by arithmetic, so the popular recipe stores only the
*weights* in 3 or 4 bits and keeps activations in floating point: the kernel reads the
small codes, dequantizes them on the fly and multiplies in float.  Chapter 5c builds
the three standard ways to choose those codes:

* **Round-to-nearest (RTN)** with one scale and one zero point per *group* of
  ``group_size`` consecutive input weights of an output row: :func:`quantize_groups`,
  :func:`dequantize_groups`, :func:`rtn`.
* **GPTQ** (Frantar, Ashkboos, Hoefler and Alistarh, 2023, "GPTQ: Accurate
  Post-Training Quantization for Generative Pre-trained Transformers", ICLR):
  quantizes one input column at a time and pushes each column's rounding error onto
  the columns not yet quantized, weighted by the inverse Hessian of the layer's
  squared output error on calibration data, ``H = 2 XᵀX``: :func:`gptq`.
* **AWQ** (Lin et al., 2024, "AWQ: Activation-aware Weight Quantization for On-Device
  LLM Compression and Acceleration", MLSys): scales input channel ``j`` of the weight
  by ``s_j = mean|x_j|^α`` before rounding (so the channels that see large activations
  get a finer grid) and divides the input by ``s_j``; ``α`` is chosen by a grid search
  on calibration data: :func:`awq_scales`, :func:`awq`.

:class:`WeightOnlyLinear` holds the codes, scales and zero points and dequantizes them
in its forward pass; :func:`quantize_model_weight_only` swaps a model's Linear layers
for it; :meth:`WeightOnlyLinear.stored_bytes` and :func:`pack_codes` account for the
bytes exactly (codes packed ``bits`` per weight, float16 scales, ``bits``-wide zero
points).

Conventions.  ``bits`` is an int in ``2..8``; ``group_size`` must divide the layer's
input width (``in_features``); a weight has shape ``(out_features, in_features)`` and a
calibration batch ``(N, in_features)`` with ``N >= 1``.  Grids are asymmetric and
unsigned, codes ``0..2^bits - 1``, with an integer zero point per group, as in GPTQ's
and AWQ's reference implementations.  Scales are stored (and used) in float16.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import _given, check_float, check_int, check_model, check_tensor, set_submodule

__all__ = [
    "MIN_BITS", "MAX_BITS", "quantize_groups", "dequantize_groups", "rtn", "gptq", "awq_scales", "awq",
    "pack_codes", "unpack_codes", "WeightOnlyLinear", "quantize_model_weight_only", "weight_only_bytes",
    "output_error", "torchao_status", "TORCHAO_RANGE",
]

MIN_BITS, MAX_BITS = 2, 8
METHODS = ("rtn", "gptq", "awq", "awq+gptq")
DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))  # 0.0, 0.1, ..., 1.0


# ------------------------------------------------------------------ input checks
def _check_bits(bits, where: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{where}: bits must be an int in {MIN_BITS}..{MAX_BITS}, got {_given(bits)}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"{where}: bits must be an int in {MIN_BITS}..{MAX_BITS}, got {int(bits)}")
    return int(bits)


def _check_weight(w, where: str) -> torch.Tensor:
    return check_tensor(w, where, "weight", ndim=2, floating=True, finite=True)


def _check_group(group_size, in_features: int, where: str) -> int:
    group_size = check_int(group_size, where, "group_size", minimum=1)
    if in_features % group_size:
        divisors = [d for d in range(1, in_features + 1) if in_features % d == 0]
        raise ValueError(f"{where}: group_size must divide the input width {in_features} "
                         f"(one of {divisors}), got {group_size}")
    return group_size


def _check_calibration(x, in_features: int, where: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: calibration must be a torch.Tensor of shape (N, {in_features}), got {_given(x)}")
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"{where}: calibration must have shape (N, {in_features}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: calibration must hold at least 1 sample, got an empty set of shape {tuple(x.shape)}")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: calibration must be finite floating-point values, got dtype {x.dtype} "
                         "with NaN/Inf or integers")
    return x.float()


# ------------------------------------------------------------------ round-to-nearest per group
def _group_qparams(wg: torch.Tensor, bits: int):
    """Scale (float16-rounded, as stored) and integer zero point of each row of ``wg`` (rows = groups).

    Min-max asymmetric: the range ``[min(w, 0), max(w, 0)]`` maps onto ``0..2^bits - 1``.
    """
    qmax = 2 ** bits - 1
    lo = wg.amin(-1, keepdim=True).clamp(max=0)
    hi = wg.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp(min=1e-8).half().float()   # stored in float16: use what is stored
    zero = torch.clamp(torch.round(-lo / scale), 0, qmax)
    return scale, zero


def _quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1)


def quantize_groups(weight: torch.Tensor, bits: int = 4, group_size: int = 64):
    """Round every weight to nearest on an asymmetric grid of its own group.

    Each output row is cut into ``in_features / group_size`` groups of consecutive input
    weights; each group gets a float16 scale ``s = (max - min) / (2^bits - 1)`` (range
    widened to contain 0) and an integer zero point ``z`` in ``0..2^bits - 1``, and its
    weights become codes ``q = clamp(round(w / s) + z, 0, 2^bits - 1)``.

    Args:
        weight: float tensor ``(out_features, in_features)``.
        bits: code width, ``2..8``.
        group_size: weights per group; must divide ``in_features``.

    Returns:
        ``(codes, scale, zero)``: ``codes`` uint8 ``(out, in)``; ``scale`` float16 and
        ``zero`` uint8, both ``(out, in / group_size)``.

    Raises:
        TypeError: ``weight`` is not a floating tensor, or ``bits``/``group_size`` not ints.
        ValueError: ``weight`` not 2-D or not finite; ``bits`` outside ``2..8``;
            ``group_size`` does not divide ``in_features``.

    Examples:
        >>> w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
        >>> codes, scale, zero = quantize_groups(w, bits=2, group_size=4)
        >>> codes.tolist(), scale.tolist(), zero.tolist()
        ([[0, 1, 1, 3]], [[1.0]], [[1]])
    """
    where = "quantize_groups"
    bits = _check_bits(bits, where)
    weight = _check_weight(weight, where)
    out_f, in_f = weight.shape
    group_size = _check_group(group_size, in_f, where)
    wg = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    scale, zero = _group_qparams(wg, bits)
    codes = _quant(wg, scale, zero, bits)
    return (codes.reshape(out_f, in_f).to(torch.uint8), scale.squeeze(-1).half(), zero.squeeze(-1).to(torch.uint8))


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Read group-wise codes back as float32 weights, ``w_hat = s * (q - z)`` group by group.

    Args:
        codes: integer tensor ``(out, in)``.
        scale, zero: ``(out, in / group_size)`` (the group size is ``in / scale.shape[1]``).

    Returns:
        float32 tensor ``(out, in)``.

    Raises:
        ValueError: the shapes do not fit together.

    Examples:
        >>> codes, scale, zero = quantize_groups(torch.tensor([[-1.0, 0.0, 0.5, 2.0]]), bits=2, group_size=4)
        >>> dequantize_groups(codes, scale, zero).tolist()
        [[-1.0, 0.0, 0.0, 2.0]]
    """
    where = "dequantize_groups"
    for name, t in (("codes", codes), ("scale", scale), ("zero", zero)):
        check_tensor(t, where, name, ndim=2)
    out_f, in_f = codes.shape
    if scale.shape != zero.shape or scale.shape[0] != out_f or in_f % scale.shape[1]:
        raise ValueError(f"{where}: scale and zero must both have shape (out, in / group_size) = ({out_f}, G) with "
                         f"G dividing {in_f}, got {tuple(scale.shape)} and {tuple(zero.shape)}")
    g = in_f // scale.shape[1]
    q = codes.float().reshape(out_f, -1, g)
    return ((q - zero.float().unsqueeze(-1)) * scale.float().unsqueeze(-1)).reshape(out_f, in_f)


def rtn(weight: torch.Tensor, bits: int = 4, group_size: int = 64) -> torch.Tensor:
    """Round-to-nearest group-wise fake quantization: ``dequantize_groups(*quantize_groups(...))``.

    Args, errors: as :func:`quantize_groups`.  Returns a float32 tensor of ``weight``'s shape.

    Examples:
        >>> rtn(torch.tensor([[-1.0, 0.0, 0.5, 2.0]]), bits=2, group_size=4).tolist()
        [[-1.0, 0.0, 0.0, 2.0]]
    """
    return dequantize_groups(*quantize_groups(weight, bits, group_size))


# ------------------------------------------------------------------ GPTQ
def gptq(weight: torch.Tensor, calibration: torch.Tensor, bits: int = 4, group_size: int = 64,
         damping: float = 0.01, block_size: int = 128):
    """GPTQ (Frantar et al., 2023): group-wise codes that compensate each rounding error.

    The layer's output error on calibration inputs ``X`` (``N × in``) is
    ``||W X^T - Ŵ X^T||²``, a quadratic in every row of ``W`` with Hessian
    ``H = 2 XᵀX`` (the same for all rows).  GPTQ quantizes the input columns left to
    right; after rounding column ``i`` with error ``e = (w_i - q_i) / [H⁻¹]_ii`` it updates
    the not-yet-quantized columns ``j > i`` by ``w_j -= e · [H⁻¹]_ij``, which is the
    optimal correction of optimal brain surgeon for a quadratic loss.  Three
    implementation choices of the paper are kept:

    * *damping*: ``H += damping · mean(diag H) · I``, so that ``H`` is invertible even
      when some inputs are constant or zero (dead inputs get ``H_jj = 1`` and weight 0);
    * *Cholesky form*: the rows of ``H⁻¹`` restricted to the remaining columns are the
      rows of the upper Cholesky factor of ``H⁻¹`` (up to a per-row factor that the
      update absorbs), so one factorization replaces the repeated inverse updates;
    * *lazy batch updates*: columns are processed in blocks of ``block_size``; within a
      block the updates are applied column by column, to the rest of the matrix once
      per block (the same result, fewer memory passes).

    Each group's scale and zero point are fixed when its first column is reached, from
    the group's *already updated* weights.

    Args:
        weight: float ``(out, in)``.
        calibration: float ``(N, in)``, the layer's inputs on calibration data, ``N >= 1``.
        bits: ``2..8``.  group_size: must divide ``in``.
        damping: relative damping, a fraction of the mean diagonal, ``> 0``.
        block_size: columns per lazy batch, ``>= 1`` (rounded up to a multiple of ``group_size``).

    Returns:
        ``(codes, scale, zero)`` as :func:`quantize_groups`.

    Raises:
        TypeError, ValueError: bad ``weight``/``bits``/``group_size`` as in :func:`quantize_groups`;
            ``calibration`` not of shape ``(N, in)``, empty or not finite; ``damping <= 0``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> w, x = torch.randn(8, 16, generator=g), torch.randn(64, 16, generator=g)
        >>> err = lambda w_hat: float(((x @ (w - w_hat).T) ** 2).sum())
        >>> err(dequantize_groups(*gptq(w, x, bits=3, group_size=8))) < err(rtn(w, bits=3, group_size=8))
        True
    """
    where = "gptq"
    bits = _check_bits(bits, where)
    weight = _check_weight(weight, where)
    out_f, in_f = weight.shape
    group_size = _check_group(group_size, in_f, where)
    x = _check_calibration(calibration, in_f, where)
    damping = check_float(damping, where, "damping", minimum=0.0, min_open=True)
    block_size = check_int(block_size, where, "block_size", minimum=1)
    block_size = math.ceil(block_size / group_size) * group_size

    w = weight.detach().double().clone()             # float64: the updates accumulate over many columns
    h = 2.0 * x.double().T @ x.double()              # (in, in), the Hessian of the squared output error
    dead = torch.diag(h) == 0                        # inputs never active: their weights cannot matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.diag(h).mean() * torch.eye(in_f, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    codes = torch.zeros(out_f, in_f)
    scales = torch.zeros(out_f, in_f // group_size)
    zeros = torch.zeros(out_f, in_f // group_size)
    for b0 in range(0, in_f, block_size):
        b1 = min(b0 + block_size, in_f)
        wb, hb = w[:, b0:b1].clone(), hinv[b0:b1, b0:b1]
        errors = torch.zeros_like(wb)
        for i in range(b1 - b0):
            col = b0 + i
            if col % group_size == 0:                # a new group: its grid from its current weights
                scale, zero = _group_qparams(wb[:, i:i + group_size].float(), bits)
                scales[:, col // group_size], zeros[:, col // group_size] = scale[:, 0], zero[:, 0]
                scale, zero = scale.double(), zero.double()
            q = _quant(wb[:, i:i + 1], scale, zero, bits)
            codes[:, col] = q[:, 0].float()
            err = (wb[:, i] - (q[:, 0] - zero[:, 0]) * scale[:, 0]) / hb[i, i]
            wb[:, i:] -= err[:, None] * hb[i, i:][None, :]   # compensate inside the block
            errors[:, i] = err
        w[:, b1:] -= errors @ hinv[b0:b1, b1:]               # the lazy update of everything to the right
    return codes.to(torch.uint8), scales.half(), zeros.to(torch.uint8)


# ------------------------------------------------------------------ AWQ
def awq_scales(calibration: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's per-input-channel scales ``s_j = mean_n |x_nj| ^ alpha``, normalized.

    The scales are divided by ``sqrt(max(s) · min(s))`` so that they sit around 1 (the
    normalization of AWQ's reference code); ``alpha = 0`` gives all ones (plain RTN).
    Channels whose mean magnitude is 0 get the smallest positive scale.

    Args:
        calibration: float ``(N, in)``, ``N >= 1``.
        alpha: exponent in ``[0, 1]``.

    Returns:
        float32 ``(in,)``, all ``> 0``.

    Raises:
        TypeError, ValueError: ``calibration`` not a non-empty finite ``(N, in)`` tensor; ``alpha`` outside ``[0, 1]``.

    Examples:
        >>> awq_scales(torch.tensor([[1.0, 4.0], [-1.0, 4.0]]), alpha=0.5).tolist()
        [0.7071067690849304, 1.4142135381698608]
    """
    where = "awq_scales"
    x = _check_calibration(calibration, calibration.shape[-1] if isinstance(calibration, torch.Tensor)
                           and calibration.dim() == 2 else -1, where)
    alpha = check_float(alpha, where, "alpha", minimum=0.0, maximum=1.0)
    mag = x.abs().mean(0)
    positive = mag[mag > 0]
    mag = mag.clamp(min=float(positive.min()) if positive.numel() else 1.0)
    s = mag ** alpha
    return s / torch.sqrt(s.max() * s.min())


def output_error(weight: torch.Tensor, weight_hat: torch.Tensor, inputs: torch.Tensor,
                 input_scale: torch.Tensor | None = None) -> float:
    """Relative squared output error ``||X Wᵀ - (X / s) Ŵᵀ||² / ||X Wᵀ||²`` of a quantized layer.

    ``input_scale`` is AWQ's ``s`` (the quantized layer divides its input by it); the
    bias cancels and is left out.  This is the quantity GPTQ minimizes on calibration
    data; measured on *other* inputs it tells how well the compensation generalizes.

    Args:
        weight, weight_hat: float ``(out, in)``.  inputs: float ``(N, in)``, ``N >= 1``.
        input_scale: ``None`` or float ``(in,)``.

    Returns:
        a float ``>= 0`` (0 for an exact copy).

    Raises:
        TypeError, ValueError: shapes that do not fit, an empty ``inputs``.

    Examples:
        >>> w = torch.tensor([[1.0, 2.0]])
        >>> output_error(w, w, torch.ones(3, 2)), output_error(w, 2 * w, torch.ones(3, 2))
        (0.0, 1.0)
    """
    where = "output_error"
    weight = _check_weight(weight, where)
    weight_hat = check_tensor(weight_hat, where, "weight_hat", ndim=2, floating=True)
    if weight_hat.shape != weight.shape:
        raise ValueError(f"{where}: weight_hat must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(weight_hat.shape)}")
    x = _check_calibration(inputs, weight.shape[1], where)
    xq = x if input_scale is None else x / input_scale
    with torch.no_grad():
        ref = x @ weight.detach().float().T
        return float(((xq @ weight_hat.detach().float().T - ref) ** 2).sum() / (ref ** 2).sum().clamp(min=1e-30))


def awq(weight: torch.Tensor, calibration: torch.Tensor, bits: int = 4, group_size: int = 64,
        alphas=DEFAULT_ALPHAS, then_gptq: bool = False):
    """AWQ (Lin et al., 2024): activation-aware per-input-channel scaling, then rounding.

    Rounding error hurts the output most in the input channels that carry large
    activations.  AWQ multiplies weight column ``j`` by ``s_j`` before quantizing, so
    those columns use a larger share of their group's grid (relatively finer steps),
    and divides the input by ``s_j``, which leaves the float product unchanged:
    ``W x = (W diag(s)) (diag(s)⁻¹ x)``.  With ``s = mean|x|^α`` (:func:`awq_scales`),
    ``α`` is chosen from ``alphas`` to minimize the output error on the calibration
    inputs (:func:`output_error`); ``α = 0`` is plain RTN, so AWQ is never worse than RTN
    *on the calibration data*.  ``then_gptq=True`` quantizes the scaled weight with
    :func:`gptq` instead of RTN (inputs divided by ``s`` as well).

    Args:
        weight: float ``(out, in)``.  calibration: float ``(N, in)``, ``N >= 1``.
        bits: ``2..8``.  group_size: must divide ``in``.
        alphas: the grid of exponents in ``[0, 1]`` (non-empty).
        then_gptq: quantize the scaled weight with GPTQ.

    Returns:
        ``(codes, scale, zero, input_scale, alpha)``: codes, scale, zero as
        :func:`quantize_groups` for the *scaled* weight ``W diag(s)``; ``input_scale`` the
        float32 ``(in,)`` vector ``s`` to divide the input by; ``alpha`` the chosen exponent.

    Raises:
        TypeError, ValueError: as :func:`gptq`; ``alphas`` empty or outside ``[0, 1]``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(256, 32, generator=g) * torch.linspace(0.1, 4.0, 32)   # uneven channels
        >>> w = torch.randn(16, 32, generator=g)
        >>> codes, scale, zero, s, alpha = awq(w, x, bits=3, group_size=32)
        >>> output_error(w, dequantize_groups(codes, scale, zero), x, s) < output_error(w, rtn(w, 3, 32), x)
        True
    """
    where = "awq"
    bits = _check_bits(bits, where)
    weight = _check_weight(weight, where)
    out_f, in_f = weight.shape
    group_size = _check_group(group_size, in_f, where)
    x = _check_calibration(calibration, in_f, where)
    alphas = [check_float(a, where, "alphas[i]", minimum=0.0, maximum=1.0) for a in alphas]
    if not alphas:
        raise ValueError(f"{where}: alphas must hold at least one exponent in [0, 1], got an empty grid")
    w = weight.detach().float()
    best = None
    for alpha in alphas:
        s = awq_scales(x, alpha)
        result = gptq(w * s, x / s, bits, group_size) if then_gptq else quantize_groups(w * s, bits, group_size)
        err = output_error(w, dequantize_groups(*result), x, s)
        if best is None or err < best[0]:
            best = (err, result, s, alpha)
    _, (codes, scale, zero), s, alpha = best
    return codes, scale, zero, s, alpha


# ------------------------------------------------------------------ storage
def pack_codes(codes: torch.Tensor, bits: int) -> bytes:
    """Pack integer codes ``0..2^bits - 1`` into a byte string, ``bits`` bits per code.

    The codes are written as one bit stream (most significant bit first) and padded with
    zero bits to whole bytes, so the result has exactly ``ceil(numel * bits / 8)`` bytes.

    Raises:
        ValueError: a code outside ``0..2^bits - 1``; bad ``bits``.

    Examples:
        >>> pack_codes(torch.tensor([1, 2, 15]), bits=4)
        b'\\x12\\xf0'
    """
    where = "pack_codes"
    bits = _check_bits(bits, where)
    c = check_tensor(codes, where, "codes").reshape(-1).to(torch.int64)
    if int(c.min()) < 0 or int(c.max()) > 2 ** bits - 1:
        raise ValueError(f"{where}: codes must lie in 0..{2 ** bits - 1}, got values in {int(c.min())}..{int(c.max())}")
    as_bits = np.unpackbits(c.numpy().astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]   # (numel, bits)
    return np.packbits(as_bits.reshape(-1)).tobytes()


def unpack_codes(data: bytes, bits: int, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: ``numel`` uint8 codes from a byte string.

    Examples:
        >>> unpack_codes(b'\\x12\\xf0', bits=4, numel=3).tolist()
        [1, 2, 15]
    """
    bits = _check_bits(bits, "unpack_codes")
    numel = check_int(numel, "unpack_codes", "numel", minimum=0)
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: numel * bits].reshape(numel, bits)
    padded = np.concatenate([np.zeros((numel, 8 - bits), dtype=np.uint8), stream], axis=1)
    return torch.from_numpy(np.packbits(padded, axis=1)[:, 0].copy())


class WeightOnlyLinear(nn.Module):
    """A Linear layer whose weight is stored as group-wise integer codes and dequantized on the fly.

    ``forward(x) = F.linear(x / input_scale, dequantize_groups(codes, scale, zero), bias)``;
    ``input_scale`` is AWQ's ``s`` (``None`` for RTN and GPTQ).  Only the dequantized
    weight is float: inputs and outputs keep their dtype (float32).  A real kernel fuses
    the dequantization into the matrix multiply so the float weight never exists in
    memory; here it is recomputed at every call, which is correct but not fast.

    Args:
        codes: uint8 ``(out, in)``; scale: float16 and zero: uint8 ``(out, in / group_size)``;
        bits: the code width (``2..8``); bias: float ``(out,)`` or ``None``;
        input_scale: float ``(in,)`` or ``None``; alpha: AWQ's chosen exponent (kept for inspection) or ``None``;
        method: the name of the method that chose the codes (shown by ``print``).

    Input ``(..., in)`` float; output ``(..., out)`` float.
    """

    def __init__(self, codes, scale, zero, bits: int, bias=None, input_scale=None, method: str = "rtn",
                 alpha: float | None = None):
        super().__init__()
        self.bits = _check_bits(bits, "WeightOnlyLinear")
        dequantize_groups(codes[:1], scale[:1], zero[:1])   # shape checks
        self.out_features, self.in_features = codes.shape
        self.group_size = self.in_features // scale.shape[1]
        self.method, self.alpha = method, alpha
        self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scale", scale.half())
        self.register_buffer("zero", zero.to(torch.uint8))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight ``(out, in)`` the codes stand for."""
        return dequantize_groups(self.codes, self.scale, self.zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale
        return F.linear(x, self.dequantized_weight(), self.bias)

    def stored_bytes(self) -> int:
        """Exact bytes to store the layer: packed codes, float16 scales, ``bits``-wide zero points,
        float32 bias and (AWQ) float32 input scales."""
        n_groups = self.scale.numel()
        total = math.ceil(self.codes.numel() * self.bits / 8) + 2 * n_groups + math.ceil(n_groups * self.bits / 8)
        total += 0 if self.bias is None else 4 * self.bias.numel()
        total += 0 if self.input_scale is None else 4 * self.input_scale.numel()
        return total

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, method={self.method!r}")


def weight_only_bytes(model: nn.Module) -> int:
    """Bytes to store ``model``: :meth:`WeightOnlyLinear.stored_bytes` for its quantized layers,
    ``element_size`` bytes per value for every other parameter and floating buffer.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> weight_only_bytes(nn.Linear(64, 8))                               # 520 float32 values
        2080
        >>> lin = quantize_model_weight_only(nn.Linear(64, 8), "rtn", bits=4, group_size=32)
        >>> weight_only_bytes(lin)                # 256 B codes + 16 scales * 2 B + 8 B zeros + 32 B bias
        328
    """
    check_model(model, "weight_only_bytes")
    total, counted = 0, set()
    for m in model.modules():
        if isinstance(m, WeightOnlyLinear):
            total += m.stored_bytes()
            counted.update(id(t) for t in m.buffers())
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in counted and t.is_floating_point():
            total += t.element_size() * t.numel()
    return total


def _layer_inputs(model: nn.Module, name: str, calibration: torch.Tensor) -> torch.Tensor:
    """The inputs that the submodule ``name`` receives when ``model`` runs on ``calibration``."""
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(calibration)
    finally:
        handle.remove()
    return torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).float()


def quantize_model_weight_only(model: nn.Module, method: str = "rtn", bits: int = 4, group_size: int = 64,
                               calibration: torch.Tensor | None = None, layers=None, alphas=DEFAULT_ALPHAS) -> nn.Module:
    """A copy of ``model`` with its Linear layers replaced by :class:`WeightOnlyLinear`.

    The layers are quantized in order, and for ``"gptq"``/``"awq"``/``"awq+gptq"`` each
    one's calibration inputs are recorded from the *partly quantized* model (the layers
    before it already quantized), so a layer compensates the errors of those before it,
    as in GPTQ's sequential procedure.

    Args:
        model: any ``nn.Module`` (left unchanged).
        method: ``"rtn"``, ``"gptq"``, ``"awq"`` or ``"awq+gptq"``.
        bits: ``2..8``.  group_size: must divide every chosen layer's ``in_features``.
        calibration: model inputs ``(N, ...)``, ``N >= 1``; required except for ``"rtn"``.
        layers: names of the Linear layers to quantize (default: every ``nn.Linear``).
        alphas: AWQ's grid of exponents.

    Returns:
        the quantized copy, in eval mode.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: unknown ``method``; bad ``bits``; a ``group_size`` that does not divide a
            layer's input width (the message names the layer); a missing or empty ``calibration``;
            a name in ``layers`` that is not a Linear layer of the model.

    Examples:
        >>> torch.manual_seed(0) and None
        >>> net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> q = quantize_model_weight_only(net, "gptq", bits=4, group_size=8, calibration=torch.randn(64, 8))
        >>> [type(m).__name__ for m in q]
        ['WeightOnlyLinear', 'ReLU', 'WeightOnlyLinear']
    """
    where = "quantize_model_weight_only"
    check_model(model, where)
    if method not in METHODS:
        raise ValueError(f"{where}: method must be one of {list(METHODS)}, got {_given(method)}")
    bits = _check_bits(bits, where)
    linear = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = list(linear) if layers is None else list(layers)
    for n in names:
        if n not in linear:
            raise ValueError(f"{where}: layers must name Linear layers of the model ({list(linear)}), got {n!r}")
        try:
            _check_group(group_size, linear[n].in_features, where)
        except ValueError as e:
            raise ValueError(f"{e} (layer {n!r})") from None
    if method != "rtn":
        if calibration is None:
            raise ValueError(f"{where}: method {method!r} needs calibration inputs of shape (N, ...) with N >= 1, got None")
        if not isinstance(calibration, torch.Tensor) or calibration.dim() == 0 or calibration.shape[0] == 0:
            raise ValueError(f"{where}: calibration must hold at least 1 sample, got "
                             f"{_given(calibration)}")
    q = copy.deepcopy(model).eval()
    for n in names:
        layer = q.get_submodule(n)
        w = layer.weight.detach().float()
        s, alpha = None, None
        if method == "rtn":
            codes, scale, zero = quantize_groups(w, bits, group_size)
        else:
            x = _layer_inputs(q, n, calibration)
            if method == "gptq":
                codes, scale, zero = gptq(w, x, bits, group_size)
            else:
                codes, scale, zero, s, alpha = awq(w, x, bits, group_size, alphas, then_gptq=(method == "awq+gptq"))
        new = WeightOnlyLinear(codes, scale, zero, bits, layer.bias, s, method, alpha)
        if n == "":                                   # the model is itself one Linear layer
            return new.eval()
        set_submodule(q, n, new, where)
    return q


# --------------------------------------------------------------------------- the optional library
TORCHAO_RANGE = ((0, 18), (0, 19), (2, 11))  # torchao >= 0.18, < 0.19, with torch >= 2.11 (nnbook[torchao])


def _release(version: str) -> tuple[int, int]:
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in version.split("+")[0].split(".")[:2]]
    return tuple((parts + [0, 0])[:2])


def torchao_status() -> tuple[object | None, str]:
    """The installed torchao module if chapter 5c can use it, else ``None``, with one sentence saying which.

    Chapter 5c's comparison uses the API of torchao 0.18 (``IntxWeightOnlyConfig``), which needs torch 2.11
    or newer (pytorch/ao#4154) but does not declare it, so pip never notices a mismatch; an older torchao
    (Colab preinstalls 0.10) lacks that API. Both cases return ``None`` instead of failing later.

    Returns:
        ``(module, sentence)``: the ``torchao`` module or ``None``, and a sentence for the reader.

    Examples:
        >>> module, why = torchao_status()
        >>> isinstance(why, str) and (module is None or why.startswith("torchao"))
        True
    """
    lo, hi, torch_min = TORCHAO_RANGE
    try:
        import torchao
    except Exception as exc:  # not installed, or built for another torch and failing at import
        return None, (f"torchao is not usable here ({type(exc).__name__}), so the torchao cells are skipped; "
                      "install it with pip install 'nnbook[torchao]'")
    have, have_torch = _release(getattr(torchao, "__version__", "0")), _release(torch.__version__)
    if not (lo <= have < hi) or have_torch < torch_min:
        return None, (f"torchao {torchao.__version__} with torch {torch.__version__.split('+')[0]} is installed, but "
                      f"this section needs torchao {lo[0]}.{lo[1]} with torch >= {torch_min[0]}.{torch_min[1]}, "
                      "so the torchao cells are skipped")
    return torchao, f"torchao {torchao.__version__} with torch {torch.__version__.split('+')[0]}"
