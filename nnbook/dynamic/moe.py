"""Mixture of experts: a gate sends each input to ``k`` of ``E`` small networks.

Shazeer et al. (2017, "Outrageously Large Neural Networks: The Sparsely-Gated
Mixture-of-Experts Layer") replace one layer by ``E`` *experts* and a *gate*: the gate
scores the experts for each input, only the ``k`` best run, and their outputs are mixed
with the renormalized gate weights. Total parameters grow with ``E``; the compute per input
(the *active* parameters) grows only with ``k``.

Left alone, the gate tends to favour the experts that happen to be good early, which then
get all the training and become better still: some experts *starve*. An auxiliary
*load-balancing loss* counters this. Shazeer et al. penalize the squared coefficient of
variation of the experts' importance; we use the simpler form of the Switch Transformer
(Fedus, Zoph & Shazeer, 2022), ``E * sum_i f_i * P_i`` with ``f_i`` the fraction of routing
slots given to expert ``i`` and ``P_i`` its mean gate probability: it equals 1 when routing is
uniform and grows as it concentrates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float, check_int, check_tensor


class MoE(nn.Module):
    """A sparsely-gated mixture-of-experts layer with top-k gating.

    Each expert is ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, d_out)``; the gate is one
    ``Linear(d_in, n_experts)`` followed by a softmax. For each input the ``k`` experts of
    highest gate probability run, and their outputs are summed with the top-k probabilities
    renormalized to sum to 1. Only the selected experts compute, so
    :func:`nnbook.measure.flops` on one sample counts the *active* FLOPs.

    After every forward the layer keeps ``last_probs`` (``(batch, n_experts)`` gate
    probabilities) and ``last_topk`` (``(batch, k)`` chosen expert indices) for
    :func:`balance_loss` and :func:`expert_load`.

    Args:
        d_in, d_out: input and output features.
        n_experts: ``E >= 1``.
        k: experts per input, ``1 <= k <= n_experts``.
        hidden: hidden units of each expert.

    Raises:
        ValueError: ``k > n_experts`` or a size below 1. TypeError: a size is not an int.

    Examples:
        >>> layer = MoE(6, 3, n_experts=4, k=2, hidden=5)
        >>> layer(torch.randn(7, 6)).shape, layer.last_topk.shape
        (torch.Size([7, 3]), torch.Size([7, 2]))
        >>> MoE(6, 3, n_experts=4, k=5)
        Traceback (most recent call last):
        ...
        ValueError: MoE: k must be <= n_experts = 4, got 5
    """

    def __init__(self, d_in: int, d_out: int, n_experts: int = 8, k: int = 2, hidden: int = 16):
        super().__init__()
        for name, v in (("d_in", d_in), ("d_out", d_out), ("n_experts", n_experts), ("k", k), ("hidden", hidden)):
            check_int(v, "MoE", name, minimum=1)
        if k > n_experts:
            raise ValueError(f"MoE: k must be <= n_experts = {n_experts}, got {k}")
        self.d_in, self.d_out, self.n_experts, self.k = d_in, d_out, n_experts, k
        self.gate = nn.Linear(d_in, n_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out)) for _ in range(n_experts))
        self.last_probs: torch.Tensor | None = None
        self.last_topk: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (batch, d_in) -> (batch, d_out)``."""
        if x.dim() != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"MoE: expected input of shape (batch, {self.d_in}), got {tuple(x.shape)}")
        probs = self.gate(x).softmax(1)
        top_p, top_i = probs.topk(self.k, dim=1)
        weights = top_p / top_p.sum(1, keepdim=True)
        self.last_probs, self.last_topk = probs, top_i
        out = x.new_zeros(len(x), self.d_out)
        for e, expert in enumerate(self.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if len(rows) == 0:
                continue  # an expert nobody chose costs nothing
            y = expert(x[rows]) * weights[rows, slot].unsqueeze(1)
            out = out.index_add(0, rows, y)
        return out

    def active_params(self) -> int:
        """Parameters one input uses: the gate plus ``k`` experts."""
        per_expert = sum(p.numel() for p in self.experts[0].parameters())
        return sum(p.numel() for p in self.gate.parameters()) + self.k * per_expert


class MoEClassifier(nn.Module):
    """A classifier whose hidden layer is a :class:`MoE`: ``flatten -> MoE -> ReLU -> Linear``.

    Args:
        in_features: input size after flattening (64 for digits).
        width: output size of the MoE layer.
        n_classes, n_experts, k, hidden: as in :class:`MoE`.
    """

    def __init__(self, in_features: int = 64, width: int = 32, n_classes: int = 10, n_experts: int = 8,
                 k: int = 2, hidden: int = 16):
        super().__init__()
        self.moe = MoE(in_features, width, n_experts, k, hidden)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.moe(x.flatten(1))))

    def active_params(self) -> int:
        return self.moe.active_params() + sum(p.numel() for p in self.head.parameters())


def balance_loss(probs: torch.Tensor, topk: torch.Tensor) -> torch.Tensor:
    """The Switch-Transformer load-balancing loss ``E * sum_i f_i * P_i`` (1 when routing is uniform).

    Args:
        probs: gate probabilities, float ``(batch, E)``.
        topk: chosen experts, int64 ``(batch, k)``.

    Returns:
        A scalar tensor ``>= 1`` up to rounding when routing follows the gate; differentiable
        through ``probs`` (``f_i`` counts choices and carries no gradient).

    Examples:
        >>> probs = torch.full((4, 2), 0.5)
        >>> float(balance_loss(probs, torch.tensor([[0], [1], [0], [1]])))
        1.0
    """
    check_tensor(probs, "balance_loss", "probs", ndim=2, floating=True)
    check_tensor(topk, "balance_loss", "topk", ndim=2)
    n_experts = probs.shape[1]
    f = torch.bincount(topk.flatten(), minlength=n_experts).float() / topk.numel()
    return n_experts * (f.to(probs.device) * probs.mean(0)).sum()


def expert_load(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Fraction of routing slots each expert receives on inputs ``x`` (sums to 1).

    Args:
        model: a :class:`MoE` or a module containing exactly one.
        x: a batch the model accepts.

    Returns:
        float tensor ``(E,)`` on the CPU. An expert with load 0 is *starved*.

    Raises:
        ValueError: the model contains no :class:`MoE` (or more than one).
    """
    layers = [m for m in model.modules() if isinstance(m, MoE)]
    if len(layers) != 1:
        raise ValueError(f"expert_load: the model must contain exactly one MoE layer, found {len(layers)}")
    was = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was)
    layer = layers[0]
    counts = torch.bincount(layer.last_topk.flatten().cpu(), minlength=layer.n_experts).float()
    return counts / counts.sum()


def moe_step(balance: float = 0.0):
    """A ``step`` for :func:`nnbook.train.fit`: cross-entropy ``+ balance * balance_loss``.

    Args:
        balance: weight of the load-balancing loss, ``>= 0`` (0 = no balancing).

    Returns:
        ``step(model, (x, y)) -> (loss, logits, y)`` for a model containing one :class:`MoE`.
    """
    balance = check_float(balance, "moe_step", "balance", minimum=0.0)

    def step(model, batch):
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if balance > 0:
            layer = next(m for m in model.modules() if isinstance(m, MoE))
            loss = loss + balance * balance_loss(layer.last_probs, layer.last_topk)
        return loss, logits, y

    return step
