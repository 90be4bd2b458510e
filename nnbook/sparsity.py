"""Modern pruning: per-layer sparsity from a sensitivity scan, BatchNorm recalibration, N:M masks,
the sparse-kernel crossover and structured pruning of residual networks (chapter 4b).

Chapter 4 (:mod:`nnbook.prune`) teaches the classic building blocks; this module adds what a
practitioner meets next, each with the quantity it promises to save:

* **Sensitivity-driven allocation** — choose one sparsity per layer from a sensitivity scan
  so that the whole model reaches a target sparsity while sensitive layers keep more weights
  (the procedure of Han et al., 2015, and Distiller; a hand-made form of what AMC, He et al.
  2018, learns): :func:`allocate_sparsity`, :func:`layer_masks`.
* **BatchNorm recalibration** — re-estimate the running statistics of every BatchNorm after
  structured pruning, with forward passes only (Ioffe & Szegedy, 2015, define the statistics):
  :func:`recalibrate_batchnorm`.
* **N:M semi-structured sparsity** — keep the ``n`` largest of every ``m`` consecutive
  weights along the input dimension; 2:4 is the pattern of NVIDIA's sparse tensor cores
  (Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks"): :func:`nm_mask`,
  :func:`nm_masks`, :func:`is_nm_sparse`, :func:`nm_bytes`.
* **Sparse kernels** — time a CSR sparse × dense product against the dense product over
  sparsity levels and sizes and find where CSR starts to win: :func:`csr_dense_timings`,
  :func:`crossover_sparsity`.
* **Residual networks** — remove hidden units inside each residual block with our own
  channel removal (:func:`prune_residual_hidden`), or let Torch-Pruning's dependency graph
  (Fang et al., 2023, "DepGraph: Towards Any Structural Pruning") find every coupled layer,
  the residual stream included (:func:`depgraph_prune`); :func:`match_flops` picks the amount
  that meets a FLOPs target, so the two are compared at the same cost.

Conventions are those of :mod:`nnbook.prune`: functions that transform a model return a
modified *copy*; a mask is a bool tensor shaped like the weight, ``True`` = kept.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from . import prune as P
from ._checks import _given, check_fraction, check_int, check_model, check_tensor
from .models import Residual

__all__ = ["allocate_sparsity", "layer_masks", "recalibrate_batchnorm", "nm_mask", "nm_masks", "is_nm_sparse",
           "NMSize", "nm_bytes", "csr_dense_timings", "crossover_sparsity", "prune_residual_hidden",
           "depgraph_prune", "match_flops"]


# --- sensitivity-driven per-layer sparsity ---------------------------------------------------
def allocate_sparsity(scan: Mapping[str, Sequence[float]], levels: Sequence[float], sizes: Mapping[str, int],
                      target: float, reference: float) -> dict[str, float]:
    """Per-layer sparsities from a sensitivity scan, reaching a target overall sparsity.

    For a tolerated loss ``d`` each layer gets the largest scanned sparsity up to which its score
    stays within ``d`` of ``reference`` at every scanned level (the score when only that layer is
    pruned, as :func:`nnbook.prune.sensitivity_scan` returns it; a later level that happens to
    score well again does not count, because a scan on a small validation set is noisy).  ``d`` grows until the weighted
    sparsity ``sum(s_l n_l) / sum(n_l)`` reaches ``target``; then the layers that got the most
    give back the excess, largest first, so the total is ``target`` (to one weight).  Sensitive
    layers (whose score falls early) thus keep more weights than with one sparsity for all —
    the rule of Han et al. (2015), who set per-layer thresholds from such a scan.

    Args:
        scan: ``{layer: [score at each level]}`` (validation accuracy, say; higher is better).
        levels: the scanned sparsities, increasing, in ``[0, 1)``.
        sizes: ``{layer: number of weights}``; the same keys as ``scan``.
        target: overall sparsity wanted, in ``[0, 1)``; at most the largest level.
        reference: the unpruned model's score.

    Returns:
        ``{layer: sparsity}`` with ``sum(s_l n_l) ≈ target · sum(n_l)``.

    Raises:
        TypeError: ``scan``/``sizes`` not mappings.
        ValueError: different keys, a score list of the wrong length, levels not increasing,
            a target above the largest level.

    Examples:
        >>> scan = {"a": [1.0, 0.2, 0.1], "b": [1.0, 1.0, 0.9]}      # "a" is sensitive, "b" is not
        >>> allocate_sparsity(scan, [0.0, 0.5, 0.9], {"a": 100, "b": 900}, target=0.8, reference=1.0)
        {'a': 0.0, 'b': 0.8888888888888888}
    """
    where = "allocate_sparsity"
    if not isinstance(scan, Mapping) or not isinstance(sizes, Mapping):
        raise TypeError(f"{where}: scan and sizes must be dicts keyed by layer name, got {_given(scan)} and "
                        f"{_given(sizes)}")
    if set(scan) != set(sizes) or not scan:
        raise ValueError(f"{where}: scan and sizes must name the same layers, got {sorted(scan)} and {sorted(sizes)}")
    levels = [check_fraction(v, where, "level") for v in levels]
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"{where}: levels must be increasing, got {levels}")
    for name, scores in scan.items():
        if len(scores) != len(levels):
            raise ValueError(f"{where}: {name!r} has {len(scores)} scores for {len(levels)} levels")
    target = check_fraction(target, where, "target")
    if target > levels[-1]:
        raise ValueError(f"{where}: target {target} is above the largest scanned level {levels[-1]}")
    total = sum(int(n) for n in sizes.values())
    need = round(target * total)  # weights to remove

    def pick(d):  # per layer: the last level before the score first falls below reference - d
        alloc = {}
        for n in scan:
            alloc[n] = 0.0
            for s, a in zip(levels, scan[n]):
                if a < reference - d:
                    break
                alloc[n] = s
        return alloc

    losses = sorted({max(0.0, reference - a) for scores in scan.values() for a in scores} | {float("inf")})
    for d in losses:
        alloc = pick(d)
        if sum(alloc[n] * sizes[n] for n in scan) >= need - 0.5:
            break
    zeros = {n: alloc[n] * sizes[n] for n in scan}
    excess = sum(zeros.values()) - need
    for n in sorted(scan, key=lambda n: -alloc[n]):  # the most-pruned layers give back first
        give = min(excess, zeros[n])
        zeros[n] -= give
        excess -= give
        if excess <= 0:
            break
    return {n: zeros[n] / sizes[n] for n in scan}


def layer_masks(model: nn.Module, sparsities: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Magnitude masks with one sparsity per layer (:func:`nnbook.prune.magnitude_masks` per layer).

    Args:
        model: the model (not modified).
        sparsities: ``{layer name: fraction in [0, 1)}``; unnamed layers are not pruned.

    Returns:
        ``{layer name: bool mask}``, ``True`` = kept.

    Raises:
        TypeError, ValueError: as :func:`nnbook.prune.magnitude_masks`.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))
        >>> masks = layer_masks(m, {"0": 0.9, "2": 0.5})
        >>> int(masks["0"].sum()), int(masks["2"].sum())
        (10, 10)
    """
    if not isinstance(sparsities, Mapping):
        raise TypeError(f"layer_masks: sparsities must be a dict {{layer: fraction}}, got {_given(sparsities)}")
    out = {}
    for name, s in sparsities.items():
        out.update(P.magnitude_masks(model, s, scope="layer", layers=[name]))
    return out


# --- BatchNorm recalibration -------------------------------------------------------------------
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def recalibrate_batchnorm(model: nn.Module, loader, max_batches: int | None = None) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated from ``loader``.

    After channels are removed, each BatchNorm still holds the mean and variance its inputs
    had in the unpruned network; the next layer now sees different inputs, so those
    statistics are stale.  This resets them and runs the data forward (no gradient, no
    optimizer step; only the BatchNorm layers in training mode, so dropout stays off) with
    ``momentum=None``, which makes PyTorch keep the exact average over the batches seen.
    The learned scale and shift (``weight``, ``bias``) are unchanged.

    Args:
        model: a model with at least one BatchNorm layer (not modified).
        loader: yields ``(inputs, labels)`` or ``inputs`` batches (training data).
        max_batches: use at most this many batches (all by default), ``>= 1``.

    Returns:
        The recalibrated copy, in eval mode, on the model's device.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: the model has no BatchNorm, or ``loader`` yielded no batch (an empty
            calibration set).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).eval()
        >>> x = torch.randn(64, 3) + 5
        >>> r = recalibrate_batchnorm(m, [(x, None)])
        >>> torch.allclose(r[1].running_mean, m[0](x).mean(0).detach(), atol=1e-5), float(m[1].running_mean.sum())
        (True, 0.0)
    """
    check_model(model, "recalibrate_batchnorm")
    if max_batches is not None:
        max_batches = check_int(max_batches, "recalibrate_batchnorm", "max_batches", minimum=1)
    work = copy.deepcopy(model).eval()
    bns = [m for m in work.modules() if isinstance(m, _BN)]
    if not bns:
        raise ValueError("recalibrate_batchnorm: the model has no BatchNorm layer to recalibrate")
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = the exact mean over all batches
        bn.train()
    dev = next(work.parameters()).device
    seen = 0
    with torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            work(x.to(dev))
            seen += 1
            if max_batches is not None and seen >= max_batches:
                break
    if seen == 0:
        raise ValueError("recalibrate_batchnorm: the calibration loader yielded no batch; expected at least one "
                         "batch of training inputs")
    for bn, orig in zip(bns, [m for m in model.modules() if isinstance(m, _BN)]):
        bn.momentum = orig.momentum
    return work.eval()


# --- N:M semi-structured sparsity ------------------------------------------------------------
def _check_nm(n, m, where: str) -> tuple[int, int]:
    n = check_int(n, where, "n", minimum=1)
    m = check_int(m, where, "m", minimum=2)
    if n >= m:
        raise ValueError(f"{where}: an N:M pattern keeps n of every m weights, so n must be smaller than m; "
                         f"got n={n}, m={m} (2:4 keeps 2 of 4)")
    return n, m


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude weights of every group of ``m`` consecutive inputs.

    Groups run along the input dimension of each output row (a conv weight
    ``(out, in, k, k)`` is the matrix ``(out, in·k·k)``), the layout of NVIDIA's 2:4
    sparse tensor cores (Mishra et al., 2021).  Ties are broken towards the first position.

    Args:
        weight: float tensor with ``dim >= 2``; its input width (``numel / out``) must be a
            multiple of ``m``.
        n, m: keep ``n`` of every ``m``, ``1 <= n < m``.

    Returns:
        bool mask shaped like ``weight``, exactly ``n`` ``True`` per group.

    Raises:
        TypeError: not a tensor, or not an int ``n``/``m``.
        ValueError: ``n >= m``; the input width is not a multiple of ``m``; fewer than 2 dims.

    Examples:
        >>> import torch
        >>> nm_mask(torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 0.0, 0.0, -1.5]])).int().tolist()
        [[0, 1, 1, 0, 1, 0, 0, 1]]
    """
    n, m = _check_nm(n, m, "nm_mask")
    w = check_tensor(weight, "nm_mask", "weight", floating=True)
    if w.dim() < 2:
        raise ValueError(f"nm_mask: weight must have at least 2 dimensions (out, in, ...), got shape {tuple(w.shape)}")
    mat = w.detach().reshape(w.shape[0], -1)
    if mat.shape[1] % m:
        raise ValueError(f"nm_mask: the input width must be a multiple of m={m} to form groups of {m}; "
                         f"got width {mat.shape[1]} (weight shape {tuple(w.shape)})")
    groups = mat.abs().reshape(-1, m)
    # stable ranking: the largest magnitudes, ties to the first position
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order, True)
    return mask.reshape(w.shape)


def nm_masks(model: nn.Module, n: int = 2, m: int = 4, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """:func:`nm_mask` for every prunable layer (or the ``layers`` named).

    Returns:
        ``{layer name: bool mask}``.

    Raises:
        TypeError, ValueError: as :func:`nm_mask` and :func:`nnbook.prune.prunable_layers`; the
            message names the layer whose width does not fit.

    Examples:
        >>> from torch import nn
        >>> masks = nm_masks(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))
        >>> {k: float(v.float().mean()) for k, v in masks.items()}
        {'0': 0.5, '2': 0.5}
    """
    _check_nm(n, m, "nm_masks")
    out = {}
    for name, layer in P.prunable_layers(model, layers).items():
        try:
            out[name] = nm_mask(layer.weight, n, m)
        except ValueError as err:
            raise ValueError(f"nm_masks: layer {name!r}: {err}") from None
    return out


def is_nm_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive inputs holds at most ``n`` non-zeros.

    Examples:
        >>> import torch
        >>> is_nm_sparse(torch.tensor([[1.0, 0.0, 2.0, 0.0]])), is_nm_sparse(torch.tensor([[1.0, 1.0, 2.0, 0.0]]))
        (True, False)
    """
    n, m = _check_nm(n, m, "is_nm_sparse")
    w = check_tensor(weight, "is_nm_sparse", "weight")
    mat = w.detach().reshape(w.shape[0], -1)
    if mat.shape[1] % m:
        raise ValueError(f"is_nm_sparse: the input width must be a multiple of m={m}; got {mat.shape[1]}")
    return bool(((mat != 0).reshape(-1, m).sum(1) <= n).all())


@dataclass(frozen=True)
class NMSize:
    """Bytes of a matrix stored in the compressed N:M format (all in bytes).

    Attributes:
        values: the kept values, ``rows · cols · n/m · value_bits / 8``.
        metadata: the position of each kept value inside its group, ``ceil(log2 m)`` bits each.
        dense: the same matrix stored densely with ``value_bits`` per weight.
    """

    values: int
    metadata: int
    dense: int

    @property
    def total(self) -> int:
        return self.values + self.metadata


def nm_bytes(shape: Sequence[int], n: int = 2, m: int = 4, value_bits: int = 16) -> NMSize:
    """Storage of an N:M-sparse weight: kept values plus ``ceil(log2 m)``-bit position indices.

    For 2:4 this is NVIDIA's compressed format (Mishra et al., 2021): half of the values and
    a 2-bit index per kept value, i.e. for float16 values ``2·(k/2) + 2/8·(k/2)`` bytes per
    row of ``k`` weights, ``18/32 = 56.25 %`` of dense float16.  PyTorch's
    ``torch.sparse.to_sparse_semi_structured`` (CUTLASS layout) stores exactly these bytes:
    its ``meta`` tensor holds ``k/16`` int16 per row for float16/bfloat16.

    Args:
        shape: the weight's shape, ``(out, in, ...)``; the input width must be a multiple of ``m``.
        n, m: the pattern, ``1 <= n < m``.
        value_bits: bits per stored value (16 for float16/bfloat16, 8 for int8, 32 for float32).

    Returns:
        An :class:`NMSize` in bytes.

    Raises:
        TypeError: bad types.
        ValueError: ``n >= m``, a width that is not a multiple of ``m``, a bad shape.

    Examples:
        >>> s = nm_bytes((64, 128))            # 2:4, float16 values
        >>> s.values, s.metadata, s.total, s.dense
        (8192, 1024, 9216, 16384)
    """
    n, m = _check_nm(n, m, "nm_bytes")
    value_bits = check_int(value_bits, "nm_bytes", "value_bits", minimum=1)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) < 2 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"nm_bytes: shape must be (out, in, ...) of positive ints, got {shape!r}")
    rows, cols = shape[0], math.prod(shape[1:])
    if cols % m:
        raise ValueError(f"nm_bytes: the input width must be a multiple of m={m}; got width {cols} (shape {tuple(shape)})")
    kept = rows * cols // m * n
    return NMSize(values=math.ceil(kept * value_bits / 8), metadata=math.ceil(kept * math.ceil(math.log2(m)) / 8),
                  dense=math.ceil(rows * cols * value_bits / 8))


# --- sparse kernels: CSR versus dense -----------------------------------------------------------
def csr_dense_timings(sizes: Sequence[int], sparsities: Sequence[float], batch: int = 64, repeats: int = 15,
                      seed: int = 0) -> list[dict]:
    """Median CPU time of ``W @ X`` with ``W`` dense and with ``W`` in PyTorch's CSR format.

    For each square size ``n`` and sparsity ``s``, ``W`` is an ``n × n`` float32 matrix with a
    random ``s`` fraction of zeros and ``X`` is ``n × batch``; the dense product is
    ``torch.mm(W, X)`` and the sparse one ``torch.sparse.mm(W_csr, X)``.  Both are timed
    in alternating rounds (:func:`nnbook.measure.latency`), so both see the same machine load.
    The dense time does not depend on the sparsity; it is measured at every point anyway
    (the same load as its CSR partner).

    Args:
        sizes: matrix sizes ``n`` (ints >= 1).
        sparsities: fractions of zeros in ``[0, 1)``.
        batch: columns of ``X`` (inputs per call), ``>= 1``.
        repeats: timed calls per measurement, ``>= 3``.
        seed: seed of the random matrices.

    Returns:
        A list of dicts ``{"size", "sparsity", "dense_ms", "csr_ms", "ratio"}`` with
        ``ratio = csr_ms / dense_ms`` (below 1: CSR is faster).

    Raises:
        TypeError, ValueError: bad sizes, sparsities, batch or repeats.

    Examples:
        >>> rows = csr_dense_timings([32], [0.5, 0.9], batch=4, repeats=3)
        >>> [(r["size"], r["sparsity"]) for r in rows], all(r["csr_ms"] > 0 for r in rows)
        ([(32, 0.5), (32, 0.9)], True)
    """
    import warnings

    from .measure import latency

    where = "csr_dense_timings"
    sizes = [check_int(n, where, "size", minimum=1) for n in sizes]
    fracs = P._check_sparsities(list(sparsities), where)
    batch = check_int(batch, where, "batch", minimum=1)
    repeats = check_int(repeats, where, "repeats", minimum=3)
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for n in sizes:
        x = torch.randn(n, batch, generator=g)
        for s in fracs:
            w = torch.randn(n, n, generator=g) * (torch.rand(n, n, generator=g) >= s)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                w_csr = w.to_sparse_csr()
                dense, csr = [], []
                for _ in range(3):  # alternate, so both see the same load
                    dense.append(latency(lambda a: torch.mm(w, a), x, warmup=2, repeats=repeats).median_ms)
                    csr.append(latency(lambda a: torch.sparse.mm(w_csr, a), x, warmup=2, repeats=repeats).median_ms)
            d, c = sorted(dense)[1], sorted(csr)[1]
            rows.append({"size": n, "sparsity": s, "dense_ms": d, "csr_ms": c, "ratio": c / d})
    return rows


def crossover_sparsity(sparsities: Sequence[float], ratios: Sequence[float]) -> float | None:
    """The lowest sparsity from which CSR stays faster (``ratio < 1``) at every higher level.

    Args:
        sparsities: increasing levels.
        ratios: ``csr_ms / dense_ms`` at each level.

    Returns:
        That sparsity, or ``None`` when CSR is not faster at the highest level.

    Raises:
        ValueError: lengths differ, or levels not increasing.

    Examples:
        >>> crossover_sparsity([0.5, 0.9, 0.95, 0.99], [3.0, 1.2, 0.8, 0.3])
        0.95
        >>> crossover_sparsity([0.5, 0.9], [3.0, 1.2]) is None
        True
    """
    s, r = list(sparsities), list(ratios)
    if len(s) != len(r) or not s:
        raise ValueError(f"crossover_sparsity: need as many ratios as sparsities, got {len(r)} and {len(s)}")
    if any(b <= a for a, b in zip(s, s[1:])):
        raise ValueError(f"crossover_sparsity: sparsities must be increasing, got {s}")
    found = None
    for level, ratio in zip(reversed(s), reversed(r)):
        if ratio >= 1:
            break
        found = level
    return found


# --- structured pruning of residual networks -------------------------------------------------
def prune_residual_hidden(model: nn.Module, amount: float, norm: str = "l1") -> nn.Module:
    """Remove a fraction of the hidden units inside every :class:`~nnbook.models.Residual` block.

    A block ``y = x + f(x)`` with ``f = Linear → ReLU → Linear`` (or any chain
    :func:`nnbook.prune.prune_channels` supports) can lose hidden units of ``f`` freely:
    the first layer loses output rows, the second the matching input columns, and the
    block's output keeps the residual stream's width.  The stream itself (the outputs of
    the layer before the blocks and of every block's last layer) is coupled by the
    additions and is left alone — that needs a dependency graph (:func:`depgraph_prune`).

    Args:
        model: a model holding Residual blocks (not modified).
        amount: fraction in ``[0, 1)`` of each block's hidden units to remove (smallest norm).
        norm: ``"l1"`` or ``"l2"`` ranking of the first layer's rows (Li et al., 2017).

    Returns:
        The smaller copy.

    Raises:
        TypeError: ``model`` is not a module, or a block's body is not a supported chain.
        ValueError: no Residual block; ``amount`` outside ``[0, 1)``.

    Examples:
        >>> from nnbook.models import residual_mlp
        >>> small = prune_residual_hidden(residual_mlp(64, 16, blocks=2), 0.5)
        >>> small[3].body[0].weight.shape, small[3].body[2].weight.shape
        (torch.Size([8, 16]), torch.Size([16, 8]))
    """
    check_model(model, "prune_residual_hidden")
    amount = check_fraction(amount, "prune_residual_hidden", "amount")
    work = copy.deepcopy(model)
    blocks = [m for m in work.modules() if isinstance(m, Residual)]
    if not blocks:
        raise ValueError("prune_residual_hidden: the model has no Residual block")
    for block in blocks:
        block.body = P.prune_channels(block.body, amount, norm)
    return work


def depgraph_prune(model: nn.Module, example_input: torch.Tensor, amount: float,
                   ignored_layers: Sequence[str] = ()) -> nn.Module:
    """Structured L1 pruning with Torch-Pruning's dependency graph (Fang et al., 2023).

    ``torch_pruning.DependencyGraph`` traces the model and groups every parameter that must
    lose the same channels; ``MagnitudePruner`` ranks each group by the L1 norm of all its
    parameters together and removes ``amount`` of its channels.  In a residual network this
    also narrows the residual stream, which channel removal layer by layer cannot do.

    Args:
        model: the model (not modified).
        example_input: one input batch, for tracing.
        amount: fraction in ``[0, 1)`` of the channels to remove from every prunable group.
        ignored_layers: names of layers whose outputs must stay (the output layer always stays).

    Returns:
        The smaller copy, in eval mode.

    Raises:
        ImportError: Torch-Pruning is not installed (``pip install torch-pruning``).
        TypeError, ValueError: bad model, input or amount.

    Examples:
        >>> import torch
        >>> from nnbook.models import residual_mlp
        >>> from nnbook.measure import count_params
        >>> m = residual_mlp(64, 16, blocks=2)
        >>> count_params(depgraph_prune(m, torch.zeros(1, 64), 0.5)) < count_params(m)
        True
    """
    check_model(model, "depgraph_prune")
    check_tensor(example_input, "depgraph_prune", "example_input")
    amount = check_fraction(amount, "depgraph_prune", "amount")
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - it is a requirement of the book
        raise ImportError("depgraph_prune: needs Torch-Pruning: pip install torch-pruning") from err
    work = copy.deepcopy(model).eval()
    named = dict(work.named_modules())
    last = P._last_prunable(work) if isinstance(work, nn.Sequential) else list(P.prunable_layers(work))[-1]
    ignored = [named[last]]
    for name in ignored_layers:
        if name not in named:
            raise ValueError(f"depgraph_prune: the model has no layer {name!r}")
        ignored.append(named[name])
    pruner = tp.pruner.MagnitudePruner(work, example_input, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=amount, ignored_layers=ignored)
    pruner.step()
    return work.eval()


def match_flops(prune: Callable[[float], nn.Module], flops_of: Callable[[nn.Module], int], target: float,
                hi: float = 0.95, steps: int = 12) -> tuple[float, nn.Module]:
    """Bisection on the pruning amount so that ``flops_of(prune(amount))`` reaches ``target``.

    Args:
        prune: ``prune(amount) -> smaller model``; FLOPs must not grow with ``amount``.
        flops_of: ``flops_of(model) -> FLOPs``.
        target: FLOPs wanted (the result has at most this many, as close as the bisection gets).
        hi: the largest amount tried, in ``(0, 1)``.
        steps: bisection steps, ``>= 1``.

    Returns:
        ``(amount, pruned model)`` with FLOPs ``<= target``.

    Raises:
        ValueError: ``target`` cannot be reached even at ``hi``.

    Examples:
        >>> from torch import nn
        >>> from nnbook.prune import prune_channels
        >>> m = nn.Sequential(nn.Linear(8, 100), nn.ReLU(), nn.Linear(100, 2))
        >>> width = lambda model: model[0].out_features
        >>> a, small = match_flops(lambda a: prune_channels(m, a), width, target=40)
        >>> width(small)
        40
    """
    hi = check_fraction(hi, "match_flops", "hi")
    steps = check_int(steps, "match_flops", "steps", minimum=1)
    best = prune(hi)
    if flops_of(best) > target:
        raise ValueError(f"match_flops: even amount={hi} leaves {flops_of(best):,} FLOPs, above the target "
                         f"{target:,.0f}")
    lo_a, hi_a = 0.0, hi
    for _ in range(steps):
        mid = (lo_a + hi_a) / 2
        cand = prune(mid)
        if flops_of(cand) <= target:
            hi_a, best = mid, cand
        else:
            lo_a = mid
    return hi_a, best
