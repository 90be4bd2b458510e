"""Pruning: removing weights, channels and whole layers from a trained network, and storing what is left.

Chapter 4 teaches these building blocks; the case studies reuse them.

* **Unstructured (magnitude) pruning** — zero the weights of smallest absolute value,
  per layer or with one global threshold (Han et al., 2015, "Learning both Weights and
  Connections for Efficient Neural Networks"): :func:`magnitude_masks`,
  :func:`magnitude_prune`, :func:`fine_tune`, :func:`iterative_prune`,
  :func:`sensitivity_scan`.
* **Structured pruning** — remove whole output channels (filters) with the smallest L1 or
  L2 norm (Li et al., 2017, "Pruning Filters for Efficient ConvNets") and return a *smaller
  dense model*: :func:`channel_norms`, :func:`prune_channels`; remove a whole residual
  block, whose identity path keeps the network connected: :class:`Residual`,
  :func:`residual_mlp`, :func:`remove_layer`, :func:`layer_removal_scan`.
* **Lottery tickets** — rewind the surviving weights to their initial values (Frankle &
  Carbin, 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
  Networks"): :func:`rewind`, :func:`random_reinit`.
* **Storage** — compressed sparse row (CSR) size, and k-means weight sharing with a
  codebook and packed indices (Han et al., 2016, "Deep Compression"): :func:`csr_bytes`,
  :func:`kmeans_1d`, :func:`encode_shared`, :func:`share_weights`, :func:`storage_bytes`.

Why one module: it is the companion of chapter 4 and follows the chapter's order (unstructured,
structured, lottery tickets, storage); each section is short and self-contained.

Conventions used throughout:

* *Prunable layers* are ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d``; only their
  ``weight`` is pruned (biases and normalization parameters are few and kept).
* A *sparsity* is the fraction of weights set to zero, a float in ``[0, 1)``.
* A *mask* is a bool tensor shaped like the weight, ``True`` where the weight is kept.
* Functions that transform a model work on a :func:`copy.deepcopy` and return it: the
  model passed in is never changed, also when an error is raised.  The one exception
  is :func:`apply_masks_` (trailing underscore, PyTorch's convention for in-place),
  which a training loop calls after every optimizer step.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ._checks import (_given, check_choice, check_fraction, check_int, check_model, check_positive, check_tensor,
                      set_submodule)
from .models import Residual, residual_mlp  # noqa: F401  (the models live in nnbook.models; kept importable here)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
# Modules a removed channel passes through unchanged (channel i in -> channel i out).
_CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU,
                nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_NORMS = {"l1": 1, "l2": 2}


# --- input checks ---------------------------------------------------------------------------
def _check_finite_weights(layers: Mapping[str, nn.Module], where: str) -> None:
    """Magnitudes of NaN/Inf weights have no order: refuse them instead of returning an arbitrary mask."""
    for name, m in layers.items():
        if not bool(torch.isfinite(m.weight.detach()).all()):
            raise ValueError(f"{where}: the weight of {name!r} holds NaN or Inf; pruning by magnitude needs finite weights")


def _check_callable(fn, where: str, name: str = "evaluate") -> None:
    if not callable(fn):
        raise TypeError(f"{where}: {name} must be a function of the model, got {_given(fn)}")


def _check_sparsities(values, where: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or isinstance(values, torch.Tensor):
        raise TypeError(f"{where}: sparsities must be a list of numbers in [0, 1), got {_given(values)}")
    return [check_fraction(v, where, "sparsity") for v in values]


def _check_norm(norm, where: str) -> int:
    if norm not in _NORMS:
        raise ValueError(f"{where}: norm must be one of {sorted(_NORMS)}, got {norm!r}")
    return _NORMS[norm]


# --- unstructured magnitude pruning ---------------------------------------------------------
def prunable_layers(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The layers whose weights pruning acts on, by qualified name, in registration order.

    Args:
        model: any module.
        layers: restrict to these names (as in ``model.named_modules()``); all
            ``Linear``/``Conv1d``/``Conv2d`` layers by default.

    Returns:
        ``{name: module}``.

    Raises:
        TypeError: ``model`` is not a module, or a named layer is of a type pruning does
            not support (say a ``BatchNorm2d``).
        ValueError: a name does not exist, or the model has no prunable layer.

    Examples:
        >>> from torch import nn
        >>> list(prunable_layers(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))))
        ['0', '2']
    """
    check_model(model, "prunable_layers")
    found = dict(model.named_modules())
    if layers is None:
        out = {n: m for n, m in found.items() if isinstance(m, PRUNABLE)}
    else:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, set, frozenset, type({}.keys()))):
            raise TypeError(f"prunable_layers: layers must be a list of names, got {_given(layers)}")
        out = {}
        for name in layers:
            if name not in found:
                raise ValueError(f"prunable_layers: the model has no layer {name!r}")
            if not isinstance(found[name], PRUNABLE):
                raise TypeError(f"prunable_layers: layer {name!r} is a {type(found[name]).__name__}; "
                                f"only {', '.join(t.__name__ for t in PRUNABLE)} weights can be pruned")
            out[name] = found[name]
    if not out:
        raise ValueError("prunable_layers: the model has no Linear or Conv layer to prune")
    return out


def _smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask (flat), False at the k smallest scores. Same rule as torch's L1Unstructured."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.flatten(), k, largest=False).indices] = False
    return mask


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global",
                    layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Masks that keep the largest-magnitude weights (Han et al., 2015).

    ``scope="layer"`` zeroes ``round(sparsity * n_l)`` weights of each layer ``l``
    separately; ``scope="global"`` ranks the weights of all the chosen layers together
    and zeroes the ``round(sparsity * sum(n_l))`` smallest, so layers with many small
    weights lose more.  The count is rounded exactly as ``torch.nn.utils.prune``'s
    ``L1Unstructured``, and ``scope="global"`` gives the same mask as
    ``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured)``
    (see :func:`torch_global_masks`).  Weights that are already zero rank lowest, so
    calling this again with a higher sparsity only adds to an earlier mask.

    Args:
        model: the model (not modified).
        sparsity: fraction of the chosen weights to zero, in ``[0, 1)``.
        scope: ``"global"`` or ``"layer"``.
        layers: names of the layers to prune (default: every Linear/Conv layer).

    Returns:
        ``{layer name: bool mask shaped like its weight}``, ``True`` = kept.

    Raises:
        TypeError: bad ``model``/``sparsity`` type, or an unsupported layer named.
        ValueError: ``sparsity`` outside ``[0, 1)``, an unknown ``scope`` or layer name.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Sequential(nn.Linear(4, 1))
        >>> with torch.no_grad():
        ...     _ = layer[0].weight.copy_(torch.tensor([[0.1, -2.0, 0.3, 4.0]]))
        >>> magnitude_masks(layer, 0.5)["0"].tolist()
        [[False, True, False, True]]
    """
    sparsity = check_fraction(sparsity, "magnitude_masks", "sparsity")
    if scope not in ("global", "layer"):
        raise ValueError(f"magnitude_masks: scope must be 'global' or 'layer', got {scope!r}")
    chosen = prunable_layers(model, layers)
    _check_finite_weights(chosen, "magnitude_masks")
    weights = {n: m.weight.detach() for n, m in chosen.items()}
    if scope == "layer":
        return {n: _smallest_k_mask(w.abs(), round(sparsity * w.numel())).view_as(w) for n, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = _smallest_k_mask(flat, round(sparsity * flat.numel()))
    masks, start = {}, 0
    for n, w in weights.items():
        masks[n] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def torch_global_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """The masks PyTorch's own global magnitude pruning chooses, for comparison.

    Runs ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` on a copy
    of ``model`` over every Linear/Conv weight and returns its ``weight_mask`` buffers.

    Returns:
        ``{layer name: bool mask}``, ``True`` = kept.

    Raises:
        TypeError, ValueError: as :func:`magnitude_masks`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> ours, theirs = magnitude_masks(m, 0.6), torch_global_masks(m, 0.6)
        >>> all(torch.equal(ours[n], theirs[n]) for n in ours)
        True
    """
    import torch.nn.utils.prune as tprune

    sparsity = check_fraction(sparsity, "torch_global_masks", "sparsity")
    work = copy.deepcopy(model)
    chosen = prunable_layers(work)
    tprune.global_unstructured([(m, "weight") for m in chosen.values()],
                               pruning_method=tprune.L1Unstructured, amount=sparsity)
    return {n: m.weight_mask.bool() for n, m in chosen.items()}


def _check_masks(model: nn.Module, masks, where: str) -> dict[str, nn.Module]:
    if not isinstance(masks, Mapping):
        raise TypeError(f"{where}: masks must be a dict {{layer name: bool tensor}}, got {type(masks).__name__}")
    chosen = prunable_layers(model, list(masks)) if masks else {}
    for name, mask in masks.items():
        w = chosen[name].weight
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{where}: the mask of {name!r} must be a bool tensor, got {_given(mask)}")
        if mask.shape != w.shape:
            raise ValueError(f"{where}: the mask of {name!r} must have the weight's shape "
                             f"{tuple(w.shape)}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:  # a float mask of 0.5 would silently scale the weights
            if mask.is_floating_point() or mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
                raise TypeError(f"{where}: the mask of {name!r} must be a bool tensor (True = kept), "
                                f"got dtype {mask.dtype}")
    return chosen


def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the masked-out weights **in place** and return ``model``.

    Meant to run after every optimizer step while fine-tuning (``fit(...,
    after_step=lambda m: apply_masks_(m, masks))``), so pruned weights stay zero.
    Masks are moved to each weight's device.

    Raises:
        TypeError, ValueError: ``masks`` is not a dict of bool tensors shaped like the
            weights of prunable layers of ``model``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 1))
        >>> _ = apply_masks_(m, {"0": torch.tensor([[True, False]])})
        >>> m[0].weight[0, 1].item() == 0.0
        True
    """
    chosen = _check_masks(model, masks, "apply_masks_")
    with torch.no_grad():
        for name, mask in masks.items():
            w = chosen[name].weight
            w.mul_(mask.to(device=w.device, dtype=w.dtype))
    return model


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with the masked-out weights set to zero (the model passed in is unchanged).

    The copy is still a dense model: its tensors have the same shapes and bytes, and
    it runs the same dense kernels.  See :func:`storage_bytes` for what a sparse
    format saves.

    Raises:
        TypeError, ValueError: as :func:`apply_masks_`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 1))
        >>> pruned = apply_masks(m, {"0": torch.tensor([[True, False]])})
        >>> pruned[0].weight[0, 1].item() == 0.0, m[0].weight[0, 1].item() != 0.0
        (True, True)
    """
    check_model(model, "apply_masks")
    _check_masks(model, masks, "apply_masks")
    return apply_masks_(copy.deepcopy(model), masks)


def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "global",
                    layers: Sequence[str] | None = None):
    """One-shot magnitude pruning: :func:`magnitude_masks` then :func:`apply_masks`.

    Returns:
        ``(pruned copy, masks)``.

    Raises:
        TypeError, ValueError: as :func:`magnitude_masks`.

    Examples:
        >>> from torch import nn
        >>> from nnbook.measure import sparsity
        >>> pruned, masks = magnitude_prune(nn.Sequential(nn.Linear(10, 10)), 0.7)
        >>> sparsity(pruned)
        0.7
    """
    masks = magnitude_masks(model, sparsity, scope, layers)
    return apply_masks(model, masks), masks


def fine_tune(model: nn.Module, masks: Mapping[str, torch.Tensor] | None, train_loader, *, epochs: int,
              lr: float = 1e-3, cosine: bool = True, device=None, progress: bool = False,
              desc: str | None = None):
    """Train a copy of ``model`` with Adam while keeping the pruned weights at zero.

    After every optimizer step the masks are re-applied (:func:`apply_masks_`), so the
    sparsity pattern never changes.  With ``masks=None`` (or ``{}``) this is ordinary
    training of a copy, e.g. after structured pruning where nothing is masked.

    Args:
        model: the (pruned) model; not modified.
        masks: ``{layer name: bool mask}`` or ``None``.
        train_loader: yields ``(inputs, labels)`` batches.
        epochs: passes over the data, ``>= 1``.
        lr: Adam learning rate (the starting one with ``cosine``).
        cosine: decay the learning rate to zero over the epochs (cosine annealing,
            stepped once per epoch), so a short fine-tuning run ends settled.
        device: where to train (:func:`nnbook.device` by default).
        progress, desc: the training progress bar.

    Returns:
        ``(trained copy on the CPU in eval mode, nnbook.train.History)``.

    Raises:
        TypeError, ValueError: bad model or masks, ``epochs < 1``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> masks = magnitude_masks(m, 0.5)
        >>> tuned, hist = fine_tune(m, masks, [(x, y)], epochs=2, device="cpu")
        >>> int((tuned[0].weight == 0).sum())      # the pruned weights stayed at zero
        4
    """
    from .train import fit
    from .utils import device as _device

    check_model(model, "fine_tune")
    epochs = check_int(epochs, "fine_tune", "epochs", minimum=1)
    lr = check_positive(lr, "fine_tune", "lr")
    masks = dict(masks or {})
    _check_masks(model, masks, "fine_tune")
    dev = device if isinstance(device, torch.device) else _device(device)
    work = copy.deepcopy(model).to(dev)
    dev_masks = {n: m.to(dev) for n, m in masks.items()}
    apply_masks_(work, dev_masks)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if cosine else None
    hist = fit(work, train_loader, epochs=epochs, optimizer=opt, scheduler=sched, device=dev,
               progress=progress, desc=desc,
               after_step=(lambda m: apply_masks_(m, dev_masks)) if dev_masks else None)
    return work.cpu().eval(), hist


def geometric_schedule(final_sparsity: float, steps: int) -> list[float]:
    """Sparsities for iterative pruning that remove the same fraction of the *remaining* weights each step.

    Step ``i`` (1-based) reaches ``1 - (1 - final) ** (i / steps)``: for ``final=0.9375``
    and 4 steps, 0.5, 0.75, 0.875, 0.9375 (half of what is left, each time).  Han et al.
    (2015) found that pruning in several steps with retraining in between reaches higher
    sparsity than pruning once.

    Raises:
        TypeError, ValueError: ``final_sparsity`` not in ``[0, 1)`` or ``steps`` not an int ``>= 1``.

    Examples:
        >>> geometric_schedule(0.9375, 4)
        [0.5, 0.75, 0.875, 0.9375]
    """
    final = check_fraction(final_sparsity, "geometric_schedule", "final_sparsity")
    steps = check_int(steps, "geometric_schedule", "steps", minimum=1)
    return [1.0 - (1.0 - final) ** (i / steps) for i in range(1, steps + 1)]


@dataclass
class PruneStep:
    """One step of :func:`iterative_prune`.

    Attributes:
        sparsity: fraction of zero weights in the pruned layers after the step (measured).
        score: ``evaluate(model)`` after fine-tuning (e.g. test accuracy), or ``None``.
        model: the fine-tuned pruned model (CPU, eval mode).
        masks: the masks it was trained with.
    """

    sparsity: float
    score: float | None
    model: nn.Module
    masks: dict


def iterative_prune(model: nn.Module, train_loader, sparsities: Sequence[float], *, epochs_per_step: int,
                    scope: str = "global", lr: float = 1e-3, cosine: bool = True,
                    evaluate: Callable[[nn.Module], float] | None = None,
                    layers: Sequence[str] | None = None, device=None) -> list[PruneStep]:
    """Iterative magnitude pruning: prune to each sparsity in turn, fine-tuning after each step.

    The loop of Han et al. (2015): ``for s in sparsities: masks = magnitude_masks(current, s);
    current = fine_tune(apply_masks(current, masks))``.  Because already-zero weights rank
    lowest, each mask contains the previous one.

    Args:
        model: the trained dense model (not modified).
        train_loader: data for fine-tuning.
        sparsities: increasing targets in ``[0, 1)``, e.g. from :func:`geometric_schedule`.
        epochs_per_step: fine-tuning epochs after each pruning step (``>= 1``).
        scope: ``"global"`` or ``"layer"`` (see :func:`magnitude_masks`).
        lr: Adam learning rate for fine-tuning.
        cosine: decay the learning rate within each fine-tuning step (see :func:`fine_tune`).
        evaluate: ``evaluate(model) -> float`` recorded after each step.
        layers: which layers to prune (default: all Linear/Conv layers).
        device: where to fine-tune.

    Returns:
        One :class:`PruneStep` per sparsity.

    Raises:
        TypeError, ValueError: a bad model or sparsity, sparsities not increasing, an
            unknown scope.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
        >>> steps = iterative_prune(nn.Sequential(nn.Linear(4, 2)), [(x, y)], [0.5, 0.75], epochs_per_step=1)
        >>> [s.sparsity for s in steps]
        [0.5, 0.75]
    """
    check_model(model, "iterative_prune")
    targets = _check_sparsities(sparsities, "iterative_prune")
    check_int(epochs_per_step, "iterative_prune", "epochs_per_step", minimum=1)
    check_positive(lr, "iterative_prune", "lr")
    if evaluate is not None:
        _check_callable(evaluate, "iterative_prune")
    if not targets or any(b <= a for a, b in zip(targets, targets[1:])):
        raise ValueError(f"iterative_prune: sparsities must be a non-empty increasing sequence, got {list(sparsities)}")
    if scope not in ("global", "layer"):
        raise ValueError(f"iterative_prune: scope must be 'global' or 'layer', got {scope!r}")
    current, steps = model, []
    for s in targets:
        masks = magnitude_masks(current, s, scope, layers)
        current, _ = fine_tune(apply_masks(current, masks), masks, train_loader, epochs=epochs_per_step,
                               lr=lr, cosine=cosine, device=device, progress=False)
        chosen = prunable_layers(current, list(masks))
        zeros = sum(int((m.weight == 0).sum()) for m in chosen.values())
        total = sum(m.weight.numel() for m in chosen.values())
        score = evaluate(current) if evaluate is not None else None
        steps.append(PruneStep(zeros / total, score, current, masks))
    return steps


def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float], sparsities: Sequence[float],
                     kind: str = "weights", norm: str = "l1",
                     layers: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Prune one layer at a time, without retraining, and record the score (Han et al., 2015; Li et al., 2017).

    A layer whose score falls quickly is *sensitive* and should be pruned less.

    Args:
        model: the trained model (not modified).
        evaluate: ``evaluate(model) -> float``, e.g. test accuracy.
        sparsities: fractions in ``[0, 1)`` to try for each layer.
        kind: ``"weights"`` (magnitude pruning of that layer's weights) or
            ``"channels"`` (remove that fraction of its output channels with
            :func:`prune_channels`; not possible for the output layer, which is skipped).
        norm: channel ranking for ``kind="channels"``: ``"l1"`` or ``"l2"``.
        layers: which layers (default: every Linear/Conv layer).

    Returns:
        ``{layer name: [score at each sparsity]}``.

    Raises:
        TypeError, ValueError: bad model, sparsity, kind or layer name.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> scores = sensitivity_scan(m, lambda pruned: float((pruned[0].weight != 0).sum()), [0.0, 0.5])
        >>> scores["0"], scores["2"]            # weights left in layer 0 when each layer is pruned
        ([32.0, 16.0], [32.0, 32.0])
    """
    _check_callable(evaluate, "sensitivity_scan")
    fracs = _check_sparsities(sparsities, "sensitivity_scan")
    if kind not in ("weights", "channels"):
        raise ValueError(f"sensitivity_scan: kind must be 'weights' or 'channels', got {kind!r}")
    chosen = prunable_layers(model, layers)
    if kind == "channels":
        _check_norm(norm, "sensitivity_scan")
        last = _last_prunable(model)
        chosen = {n: m for n, m in chosen.items() if n != last}
    result = {}
    for name in chosen:
        scores = []
        for s in fracs:
            if kind == "weights":
                pruned, _ = magnitude_prune(model, s, "layer", [name])
            else:
                pruned = prune_channels(model, {name: s}, norm)
            scores.append(float(evaluate(pruned)))
        result[name] = scores
    return result


# --- structured pruning: channels ----------------------------------------------------------
def channel_norms(layer: nn.Module, norm: str = "l1") -> torch.Tensor:
    """L1 or L2 norm of each output channel's weights (a filter of a conv, a row of a linear layer).

    Li et al. (2017) rank filters by this L1 norm and remove the smallest.

    Args:
        layer: an ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d``.
        norm: ``"l1"`` or ``"l2"``.

    Returns:
        float tensor of shape ``(out_channels,)``.

    Raises:
        TypeError: an unsupported layer type.
        ValueError: an unknown norm.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
        >>> channel_norms(layer, "l1").tolist(), channel_norms(layer, "l2").tolist()
        ([3.0, 7.0], [2.2360680103302, 5.0])
    """
    if not isinstance(layer, PRUNABLE):
        raise TypeError(f"channel_norms: expected one of {', '.join(t.__name__ for t in PRUNABLE)}, "
                        f"got {type(layer).__name__}")
    p = _check_norm(norm, "channel_norms")
    return layer.weight.detach().flatten(1).norm(p=p, dim=1)


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf modules of a model in the order its forward pass runs them, for a model that is a chain.

    An ``nn.Sequential`` (nested ones flattened) is its own declaration of order.  Any
    other model is traced symbolically with ``torch.fx``: its forward pass must be a
    plain chain, each module applied to the output of the previous one (as in
    :class:`nnbook.models.DigitsCNN`, ``classifier(features(x))``).  Nothing here knows
    a model class by name.

    Raises:
        TypeError: the forward order cannot be determined, or the model is not a chain.
    """
    def leaves(prefix, seq):
        out = []
        for name, m in seq.named_children():
            full = f"{prefix}.{name}" if prefix else name
            out += leaves(full, m) if isinstance(m, nn.Sequential) else [(full, m)]
        return out

    if isinstance(model, nn.Sequential):
        return leaves("", model)
    import torch.fx

    why = ""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # data-dependent control flow, no forward, ...
        graph, why = None, f"tracing it failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    chain, previous = [], None
    if graph is not None:
        for node in graph.nodes:
            if node.op == "placeholder":
                if previous is not None:
                    why = "its forward takes more than one input"
                    break
                previous = node
            elif node.op == "call_module" and list(node.args) == [previous] and not node.kwargs:
                chain.append((node.target, model.get_submodule(node.target)))
                previous = node
            elif node.op == "output" and node.args == (previous,):
                break
            else:
                why = f"its forward is not a plain chain of modules (at {node.op} {node.target})"
                break
    if why or not chain:
        raise TypeError(f"prune_channels: the forward order of {type(model).__name__} is unknown: {why or 'no module'}. "
                        f"Supported: nn.Sequential stacks and models whose forward applies modules one after "
                        f"another")
    return chain


def _last_prunable(model: nn.Module) -> str:
    names = [n for n, m in _chain(model) if isinstance(m, PRUNABLE)]
    if not names:
        raise ValueError("prune_channels: the model has no Linear or Conv layer")
    return names[-1]


def _slice_layer(layer: nn.Module, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None):
    """A new Linear/Conv layer holding only the chosen output rows and input columns."""
    w = layer.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    if isinstance(layer, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None)
    else:
        new = type(layer)(w.shape[1], w.shape[0], layer.kernel_size, stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation, groups=1, bias=layer.bias is not None,
                          padding_mode=layer.padding_mode)
    new = new.to(device=w.device, dtype=w.dtype).train(layer.training)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            b = layer.bias.detach()
            new.bias.copy_(b[out_idx] if out_idx is not None else b)
    return new


def _slice_batchnorm(bn: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = type(bn)(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats).to(idx.device).train(bn.training)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight.detach()[idx])
            new.bias.copy_(bn.bias.detach()[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def prune_channels(model: nn.Module, amount, norm: str = "l1") -> nn.Module:
    """Remove the output channels of smallest norm and return a smaller *dense* model.

    For each pruned layer the channels with the largest :func:`channel_norms` are kept
    (in their original order); the weights, bias and following BatchNorm lose the other
    channels, and the next Linear/Conv layer loses the matching input channels (for a
    ``Flatten`` between a conv and a linear layer, the block of features each channel
    contributes).  Layers are pruned first to last, each ranked after its inputs were
    shrunk (the "greedy" strategy of Li et al., 2017).  Unlike a mask, this changes the
    tensor shapes, so the model really has fewer parameters, bytes and FLOPs.

    Supported models: ``nn.Sequential`` stacks (nested ones too) of Linear, Conv1d/2d
    (``groups=1``), BatchNorm, element-wise activations, dropout, pooling and Flatten;
    and :class:`nnbook.models.DigitsCNN`.

    Args:
        model: the trained model (not modified).
        amount: fraction in ``[0, 1)`` of the output channels to remove from every
            Linear/Conv layer except the last (whose outputs are the model's outputs),
            or ``{layer name: fraction}`` for chosen layers.
        norm: ``"l1"`` or ``"l2"``.

    Returns:
        A new, smaller model of the same class.

    Raises:
        TypeError: an unsupported model, layer type (grouped conv, a layer the removal
            cannot pass through) or ``amount`` type.
        ValueError: a fraction outside ``[0, 1)``, an unknown layer, the output layer
            named, a fraction that would keep 0 channels, an invalid norm.

    Examples:
        >>> from torch import nn
        >>> from nnbook.models import DigitsCNN
        >>> small = prune_channels(DigitsCNN((8, 16, 16)), 0.5)
        >>> [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)], small.classifier.in_features
        ([4, 8, 8], 8)
    """
    p = _check_norm(norm, "prune_channels")
    check_model(model, "prune_channels")
    chain = _chain(model)
    prunable = [n for n, m in chain if isinstance(m, PRUNABLE)]
    if not prunable:
        raise ValueError("prune_channels: the model has no Linear or Conv layer")
    if isinstance(amount, Mapping):
        amounts = {n: check_fraction(a, "prune_channels", f"amount for {n!r}") for n, a in amount.items()}
    else:
        a = check_fraction(amount, "prune_channels", "amount")
        amounts = {n: a for n in prunable[:-1]}
    for name in amounts:
        if name not in prunable:
            raise ValueError(f"prune_channels: {name!r} is not a Linear/Conv layer of the model; "
                             f"choose from {prunable}")
        if name == prunable[-1]:
            raise ValueError(f"prune_channels: {name!r} is the output layer; its outputs are the model's outputs")
    for name, m in chain:
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups != 1:
            raise TypeError(f"prune_channels: {name!r} is a grouped convolution (groups={m.groups}), not supported")
    for name, a in amounts.items():
        n_out = dict(chain)[name].weight.shape[0]
        if n_out - round(a * n_out) < 1:
            raise ValueError(f"prune_channels: removing {a:.0%} of {name!r}'s {n_out} channels would keep 0 channels")
    _check_finite_weights({n: dict(chain)[n] for n in amounts}, "prune_channels")

    work = copy.deepcopy(model)
    for i, (name, _) in enumerate(chain):
        if name not in amounts:
            continue
        layer = work.get_submodule(name)
        n_out = layer.weight.shape[0]
        scores = layer.weight.detach().flatten(1).norm(p=p, dim=1)
        keep = torch.topk(scores, n_out - round(amounts[name] * n_out)).indices.sort().values
        set_submodule(work, name, _slice_layer(layer, out_idx=keep), "prune_channels")
        _propagate(work, chain[i + 1:], keep, n_out, name)
    return work


def _propagate(work: nn.Module, rest, keep: torch.Tensor, n_out: int, source: str) -> None:
    """Shrink what follows a pruned layer: BatchNorms, then the next Linear/Conv's inputs."""
    for name, m in rest:
        m = work.get_submodule(name)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            set_submodule(work, name, _slice_batchnorm(m, keep), "prune_channels")
        elif isinstance(m, nn.Flatten) or isinstance(m, _CHANNELWISE):
            continue
        elif isinstance(m, PRUNABLE):
            n_in = m.weight.shape[1]
            if n_in % n_out:
                raise TypeError(f"prune_channels: {name!r} has {n_in} inputs, not a multiple of "
                                f"{source!r}'s {n_out} channels")
            block = n_in // n_out  # features per channel after a Flatten (1 without one)
            idx = (keep[:, None] * block + torch.arange(block, device=keep.device)).flatten()
            set_submodule(work, name, _slice_layer(m, in_idx=idx), "prune_channels")
            return
        else:
            raise TypeError(f"prune_channels: cannot remove channels of {source!r} through {name!r} "
                            f"({type(m).__name__}); supported in between: BatchNorm, activations, "
                            f"dropout, pooling, Flatten")
    raise ValueError(f"prune_channels: no Linear/Conv layer follows {source!r} to shrink")


# --- structured pruning: whole layers --------------------------------------------------------
def remove_layer(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model`` with the :class:`Residual` block ``name`` replaced by ``nn.Identity``.

    Only a block with an identity path can be removed: the identity carries the
    signal on, with the same shape.  Any other layer (a Linear, a Conv, a BatchNorm)
    has no such path, and taking it out would leave the next layer with a different
    input, or none.

    Args:
        model: the model (not modified).
        name: the block's qualified name, as in ``model.named_modules()``.

    Returns:
        The shallower copy.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: no module of that name, or it is not a :class:`Residual` block.

    Examples:
        >>> from nnbook.models import residual_mlp
        >>> type(remove_layer(residual_mlp(64, 16, blocks=2), "3")[3]).__name__
        'Identity'
    """
    check_model(model, "remove_layer")
    found = dict(model.named_modules())
    if not isinstance(name, str) or name not in found or name == "":
        raise ValueError(f"remove_layer: the model has no sub-module {name!r}")
    if not isinstance(found[name], Residual):
        raise ValueError(f"remove_layer: {name!r} is a {type(found[name]).__name__} with no identity path "
                         "around it; removing it would disconnect the network. Only Residual blocks "
                         "(y = x + f(x)) can be removed")
    work = copy.deepcopy(model)
    set_submodule(work, name, nn.Identity(), "remove_layer")
    return work


def layer_removal_scan(model: nn.Module, evaluate: Callable[[nn.Module], float]) -> dict[str, float]:
    """Remove each :class:`Residual` block in turn (no retraining) and record ``evaluate``.

    Returns:
        ``{block name: score without that block}``.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: the model has no Residual block.

    Examples:
        >>> from nnbook.models import residual_mlp
        >>> from nnbook.measure import count_params
        >>> layer_removal_scan(residual_mlp(64, 16, blocks=2), count_params)
        {'3': 1754.0, '4': 1754.0}
    """
    check_model(model, "layer_removal_scan")
    _check_callable(evaluate, "layer_removal_scan")
    names = [n for n, m in model.named_modules() if isinstance(m, Residual)]
    if not names:
        raise ValueError("layer_removal_scan: the model has no Residual block to remove")
    return {n: float(evaluate(remove_layer(model, n))) for n in names}


# --- lottery tickets -------------------------------------------------------------------------
def rewind(model: nn.Module, init_state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The lottery ticket: a copy of ``model`` reset to its initial weights, with the mask applied.

    Frankle & Carbin (2019) train a network, prune it by magnitude, then reset the
    surviving weights to the values they had *before* training ("rewinding") and
    train again with the mask fixed.

    Args:
        model: any model of the right architecture (the trained one, say); not modified.
        init_state: its ``state_dict()`` saved right after initialization.
        masks: from :func:`magnitude_masks` on the trained model.

    Raises:
        TypeError, ValueError: bad masks, or ``init_state`` does not fit the model.

    Examples:
        >>> import copy, torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> init = copy.deepcopy(m.state_dict())
        >>> with torch.no_grad():
        ...     _ = m[0].weight.add_(1.0)                         # "training"
        >>> ticket = rewind(m, init, magnitude_masks(m, 0.5))
        >>> bool(((ticket[0].weight == 0) | (ticket[0].weight == init["0.weight"])).all())
        True
    """
    check_model(model, "rewind")
    if not isinstance(init_state, Mapping):
        raise TypeError(f"rewind: init_state must be a state dict, got {type(init_state).__name__}")
    _check_masks(model, masks, "rewind")
    work = copy.deepcopy(model)
    try:
        work.load_state_dict(init_state)
    except RuntimeError as exc:
        raise ValueError(f"rewind: init_state does not fit the model: {exc}") from None
    return apply_masks_(work, masks)


def random_reinit(model: nn.Module, masks: Mapping[str, torch.Tensor], seed: int) -> nn.Module:
    """The control of the lottery-ticket experiment: same mask, fresh random weights.

    Every sub-module with a ``reset_parameters`` method is re-initialized with PyTorch's
    default initialization, drawn from ``torch.manual_seed(seed)`` inside
    :func:`torch.random.fork_rng` (the caller's random stream is not changed).

    Raises:
        TypeError, ValueError: bad model, masks or seed.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> masks = magnitude_masks(m, 0.5)
        >>> int((random_reinit(m, masks, seed=1)[0].weight == 0).sum())
        4
    """
    check_model(model, "random_reinit")
    _check_masks(model, masks, "random_reinit")
    seed = check_int(seed, "random_reinit", "seed", minimum=0)
    work = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in work.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return apply_masks_(work, masks)


# --- storage: CSR and weight sharing ---------------------------------------------------------
def _index_bytes(max_value: int) -> int:
    """Bytes of the smallest unsigned integer type (8, 16, 32 or 64 bit) that holds ``max_value``."""
    for nbytes in (1, 2, 4):
        if max_value < 2 ** (8 * nbytes):
            return nbytes
    return 8


@dataclass(frozen=True)
class CSRSize:
    """Bytes of a matrix in compressed sparse row format (all in bytes).

    Attributes:
        values: ``nnz × value_bits / 8`` (float32 by default: 4 bytes each).
        col_indices: ``nnz × index bytes``.
        row_pointers: ``(rows + 1) × pointer bytes``.
        index_bytes, pointer_bytes: bytes per column index / row pointer.
    """

    values: int
    col_indices: int
    row_pointers: int
    index_bytes: int
    pointer_bytes: int

    @property
    def total(self) -> int:
        return self.values + self.col_indices + self.row_pointers


def csr_bytes(weight: torch.Tensor, value_bits: int = 32, index_bytes: int | None = None) -> CSRSize:
    """Size of a weight in compressed sparse row (CSR) format.

    CSR stores the nonzero values row by row, the column index of each, and one
    pointer per row to where the row starts (plus one at the end).  A conv weight
    ``(out, in, k, k)`` is treated as the matrix ``(out, in·k·k)``.  By default column
    indices and row pointers use the smallest unsigned integer type that holds the
    largest value (uint8/uint16/uint32, as a storage format would); pass
    ``index_bytes=8`` to count like PyTorch's ``to_sparse_csr()``, which uses int64.

    Args:
        weight: a tensor with at least one dimension (zeros = pruned).
        value_bits: bits per stored value (32 for float32; fewer for shared indices).
        index_bytes: bytes per column index and row pointer, or ``None`` for the smallest.

    Returns:
        A :class:`CSRSize`.

    Raises:
        TypeError: ``weight`` is not a tensor.
        ValueError: an empty or 0-d tensor, or bad sizes.

    Examples:
        >>> import torch
        >>> size = csr_bytes(torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0]]))
        >>> size.values, size.col_indices, size.row_pointers, size.total   # 2 float32, 2 uint8 indices, 3 uint8 pointers
        (8, 2, 3, 13)
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"csr_bytes: expected a tensor, got {type(weight).__name__}")
    if weight.dim() == 0 or weight.numel() == 0:
        raise ValueError("csr_bytes: need a non-empty tensor with at least one dimension, "
                         f"got shape {tuple(weight.shape)}")
    value_bits = check_int(value_bits, "csr_bytes", "value_bits", minimum=1)
    if index_bytes not in (None, 1, 2, 4, 8):
        raise ValueError(f"csr_bytes: index_bytes must be None, 1, 2, 4 or 8, got {index_bytes!r}")
    mat = weight.detach().reshape(weight.shape[0], -1)
    rows, cols = mat.shape
    nnz = int((mat != 0).sum())
    col_b = index_bytes or _index_bytes(cols - 1)
    ptr_b = index_bytes or _index_bytes(nnz)
    return CSRSize(values=math.ceil(nnz * value_bits / 8), col_indices=nnz * col_b,
                   row_pointers=(rows + 1) * ptr_b, index_bytes=col_b, pointer_bytes=ptr_b)


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster scalars into ``k`` groups (Lloyd's algorithm), as Deep Compression does per layer.

    Centroids start spread linearly between the smallest and largest value, the
    initialization Han et al. (2016) found best (it keeps a few large weights, which
    matter most, as their own clusters).  Deterministic.

    Args:
        values: any-shaped float tensor, flattened.
        k: number of clusters, an int ``>= 1``.
        iters: Lloyd iterations (stops early when assignments stop changing).

    Returns:
        ``(centroids float32 (k,), labels int64 shaped like values.flatten())``.

    Raises:
        TypeError: ``values`` is not a tensor.
        ValueError: empty ``values``, ``k < 1`` or ``iters < 1``.

    Examples:
        >>> import torch
        >>> centroids, labels = kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.1]), k=2)
        >>> [round(c, 2) for c in centroids.tolist()], labels.tolist()
        ([0.05, 1.05], [0, 0, 1, 1])
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"kmeans_1d: expected a tensor, got {type(values).__name__}")
    if values.numel() == 0:
        raise ValueError("kmeans_1d: values is empty")
    k = check_int(k, "kmeans_1d", "k", minimum=1)
    iters = check_int(iters, "kmeans_1d", "iters", minimum=1)
    x = values.detach().flatten().float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("kmeans_1d: values must hold only finite values, got NaN or Inf")
    centroids = torch.linspace(float(x.min()), float(x.max()), k, device=x.device)
    labels = None
    for _ in range(iters):
        new = (x[:, None] - centroids[None, :]).abs().argmin(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros(k, device=x.device).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).float()
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # empty: keep
    return centroids, labels


def pack_indices(labels: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integers in ``[0, 2**bits)`` into bytes, ``bits`` each (little-endian bit order).

    Returns:
        uint8 tensor of ``ceil(n * bits / 8)`` bytes.

    Raises:
        ValueError: ``bits`` not in 1..16, or a label out of range.

    Examples:
        >>> import torch
        >>> packed = pack_indices(torch.tensor([1, 2, 3, 0, 1]), bits=2)
        >>> packed.numel(), unpack_indices(packed, 2, 5).tolist()
        (2, [1, 2, 3, 0, 1])
    """
    bits = check_int(bits, "pack_indices", "bits", minimum=1, maximum=16)
    check_tensor(labels, "pack_indices", "labels", nonempty=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"pack_indices: labels must be an integer tensor, got dtype {labels.dtype}")
    lab = labels.detach().flatten().long().cpu()
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= 2 ** bits):
        raise ValueError(f"pack_indices: labels must be in [0, {2 ** bits}), got [{int(lab.min())}, {int(lab.max())}]")
    bit_planes = (lab[:, None] >> torch.arange(bits)) & 1          # (n, bits), least significant first
    flat = bit_planes.flatten()
    flat = torch.cat([flat, flat.new_zeros((-len(flat)) % 8)])
    return (flat.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_indices(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_indices`: the first ``n`` integers, int64.

    Raises:
        ValueError: ``bits`` not in 1..16, or ``packed`` too short for ``n`` values.

    Examples:
        >>> import torch
        >>> unpack_indices(pack_indices(torch.tensor([5, 0, 7]), 3), 3, 3).tolist()
        [5, 0, 7]
    """
    bits = check_int(bits, "unpack_indices", "bits", minimum=1, maximum=16)
    n = check_int(n, "unpack_indices", "n", minimum=0)
    check_tensor(packed, "unpack_indices", "packed", nonempty=False)
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_indices: packed must be a uint8 tensor, got dtype {packed.dtype}")
    if packed.numel() * 8 < n * bits:
        raise ValueError(f"unpack_indices: {packed.numel()} bytes cannot hold {n} values of {bits} bits")
    flat = ((packed.long()[:, None] >> torch.arange(8)) & 1).flatten()[: n * bits]
    return (flat.view(n, bits) << torch.arange(bits)).sum(1)


@dataclass
class SharedTensor:
    """A weight stored as a codebook plus packed indices (Han et al., 2016).

    Attributes:
        codebook: float32 ``(k,)``, the shared values.
        packed: uint8, the index of each weight's value, ``bits`` bits each.
        bits: ``ceil(log2 k)`` (at least 1).
        shape: the weight's shape.
        zero_is_free: ``True`` when pruned weights (zeros) are kept out of the
            codebook and stored elsewhere (e.g. CSR); then ``packed`` only holds the
            nonzero weights, in row-major order.
        mask: the nonzero positions (only when ``zero_is_free``).
    """

    codebook: torch.Tensor
    packed: torch.Tensor
    bits: int
    shape: tuple
    zero_is_free: bool = False
    mask: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        """Codebook (4 bytes per float32 entry) plus packed indices, in bytes.

        With ``zero_is_free`` the positions of the nonzeros are *not* included: add
        the column indices and row pointers of :func:`csr_bytes`.
        """
        return self.codebook.numel() * 4 + self.packed.numel()

    def decode(self) -> torch.Tensor:
        """The float32 weight this stands for."""
        n = int(self.mask.sum()) if self.zero_is_free else math.prod(self.shape)
        vals = self.codebook[unpack_indices(self.packed, self.bits, n)]
        if not self.zero_is_free:
            return vals.view(self.shape)
        out = torch.zeros(self.shape, dtype=torch.float32)
        out[self.mask] = vals
        return out


def encode_shared(weight: torch.Tensor, k: int, skip_zeros: bool = False, iters: int = 30) -> SharedTensor:
    """Encode a weight with k-means weight sharing: ``k`` float32 values and ``ceil(log2 k)``-bit indices.

    Args:
        weight: float tensor.
        k: codebook size (16 gives 4-bit indices), ``>= 1``.
        skip_zeros: cluster only the nonzero weights and keep zeros exact (the pruned →
            shared pipeline of Deep Compression).
        iters: k-means iterations.

    Raises:
        TypeError, ValueError: as :func:`kmeans_1d`; ``skip_zeros`` with no nonzero weight.

    Examples:
        >>> import torch
        >>> code = encode_shared(torch.tensor([0.0, 0.1, 1.0, 1.1]), k=2)
        >>> code.bits, code.nbytes, [round(v, 2) for v in code.decode().tolist()]
        (1, 9, [0.05, 0.05, 1.05, 1.05])
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"encode_shared: expected a tensor, got {type(weight).__name__}")
    w = weight.detach().float().cpu()
    mask = (w != 0) if skip_zeros else None
    vals = w[mask] if skip_zeros else w.flatten()
    if vals.numel() == 0:
        raise ValueError("encode_shared: the weight has no nonzero entry to cluster")
    centroids, labels = kmeans_1d(vals, k, iters)
    bits = max(1, math.ceil(math.log2(k)))
    return SharedTensor(centroids, pack_indices(labels, bits), bits, tuple(w.shape), skip_zeros, mask)


def share_weights(model: nn.Module, k: int, skip_zeros: bool = True,
                  layers: Sequence[str] | None = None) -> tuple[nn.Module, dict[str, SharedTensor]]:
    """k-means weight sharing of every prunable layer (Han et al., 2016, "Deep Compression").

    Each layer's weights are clustered separately into ``k`` values; each weight is
    replaced by its cluster's centroid.  Han et al. then fine-tune the centroids; this
    function does not (the chapter shows that 16 clusters need no fine-tuning here).

    Args:
        model: the model (not modified).
        k: clusters per layer (16 → 4-bit indices).
        skip_zeros: leave pruned (zero) weights at zero and out of the clustering.
        layers: which layers (default: every Linear/Conv layer).

    Returns:
        ``(copy with shared weights, {layer name: SharedTensor})``.

    Raises:
        TypeError, ValueError: bad model, ``k`` or layer names.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> shared, codes = share_weights(nn.Sequential(nn.Linear(16, 16)), k=4, skip_zeros=False)
        >>> torch.unique(shared[0].weight).numel() <= 4, codes["0"].bits
        (True, 2)
    """
    check_model(model, "share_weights")
    chosen = prunable_layers(model, layers)
    work = copy.deepcopy(model)
    codes = {}
    for name in chosen:
        layer = work.get_submodule(name)
        codes[name] = encode_shared(layer.weight, k, skip_zeros)
        with torch.no_grad():
            layer.weight.copy_(codes[name].decode().to(layer.weight))
    return work, codes


def storage_bytes(model: nn.Module, fmt: str = "dense") -> int:
    """Bytes needed to store a model's tensors in a given format (raw tensor bytes, no file overhead).

    The weights of Linear/Conv layers are stored in the chosen format; every other tensor
    (biases, BatchNorm parameters and statistics) densely at its own dtype.

    * ``"dense"``: every tensor as is (float32: 4 bytes per weight, zeros included).
    * ``"csr"``: weights in CSR, float32 values (:func:`csr_bytes`).
    * ``"shared"``: weights as a float32 codebook of the layer's distinct values plus
      packed ``ceil(log2 k)``-bit indices, for a model from :func:`share_weights` with
      ``skip_zeros=False``.
    * ``"csr+shared"``: CSR whose values are ``ceil(log2 k)``-bit codebook indices plus
      the codebook of the distinct nonzero values (prune, then share).

    For the size of an actual checkpoint file use :func:`nnbook.measure.model_size_bytes`.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: an unknown format, or a shared format for a layer with more than
            256 distinct values (its weights are not shared).

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(100, 10))
        >>> storage_bytes(m)                                   # 1010 float32 values
        4040
        >>> pruned, _ = magnitude_prune(m, 0.9)
        >>> storage_bytes(pruned, "csr")   # 100 values * 4 + 100 uint8 indices + 11 uint8 pointers + 40 bias
        551
    """
    check_model(model, "storage_bytes")
    if fmt not in ("dense", "csr", "shared", "csr+shared"):
        raise ValueError(f"storage_bytes: fmt must be 'dense', 'csr', 'shared' or 'csr+shared', got {fmt!r}")
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    total = 0
    for key, t in model.state_dict().items():
        if key not in weights or fmt == "dense":
            total += t.numel() * t.element_size()
            continue
        if fmt == "csr":
            total += csr_bytes(t).total
            continue
        distinct = torch.unique(t[t != 0] if fmt == "csr+shared" else t).numel()
        if distinct > 256:
            raise ValueError(f"storage_bytes: {key} has {distinct} distinct values, more than 8-bit indices "
                             f"can address; it is not weight-shared (use share_weights first)")
        bits = max(1, math.ceil(math.log2(max(distinct, 1))))
        if fmt == "shared":
            total += distinct * 4 + math.ceil(t.numel() * bits / 8)
        else:
            total += distinct * 4 + csr_bytes(t, value_bits=bits).total
    return total
