"""Adaptive depth: stochastic depth training, then dropping residual blocks at inference.

Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger, 2016, "Deep Networks with
Stochastic Depth") skips each residual block ``x + f_l(x)`` at random during training:
block ``l`` survives with probability ``p_l``, decaying linearly from 1 at the input to
``p_L`` at the last block. The network learns to work with blocks missing, so at inference
whole blocks can be dropped (less depth, less compute) at a small cost in accuracy: the
same operation as chapter 4's layer removal, on a network trained to tolerate it.

We drop per *sample* and scale a surviving block's output by ``1 / p_l`` during training
(the "drop path" form common today), so inference needs no rescaling; Huang et al. drop
per mini-batch and scale by ``p_l`` at test time instead.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._checks import check_float, check_int


class StochasticDepthMLP(nn.Module):
    """A residual MLP, ``Linear(in, width) -> n_blocks x [x + f_l(x)] -> Linear(width, n_classes)``.

    Each ``f_l`` is ``Linear -> ReLU -> Linear``. With ``p_last < 1`` blocks are skipped at
    random in training mode (survival ``p_l = 1 - l / (L - 1) * (1 - p_last)``, ``l = 0..L-1``);
    ``p_last = 1`` trains a plain residual network. The set ``dropped`` lists blocks skipped
    at inference (and in training): :meth:`drop` sets it.

    Args:
        in_features, width, n_blocks, n_classes: sizes (ints ``>= 1``).
        p_last: survival probability of the last block, in ``(0, 1]``.

    Raises:
        TypeError, ValueError: a size is not an int ``>= 1``; ``p_last`` outside ``(0, 1]``.

    Examples:
        >>> net = StochasticDepthMLP(64, 16, n_blocks=4, p_last=0.5)
        >>> [round(p, 3) for p in net.survival]
        [1.0, 0.833, 0.667, 0.5]
        >>> net.drop([2, 3]).eval()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int = 64, width: int = 64, n_blocks: int = 8, n_classes: int = 10,
                 p_last: float = 0.5):
        super().__init__()
        where = "StochasticDepthMLP"
        for name, v in (("in_features", in_features), ("width", width), ("n_blocks", n_blocks),
                        ("n_classes", n_classes)):
            check_int(v, where, name, minimum=1)
        p_last = check_float(p_last, where, "p_last", minimum=0.0, maximum=1.0, min_open=True)
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)) for _ in range(n_blocks))
        self.head = nn.Linear(width, n_classes)
        step = (1.0 - p_last) / max(n_blocks - 1, 1)
        self.survival = [1.0 - l * step for l in range(n_blocks)]
        self.dropped: set[int] = set()

    def drop(self, blocks: Sequence[int]) -> "StochasticDepthMLP":
        """Skip the given blocks from now on (an empty list restores all); returns ``self``.

        Raises:
            ValueError: a block index outside ``0..n_blocks-1``.
        """
        idx = {check_int(b, "StochasticDepthMLP.drop", "each block", minimum=0, maximum=len(self.blocks) - 1)
               for b in blocks}
        self.dropped = idx
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for l, (block, p) in enumerate(zip(self.blocks, self.survival)):
            if l in self.dropped:
                continue
            if self.training and p < 1.0:
                keep = (torch.rand(len(h), 1, device=h.device) < p).to(h.dtype)
                h = h + block(h) * keep / p
            else:
                h = h + block(h)
        return self.head(torch.relu(h))
