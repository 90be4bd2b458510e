"""The book's reference models, and cached trained baselines that several chapters share.

Models for the 8×8 digits images live here from chapter 1 on; chapter 2 adds the
sequence models for MNIST-1D.  :func:`pretrained` trains a baseline once with a
fixed recipe and caches its weights (atomically, keyed by recipe and seed), so the
pruning, quantization and case-study chapters start from the same model without
retraining it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp(in_features: int, hidden: Sequence[int] = (128,), n_classes: int = 10, dropout: float = 0.0) -> nn.Sequential:
    """A multilayer perceptron: ``Flatten`` then ``Linear → ReLU (→ Dropout)`` per hidden layer, then a linear head.

    Args:
        in_features: size of a flattened input (64 for digits, 40 for MNIST-1D).
        hidden: widths of the hidden layers; ``()`` gives softmax (multinomial logistic) regression.
        n_classes: number of output logits.
        dropout: dropout probability after each hidden activation, in ``[0, 1)``.

    Input ``(N, ...)`` with ``in_features`` values per sample; output logits ``(N, n_classes)``.

    Raises:
        ValueError: a non-positive size, or ``dropout`` outside ``[0, 1)``.
    """
    sizes = [in_features, *hidden, n_classes]
    if any((not isinstance(s, int)) or s < 1 for s in sizes):
        raise ValueError(f"mlp: sizes must be positive ints, got in_features={in_features}, hidden={tuple(hidden)}, n_classes={n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class DigitsCNN(nn.Module):
    """A small VGG-style CNN for 8×8 single-channel digits.

    ``conv(1→c1) → BN → ReLU → conv(c1→c2) → BN → ReLU → maxpool 2 →
    conv(c2→c3) → BN → ReLU → global average pool → linear(c3→n_classes)``,
    3×3 kernels with padding 1.  Input ``(N, 1, 8, 8)`` float32; output logits
    ``(N, n_classes)``.  The BatchNorm after each convolution is what structured
    pruning (chapter 4) must shrink together with the convolution.

    Args:
        channels: ``(c1, c2, c3)``.
        n_classes: number of output logits.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 64), n_classes: int = 10):
        super().__init__()
        if len(channels) != 3 or any((not isinstance(c, int)) or c < 1 for c in channels):
            raise ValueError(f"DigitsCNN: channels must be three positive ints, got {tuple(channels)}")
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(c3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> (model factory, data loader name, training recipe)
_RECIPES = {
    "digits_cnn": dict(make=lambda: DigitsCNN(), data="digits", epochs=30, lr=3e-3, batch_size=64, weight_decay=0.0),
    "digits_mlp": dict(make=lambda: mlp(64, (300, 100), 10), data="digits", epochs=40, lr=1e-3, batch_size=64, weight_decay=0.0),
}


def recipes() -> list[str]:
    """Names accepted by :func:`pretrained`."""
    return sorted(_RECIPES)


def pretrained(name: str, seed: int = 0, progress: bool = False):
    """A trained baseline, trained once per ``(name, seed)`` and then read from the cache.

    Recipes (all on the book's fixed digits split, Adam, CPU-sized):

    * ``"digits_cnn"`` — :class:`DigitsCNN` with channels (32, 64, 64), 30 epochs;
    * ``"digits_mlp"`` — the LeNet-300-100 layout of Han et al. (2015) on 64 inputs,
      ``mlp(64, (300, 100))``, 40 epochs.

    Training always runs on the CPU so the cached weights are identical whatever
    device a reader has; the model is returned on the CPU, in eval mode.

    Args:
        name: one of :func:`recipes`.
        seed: seed of initialization and shuffling.
        progress: show the training progress bar on a cache miss.

    Returns:
        ``(model, info)`` where ``info`` is a dict with the recipe, the ``history``
        (as a dict of per-epoch lists) and ``test_acc`` (fraction).

    Raises:
        ValueError: an unknown name.
    """
    from .cache import cached
    from .data import load_digits, loaders
    from .train import History, evaluate, fit
    from .utils import seed_everything

    if name not in _RECIPES:
        raise ValueError(f"pretrained: unknown baseline {name!r}; expected one of {recipes()}")
    recipe = _RECIPES[name]
    config = {"name": name, "seed": int(seed), "version": 1,
              **{k: v for k, v in recipe.items() if k != "make"}}

    def build():
        torch.manual_seed(seed)
        model = recipe["make"]()
        split = load_digits()
        train, _, test = loaders(split, batch_size=recipe["batch_size"], seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe["epochs"])
        hist = fit(model, train, None, epochs=recipe["epochs"], optimizer=opt,
                   scheduler=sched, device="cpu", n_classes=10, progress=progress, desc=name)
        _, acc = evaluate(model, test)
        return {"state_dict": model.state_dict(), "history": hist.as_dict(), "test_acc": acc}

    rng_state = torch.get_rng_state()
    entry = cached(f"pretrained-{name}", config, build)
    torch.set_rng_state(rng_state)  # using the cache must not change the notebook's random stream
    model = recipe["make"]()
    model.load_state_dict(entry["state_dict"])
    model.eval()
    info = {"recipe": config, "history": History(**entry["history"]), "test_acc": entry["test_acc"]}
    return model, info
