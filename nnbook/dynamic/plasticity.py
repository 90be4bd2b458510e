"""Differentiable plasticity: recurrent weights that change within an episode by a learned Hebbian rule.

Miconi, Clune & Stanley (2018, "Differentiable plasticity: training plastic neural networks
with backpropagation") give every connection a fixed weight ``w_ij`` *and* a plastic part
``alpha_ij * Hebb_ij``. The Hebbian trace accumulates co-activity during an episode,
``Hebb <- (1 - eta) * Hebb + eta * h_{t-1} h_t^T``, and starts from zero in each new episode.
Gradient descent learns ``w``, ``alpha`` (how plastic each connection is) and ``eta`` (how fast
the trace moves) across episodes; *within* an episode the network learns by itself, without
gradients. The weights an input meets depend on what came before it: temporal-wise
dynamic behaviour.

The test bed is Miconi et al.'s binary pattern memorization: a few random ``±1`` patterns are
shown (each for some steps, with pauses, a few times), then one of them is shown with half
of its bits erased (set to 0) and the network must complete it. The patterns are new in
every episode, so no fixed weight can store them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_tensor


def _check_sequence(x, n_bits: int, where: str) -> None:
    check_tensor(x, where, "inputs", ndim=3, floating=True)
    if x.shape[2] != n_bits:
        raise ValueError(f"{where}: inputs must have shape (batch, time, {n_bits}), got {tuple(x.shape)}")


class PlasticRNN(nn.Module):
    """A fully recurrent network of ``n_bits`` tanh neurons with Hebbian plastic weights.

    ``h_t = tanh(x_t + h_{t-1} (w + alpha ⊙ Hebb_t))``, ``Hebb_{t+1} = (1 - eta) Hebb_t + eta h_{t-1}^T h_t``,
    per episode (the batch holds independent episodes, each with its own trace).
    Parameters: ``w`` and ``alpha`` (``n_bits x n_bits``) and the scalar ``eta``:
    ``2 n_bits^2 + 1`` in all.

    Args:
        n_bits: neurons, equal to the pattern width (input ``i`` drives neuron ``i``; the
            neurons' state is the output).

    Examples:
        >>> net = PlasticRNN(8)
        >>> net(torch.zeros(2, 5, 8)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 5, 8]), 129)
        >>> net(torch.zeros(2, 5, 7))
        Traceback (most recent call last):
        ...
        ValueError: PlasticRNN: inputs must have shape (batch, time, 8), got (2, 5, 7)
    """

    def __init__(self, n_bits: int):
        super().__init__()
        self.n_bits = check_int(n_bits, "PlasticRNN", "n_bits", minimum=1)
        self.w = nn.Parameter(0.01 * torch.randn(n_bits, n_bits))
        self.alpha = nn.Parameter(0.01 * torch.randn(n_bits, n_bits))
        self.eta = nn.Parameter(torch.tensor(0.01))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs (batch, time, n_bits) -> states (batch, time, n_bits)`` in ``(-1, 1)``."""
        _check_sequence(inputs, self.n_bits, "PlasticRNN")
        b, t, n = inputs.shape
        h = inputs.new_zeros(b, n)
        hebb = inputs.new_zeros(b, n, n)  # a fresh trace for every episode
        states = []
        # This loop is the lesson: the recurrent weights change at every step of the episode.
        for step in range(t):
            weights = self.w + self.alpha * hebb  # (b, n, n): fixed part + plastic part
            h_new = torch.tanh(inputs[:, step] + torch.bmm(h.unsqueeze(1), weights).squeeze(1))
            hebb = (1 - self.eta) * hebb + self.eta * torch.bmm(h.unsqueeze(2), h_new.unsqueeze(1))
            h = h_new
            states.append(h)
        return torch.stack(states, 1)


class GRUTwin(nn.Module):
    """The non-plastic twin: a GRU plus a linear read-out with (at most) a given parameter budget.

    ``inputs (batch, time, n_bits) -> tanh(Linear(GRU(inputs)))`` of the same shape. The hidden
    size is the largest whose parameter count does not exceed ``budget``
    (``2 n_bits^2 + 1``, the :class:`PlasticRNN`'s, by default).

    Examples:
        >>> twin = GRUTwin(8)
        >>> twin.hidden, sum(p.numel() for p in twin.parameters()) <= 129
        (2, True)
    """

    def __init__(self, n_bits: int, budget: int | None = None):
        super().__init__()
        self.n_bits = check_int(n_bits, "GRUTwin", "n_bits", minimum=1)
        budget = 2 * n_bits ** 2 + 1 if budget is None else check_int(budget, "GRUTwin", "budget", minimum=1)
        count = lambda h: 3 * (n_bits * h + h * h + 2 * h) + h * n_bits + n_bits  # noqa: E731
        hidden = 1
        while count(hidden + 1) <= budget:
            hidden += 1
        self.hidden = hidden
        self.gru = nn.GRU(n_bits, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_bits)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_sequence(inputs, self.n_bits, "GRUTwin")
        return torch.tanh(self.out(self.gru(inputs)[0]))


def pattern_episodes(batch: int, n_bits: int = 32, n_patterns: int = 3, *, present: int = 3, gap: int = 2,
                     cycles: int = 2, test_steps: int = 3, generator: torch.Generator | None = None):
    """A batch of pattern-completion episodes (Miconi et al., 2018, section 4.1, scaled down).

    Each episode draws ``n_patterns`` random ``±1`` patterns of ``n_bits``; shows them in turn
    ``cycles`` times, each for ``present`` steps followed by ``gap`` steps of zeros; then shows
    one of them, chosen at random, with a random half of its bits erased (0) for ``test_steps``.

    Returns:
        ``(inputs, target, erased)``: float ``(batch, T, n_bits)`` with
        ``T = cycles * n_patterns * (present + gap) + test_steps``; the full pattern to
        recall, float ``(batch, n_bits)``; and a bool mask ``(batch, n_bits)`` of the erased bits.

    Examples:
        >>> x, target, erased = pattern_episodes(4, n_bits=10, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(target.shape), int(erased.sum(1)[0])
        ((4, 33, 10), (4, 10), 5)
    """
    where = "pattern_episodes"
    for name, v in (("batch", batch), ("n_bits", n_bits), ("n_patterns", n_patterns), ("present", present),
                    ("cycles", cycles), ("test_steps", test_steps)):
        check_int(v, where, name, minimum=1)
    check_int(gap, where, "gap", minimum=0)
    g = generator
    patterns = torch.randint(0, 2, (batch, n_patterns, n_bits), generator=g).float() * 2 - 1
    steps = []
    for _ in range(cycles):
        for k in range(n_patterns):
            steps += [patterns[:, k]] * present + [torch.zeros(batch, n_bits)] * gap
    which = torch.randint(0, n_patterns, (batch,), generator=g)
    target = patterns[torch.arange(batch), which]
    order = torch.rand(batch, n_bits, generator=g).argsort(1)
    erased = torch.zeros(batch, n_bits, dtype=torch.bool)
    erased.scatter_(1, order[:, : n_bits // 2], True)
    steps += [target.masked_fill(erased, 0.0)] * test_steps
    return torch.stack(steps, 1), target, erased


class EpisodeStream:
    """An iterable of fresh episode batches for :func:`nnbook.train.fit` (new patterns every time).

    Args:
        n_batches: batches per pass (one "epoch").
        batch_size: episodes per batch.
        seed: seed of the stream's own generator (reproducible, independent of global RNG).
        **episode: keyword arguments of :func:`pattern_episodes`.
    """

    def __init__(self, n_batches: int, batch_size: int = 32, seed: int = 0, **episode):
        self.n_batches = check_int(n_batches, "EpisodeStream", "n_batches", minimum=1)
        self.batch_size = check_int(batch_size, "EpisodeStream", "batch_size", minimum=1)
        self.generator = torch.Generator().manual_seed(int(seed) % (2 ** 63))
        self.episode = episode

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        for _ in range(self.n_batches):
            yield pattern_episodes(self.batch_size, generator=self.generator, **self.episode)


def episode_step(model: nn.Module, batch):
    """``step`` for :func:`nnbook.train.fit`: mean squared error of the final state against the pattern.

    Returns ``(loss, None, None)``: there is no class accuracy to count.
    """
    inputs, target, _ = batch
    return F.mse_loss(model(inputs)[:, -1], target), None, None


def recall_error(model: nn.Module, batch) -> float:
    """Fraction of *erased* bits whose sign the model gets wrong at the last step (0.5 = guessing).

    Args:
        model: maps ``(batch, T, n_bits)`` to outputs of the same shape.
        batch: ``(inputs, target, erased)`` from :func:`pattern_episodes`.
    """
    inputs, target, erased = batch
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(inputs)[:, -1]
    model.train(was)
    wrong = (torch.sign(out) != target) & erased
    return float(wrong.sum()) / max(int(erased.sum()), 1)
