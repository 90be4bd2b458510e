"""One-shot NAS: a weight-sharing supernet over the whole chapter-3 space.

One set of weights serves every architecture (Pham et al., 2018, "Efficient neural
architecture search via parameter sharing", ENAS; Bender et al., 2018): a
convolution of ``c`` channels and kernel ``k`` uses the first ``c`` output (and
input) channels and the central ``k`` taps of a shared 16-channel, 7-tap weight;
a linear head is kept per output shape.  Training samples one architecture per
batch uniformly (the single-path, uniform-sampling variant of Guo et al., 2020,
and the "random search with weight sharing" of Li & Talwalkar, 2019).  Afterwards
every architecture can be scored with the inherited weights in milliseconds;
how well those scores rank the architectures' stand-alone accuracies is the
question of Yu et al. (2020, "Evaluating the search phase of neural architecture
search"), and the chapter measures it against the table.

Normalization uses the statistics of the current batch, also in evaluation
(``BatchNorm`` without running statistics): running averages shared by many
sub-networks would belong to none of them.
"""
from __future__ import annotations

import random as _random

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from .space import SEQ_LEN, SPACE, Arch, sample, validate_arch

__all__ = ["SuperNet", "train_supernet", "supernet_scores"]

_MAXC, _MAXK, _MAXD = max(SPACE["channels"]), max(SPACE["kernel"]), max(SPACE["depth"])


class SuperNet(nn.Module):
    """Shared weights for every :class:`nnbook.nas.Arch`; ``forward(x, arch)``.

    Input ``(N, 40)`` float32; output logits ``(N, 10)`` of the sub-network ``arch``.

    Examples:
        >>> net = SuperNet()
        >>> net(torch.zeros(4, 40), Arch(3, 16, 5, "max", "tanh", True)).shape
        torch.Size([4, 10])
    """

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.gammas = nn.ParameterList()
        self.betas = nn.ParameterList()
        for i in range(_MAXD):
            conv = nn.Conv1d(1 if i == 0 else _MAXC, _MAXC, _MAXK, padding=_MAXK // 2)
            self.weights.append(conv.weight)
            self.biases.append(conv.bias)
            self.gammas.append(nn.Parameter(torch.ones(_MAXC)))
            self.betas.append(nn.Parameter(torch.zeros(_MAXC)))
        self.heads = nn.ModuleDict()
        for c in SPACE["channels"]:
            for length in {SEQ_LEN, SEQ_LEN // 2, SEQ_LEN // 4, SEQ_LEN // 8}:
                self.heads[f"{c}x{length}"] = nn.Linear(c * length, n_classes)

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        c, k = arch.channels, arch.kernel
        lo = (_MAXK - k) // 2
        act = torch.relu if arch.act == "relu" else torch.tanh
        for i in range(arch.depth):
            w = self.weights[i][:c, : (1 if i == 0 else c), lo:lo + k]
            h = F.conv1d(x, w, self.biases[i][:c], padding=k // 2)
            h = F.batch_norm(h, None, None, self.gammas[i][:c], self.betas[i][:c], training=True)
            h = act(h)
            x = h + x if (arch.skip and i > 0) else h
            if arch.pool == "max" and i < arch.depth - 1:
                x = F.max_pool1d(x, 2)
        return self.heads[f"{c}x{x.shape[-1]}"](x.flatten(1))


def train_supernet(split, epochs: int = 10, seed: int = 0, lr: float = 3e-3, batch_size: int = 128) -> SuperNet:
    """Train a :class:`SuperNet` with one uniformly sampled architecture per batch.

    Goes through :func:`nnbook.train.fit` with a ``step`` that samples the
    architecture; Adam with a cosine schedule, as the table's recipe.

    Args:
        split: an :class:`nnbook.data.Split` (MNIST-1D).
        epochs: passes over the training data, ``>= 1``.
        seed: seed of the initialization, the shuffling and the architecture sampling.

    Returns:
        The trained supernet (eval mode).

    Raises:
        ValueError: ``epochs < 1``.
    """
    from ..data import loaders
    from ..train import fit

    epochs = check_int(epochs, "train_supernet", "epochs", minimum=1)
    torch.manual_seed(seed)
    net = SuperNet()
    rng = _random.Random(seed)

    def step(model, batch):
        x, y = batch
        logits = model(x, sample(rng))
        return F.cross_entropy(logits, y), logits, y

    train_loader, _, _ = loaders(split, batch_size=batch_size, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    fit(net, train_loader, epochs=epochs, optimizer=opt, scheduler=sched, step=step, progress=False, device="cpu")
    return net.eval()


@torch.no_grad()
def supernet_scores(net: SuperNet, archs, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy (fraction) of each architecture with the supernet's inherited weights.

    Args:
        net: a trained :class:`SuperNet`.
        archs: architectures of the space.
        x: inputs ``(N, 40)`` float32 (a validation set, evaluated as one batch).
        y: labels ``(N,)`` int64.

    Raises:
        TypeError, ValueError: an architecture is outside the space; ``net`` is not a SuperNet.
    """
    if not isinstance(net, SuperNet):
        raise TypeError(f"supernet_scores: net must be an nnbook.nas.SuperNet, got {type(net).__name__}")
    archs = [validate_arch(a, "supernet_scores") for a in archs]
    return [float((net(x, a).argmax(1) == y).float().mean()) for a in archs]
