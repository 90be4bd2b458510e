"""Early exit: a network with side classifiers that stops at the first confident one.

BranchyNet (Teerapittayanon, McDanel & Kung, 2016, "BranchyNet: Fast Inference via Early
Exiting from Deep Neural Networks") adds an *exit* (a small classifier) after some of a
network's blocks, trains all exits jointly with a weighted sum of their losses, and at
inference stops at the first exit whose prediction is confident enough.  Easy inputs
leave early and cost little; hard ones run the whole network.

Confidence criteria (both thresholds live in ``[0, 1]``):

* ``"maxprob"``: exit when the largest softmax probability is ``>= threshold``;
* ``"entropy"``: exit when the softmax entropy divided by ``log(n_classes)`` (so it lies in
  ``[0, 1]``) is ``<= threshold`` (BranchyNet's criterion).

The last exit always answers, whatever its confidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_float, check_int, check_labels, check_model, check_tensor
from ..measure import flops as _flops

CRITERIA = ("maxprob", "entropy")


class MultiExitNet(nn.Module):
    """A chain of blocks with one exit (classifier head) after each block.

    ``forward`` runs every block and returns the logits of every exit (what joint training
    needs); :func:`early_exit_predict` and :func:`route_batch` run only as far as needed.

    Args:
        blocks: the trunk, run in order; block ``i`` feeds block ``i + 1``.
        exits: one head per block mapping its output to logits ``(batch, n_classes)``.

    Raises:
        TypeError: a block or exit is not an ``nn.Module``.
        ValueError: the two lists differ in length or are empty.
    """

    def __init__(self, blocks: Sequence[nn.Module], exits: Sequence[nn.Module]):
        super().__init__()
        blocks, exits = list(blocks), list(exits)
        for m in blocks + exits:
            check_model(m, "MultiExitNet", "each block and exit")
        if not blocks or len(blocks) != len(exits):
            raise ValueError(f"MultiExitNet: need one exit per block and at least one block, "
                             f"got {len(blocks)} blocks and {len(exits)} exits")
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(exits)

    @property
    def n_exits(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, a list of ``n_exits`` tensors ``(batch, n_classes)``."""
        out = []
        for block, head in zip(self.blocks, self.exits):
            x = block(x)
            out.append(head(x))
        return out

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """The plain network: all blocks, then only the last exit (no side classifiers run)."""
        for block in self.blocks:
            x = block(x)
        return self.exits[-1](x)


def multi_exit_mlp(in_features: int = 64, widths: Sequence[Sequence[int]] = ((32,), (256, 256), (256, 256)),
                   n_classes: int = 10) -> MultiExitNet:
    """A multi-exit MLP: block ``i`` is a stack of ``Linear + ReLU`` layers of the given widths.

    The input is flattened first (digits images ``(N, 1, 8, 8)`` become ``(N, 64)``). The
    default makes the first block cheap and the later ones expensive, so an early exit
    saves most of the compute.

    Args:
        in_features: input size after flattening.
        widths: one tuple of layer widths per block.
        n_classes: outputs of every exit (each exit is one ``Linear``).

    Raises:
        TypeError, ValueError: a size is not an int ``>= 1``, or a block has no layer.

    Examples:
        >>> net = multi_exit_mlp(64, ((8,), (16,)), 10)
        >>> [tuple(z.shape) for z in net(torch.zeros(3, 1, 8, 8))]
        [(3, 10), (3, 10)]
    """
    where = "multi_exit_mlp"
    prev = check_int(in_features, where, "in_features", minimum=1)
    n_classes = check_int(n_classes, where, "n_classes", minimum=1)
    blocks, exits = [], []
    for i, ws in enumerate(widths):
        if len(ws) == 0:
            raise ValueError(f"{where}: block {i} has no layer (give at least one width)")
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        for w in ws:
            w = check_int(w, where, "each width", minimum=1)
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        blocks.append(nn.Sequential(*layers))
        exits.append(nn.Linear(prev, n_classes))
    return MultiExitNet(blocks, exits)


def joint_exit_loss(logits: Sequence[torch.Tensor], y: torch.Tensor,
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """BranchyNet's joint loss: ``sum_i w_i * cross_entropy(logits_i, y)`` (equal weights by default).

    Raises:
        ValueError: ``weights`` has another length than ``logits``, or a weight is negative.
    """
    weights = [1.0] * len(logits) if weights is None else list(weights)
    if len(weights) != len(logits):
        raise ValueError(f"joint_exit_loss: need one weight per exit ({len(logits)}), got {len(weights)}")
    if any(w < 0 for w in weights):
        raise ValueError(f"joint_exit_loss: weights must be >= 0, got {weights}")
    return sum(w * F.cross_entropy(z, y) for w, z in zip(weights, logits))


def multi_exit_step(weights: Sequence[float] | None = None):
    """A ``step`` for :func:`nnbook.train.fit` that trains all exits jointly.

    Returns ``step(model, (x, y)) -> (joint loss, logits of the last exit, y)``, so the
    accuracy :func:`~nnbook.train.fit` reports is the full network's.
    """
    def step(model, batch):
        x, y = batch
        logits = model(x)
        return joint_exit_loss(logits, y, weights), logits[-1], y

    return step


def _check_threshold(threshold, criterion, where):
    criterion = check_choice(criterion, where, "criterion", CRITERIA)
    return check_float(threshold, where, "threshold", minimum=0.0, maximum=1.0), criterion


def confidence(logits: torch.Tensor, criterion: str = "maxprob") -> torch.Tensor:
    """Per-sample confidence score in ``[0, 1]``, larger = more confident.

    ``"maxprob"``: the largest softmax probability. ``"entropy"``: ``1 - H(p) / log(C)``,
    one minus the normalized entropy (so exiting at ``entropy <= t`` is ``confidence >= 1 - t``).

    Args:
        logits: float tensor ``(batch, n_classes)``.

    Returns:
        float tensor ``(batch,)``.

    Examples:
        >>> [round(c, 2) for c in confidence(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), "entropy").tolist()]
        [0.0, 0.47]
    """
    check_tensor(logits, "confidence", "logits", ndim=2, floating=True)
    criterion = check_choice(criterion, "confidence", "criterion", CRITERIA)
    p = logits.softmax(1)
    if criterion == "maxprob":
        return p.max(1).values
    ent = -(p * p.clamp_min(1e-12).log()).sum(1)
    return 1.0 - ent / math.log(logits.shape[1])


def _passes(logits, threshold, criterion):
    """Bool ``(batch,)``: which samples are confident enough to exit (no input checks: hot path)."""
    p = logits.softmax(1)
    if criterion == "maxprob":
        return p.max(1).values >= threshold
    ent = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(logits.shape[1])
    return ent <= threshold


def exit_flops(model: MultiExitNet, example: torch.Tensor) -> list[int]:
    """FLOPs a single sample spends when it leaves at exit ``i`` (cumulative), counted.

    Exit ``i`` costs blocks ``0..i`` plus heads ``0..i``: the side classifiers it passed
    were evaluated too. Counted with :func:`nnbook.measure.flops` on a batch of one.

    Args:
        model: a :class:`MultiExitNet`.
        example: one input with a batch dimension of 1, e.g. ``(1, 1, 8, 8)``.

    Returns:
        A list of ``n_exits`` ints, increasing.

    Raises:
        TypeError: ``model`` is not a :class:`MultiExitNet`.
        ValueError: ``example`` does not have batch size 1.

    Examples:
        >>> net = multi_exit_mlp(64, ((8,), (16,)), 10)
        >>> exit_flops(net, torch.zeros(1, 1, 8, 8))  # 2*(64*8 + 8*10), then + 2*(8*16 + 16*10)
        [1184, 1760]
    """
    if not isinstance(model, MultiExitNet):
        raise TypeError(f"exit_flops: model must be a MultiExitNet, got {type(model).__name__}")
    check_tensor(example, "exit_flops", "example", floating=True)
    if example.shape[0] != 1:
        raise ValueError(f"exit_flops: example must have batch size 1, got shape {tuple(example.shape)}")
    total, out, h = 0, [], example
    with torch.no_grad():
        for block, head in zip(model.blocks, model.exits):
            total += _flops(block, h)
            h = block(h)
            total += _flops(head, h)
            out.append(total)
    return out


@dataclass
class ExitResult:
    """What an early-exit inference did, per sample.

    Attributes:
        pred: predicted classes, int64 ``(N,)``.
        exit: index of the exit each sample left at, int64 ``(N,)`` (0 = first).
        flops: FLOPs each sample spent, int64 ``(N,)``.
    """

    pred: torch.Tensor
    exit: torch.Tensor
    flops: torch.Tensor

    def accuracy(self, y: torch.Tensor) -> float:
        """Fraction of correct predictions in ``[0, 1]``."""
        return float((self.pred == y).float().mean())

    def exit_fractions(self, n_exits: int) -> list[float]:
        """Fraction of samples that left at each exit (sums to 1)."""
        counts = torch.bincount(self.exit, minlength=n_exits).float()
        return (counts / counts.sum()).tolist()


def _check_inputs(model, x, where):
    if not isinstance(model, MultiExitNet):
        raise TypeError(f"{where}: model must be a MultiExitNet, got {type(model).__name__}")
    check_tensor(x, where, "x", floating=True)


def early_exit_predict(model: MultiExitNet, x: torch.Tensor, threshold: float, criterion: str = "maxprob",
                       costs: Sequence[int] | None = None) -> ExitResult:
    """Early-exit inference at batch size 1: each sample runs alone until an exit is confident.

    This is how a deployed early-exit network answers one request at a time, and what
    batch-1 latency measures.

    Args:
        model: a :class:`MultiExitNet` (run in eval mode without gradients).
        x: inputs ``(N, ...)``; processed one sample at a time.
        threshold: in ``[0, 1]``; see the module docstring for its meaning per criterion.
        criterion: ``"maxprob"`` or ``"entropy"``.
        costs: FLOPs per exit from :func:`exit_flops` (counted on ``x[:1]`` when omitted).

    Returns:
        An :class:`ExitResult`.

    Raises:
        ValueError: ``threshold`` outside ``[0, 1]``; unknown ``criterion``.
        TypeError: ``model`` is not a :class:`MultiExitNet`; ``x`` is not a float tensor.

    Examples:
        >>> net = multi_exit_mlp(64, ((8,), (16,)), 10)
        >>> r = early_exit_predict(net, torch.rand(4, 1, 8, 8), threshold=0.0)  # everything leaves at exit 0
        >>> r.exit.tolist(), r.flops.tolist()
        ([0, 0, 0, 0], [1184, 1184, 1184, 1184])
    """
    _check_inputs(model, x, "early_exit_predict")
    threshold, criterion = _check_threshold(threshold, criterion, "early_exit_predict")
    costs = list(costs) if costs is not None else exit_flops(model, x[:1])
    was = model.training
    model.eval()
    preds, exits = [], []
    with torch.no_grad():
        for i in range(len(x)):
            h = x[i:i + 1]
            for k, (block, head) in enumerate(zip(model.blocks, model.exits)):
                h = block(h)
                z = head(h)
                if k == model.n_exits - 1 or bool(_passes(z, threshold, criterion)):
                    break
            preds.append(int(z.argmax(1)))
            exits.append(k)
    model.train(was)
    ex = torch.tensor(exits, dtype=torch.int64)
    return ExitResult(torch.tensor(preds, dtype=torch.int64), ex, torch.tensor(costs, dtype=torch.int64)[ex])


def route_batch(model: MultiExitNet, x: torch.Tensor, threshold: float, criterion: str = "maxprob",
                costs: Sequence[int] | None = None) -> ExitResult:
    """Batched early exit: after each block, confident samples leave and only the rest go on.

    Gives the same predictions and exits as :func:`early_exit_predict` (up to float
    rounding of borderline confidences), much faster for evaluating many samples.

    Args, Returns and Raises: as :func:`early_exit_predict`.

    Examples:
        >>> net = multi_exit_mlp(64, ((8,), (16,)), 10)
        >>> route_batch(net, torch.rand(3, 1, 8, 8), threshold=1.0).exit.tolist()  # nobody is that sure
        [1, 1, 1]
    """
    _check_inputs(model, x, "route_batch")
    threshold, criterion = _check_threshold(threshold, criterion, "route_batch")
    costs = list(costs) if costs is not None else exit_flops(model, x[:1])
    n = len(x)
    pred = torch.zeros(n, dtype=torch.int64)
    ex = torch.full((n,), model.n_exits - 1, dtype=torch.int64)
    active = torch.arange(n)
    was = model.training
    model.eval()
    with torch.no_grad():
        h = x
        for k, (block, head) in enumerate(zip(model.blocks, model.exits)):
            h = block(h)
            z = head(h)
            done = torch.ones(len(active), dtype=torch.bool) if k == model.n_exits - 1 \
                else _passes(z, threshold, criterion).cpu()
            pred[active[done]] = z.argmax(1).cpu()[done]
            ex[active[done]] = k
            active, h = active[~done], h[~done.to(h.device)]
            if len(active) == 0:
                break
    model.train(was)
    return ExitResult(pred, ex, torch.tensor(costs, dtype=torch.int64)[ex])


def choose_threshold(model: MultiExitNet, x_val: torch.Tensor, y_val: torch.Tensor,
                     thresholds: Sequence[float], max_drop: float = 0.005,
                     criterion: str = "maxprob") -> float:
    """The cheapest threshold whose *validation* accuracy is within ``max_drop`` of the full network's.

    "Cheapest" = lowest mean FLOPs per sample (:func:`route_batch`); the reference is the
    last exit's accuracy on the same validation samples. Use a validation split, never the
    test split: the test split only reports the result.

    Args:
        x_val, y_val: validation inputs and integer labels ``(N,)``.
        thresholds: candidate thresholds, each in ``[0, 1]``.
        max_drop: allowed accuracy loss as a fraction (0.005 = half a point).

    Returns:
        The chosen threshold (a float from ``thresholds``).

    Raises:
        ValueError: no candidates, a candidate outside ``[0, 1]``, ``max_drop`` outside ``[0, 1)``.
    """
    where = "choose_threshold"
    _check_inputs(model, x_val, where)
    check_labels(y_val, where)
    max_drop = check_float(max_drop, where, "max_drop", minimum=0.0, maximum=1.0, max_open=True)
    thresholds = [check_float(t, where, "each threshold", minimum=0.0, maximum=1.0) for t in thresholds]
    if not thresholds:
        raise ValueError(f"{where}: give at least one threshold")
    costs = exit_flops(model, x_val[:1])
    was = model.training
    model.eval()
    with torch.no_grad():
        full_acc = float((model.final(x_val).argmax(1).cpu() == y_val.cpu()).float().mean())
    model.train(was)
    best, best_cost = None, math.inf
    for t in thresholds:
        r = route_batch(model, x_val, t, criterion, costs)
        cost = float(r.flops.float().mean())
        if r.accuracy(y_val) >= full_acc - max_drop - 1e-12 and cost < best_cost:
            best, best_cost = t, cost
    if best is None:  # cannot happen when a threshold that never exits early is among the candidates
        best = max(thresholds) if criterion == "maxprob" else min(thresholds)
    return best
