"""The search space of chapter 3: a small family of 1-D CNNs for MNIST-1D.

Every architecture is a :class:`Arch` (a frozen dataclass of six choices), so the
space can be enumerated, counted exactly, sampled, mutated and encoded as a
vector of choice indices for a controller.

The network an :class:`Arch` describes (:func:`build`)::

    input (N, 40) -> (N, 1, 40)
    stem:   Conv1d(1 -> C, k) -> BatchNorm -> act                    [-> MaxPool(2)]
    block i = 2..depth:  h = act(BN(Conv1d(C -> C, k)(x)));  x = h (+ x if skip)  [-> MaxPool(2)]
    head:   Flatten -> Linear(C * L_out -> 10)

Pooling (when chosen) halves the length after every layer but the last, which
trades accuracy for fewer parameters, FLOPs and milliseconds.
"""
from __future__ import annotations

import itertools
import random as _random
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

__all__ = ["Arch", "SPACE", "space_size", "all_archs", "validate_arch", "sample", "mutate", "encode",
           "decode", "build", "SEQ_LEN", "N_CLASSES"]

SEQ_LEN = 40
N_CLASSES = 10

#: The choices of every dimension, in a fixed order (the order of :class:`Arch`'s fields).
SPACE: dict[str, tuple] = {
    "depth": (2, 3, 4),
    "channels": (4, 8, 16),
    "kernel": (3, 5, 7),
    "pool": ("none", "max"),
    "act": ("relu", "tanh"),
    "skip": (False, True),
}


@dataclass(frozen=True, order=True)
class Arch:
    """One architecture of :data:`SPACE` (immutable and hashable, so it can key a table).

    Attributes:
        depth: number of convolution layers (2, 3 or 4).
        channels: channels of every convolution (4, 8 or 16).
        kernel: kernel size of every convolution (3, 5 or 7; "same" padding).
        pool: ``"max"`` halves the length after every layer but the last; ``"none"`` keeps it.
        act: ``"relu"`` or ``"tanh"``.
        skip: residual connections around blocks 2..depth.
    """

    depth: int
    channels: int
    kernel: int
    pool: str
    act: str
    skip: bool

    def __str__(self) -> str:
        return (f"d{self.depth}-c{self.channels}-k{self.kernel}-{self.pool}-{self.act}"
                f"{'-skip' if self.skip else ''}")

    def as_dict(self) -> dict:
        return asdict(self)


_NAMES = tuple(f.name for f in fields(Arch))


def space_size() -> int:
    """The exact number of architectures: the product of the number of choices per dimension.

    Examples:
        >>> space_size()
        216
    """
    return int(np.prod([len(v) for v in SPACE.values()]))


def all_archs() -> list[Arch]:
    """Every architecture of the space, in a fixed (lexicographic by choice index) order.

    Examples:
        >>> archs = all_archs()
        >>> len(archs) == space_size(), len(set(archs)) == len(archs)
        (True, True)
    """
    return [Arch(*combo) for combo in itertools.product(*SPACE.values())]


def validate_arch(arch, where: str = "validate_arch") -> Arch:
    """Return ``arch`` as an :class:`Arch` when it lies in the space, else raise.

    Args:
        arch: an :class:`Arch`, or a dict with the six keys of :data:`SPACE`.
        where: the public function name to put in error messages.

    Raises:
        TypeError: ``arch`` is neither an :class:`Arch` nor a dict.
        ValueError: a key is missing or unknown, or a value is not one of its choices.

    Examples:
        >>> validate_arch({"depth": 2, "channels": 8, "kernel": 3, "pool": "max", "act": "relu", "skip": False})
        Arch(depth=2, channels=8, kernel=3, pool='max', act='relu', skip=False)
        >>> validate_arch({"depth": 9, "channels": 8, "kernel": 3, "pool": "max", "act": "relu", "skip": False})
        Traceback (most recent call last):
        ...
        ValueError: validate_arch: depth must be one of (2, 3, 4), got 9 (the architecture is outside the search space)
    """
    if isinstance(arch, Arch):
        d = arch.as_dict()
    elif isinstance(arch, dict):
        d = dict(arch)
    else:
        raise TypeError(f"{where}: an architecture must be an nnbook.nas.Arch or a dict with keys "
                        f"{list(_NAMES)}, got {type(arch).__name__}")
    missing = [k for k in _NAMES if k not in d]
    extra = [k for k in d if k not in SPACE]
    if missing or extra:
        raise ValueError(f"{where}: an architecture needs exactly the keys {list(_NAMES)}; "
                         f"missing {missing}, unknown {extra}")
    for k in _NAMES:
        v = d[k]
        ok = any(type(v) is type(c) and v == c for c in SPACE[k]) or (
            k != "skip" and not isinstance(v, bool) and isinstance(v, (int, np.integer)) and int(v) in SPACE[k])
        if not ok:
            raise ValueError(f"{where}: {k} must be one of {SPACE[k]}, got {v!r} "
                             "(the architecture is outside the search space)")
        if isinstance(v, np.integer):
            d[k] = int(v)
    return Arch(**{k: d[k] for k in _NAMES})


def _rng(rng) -> _random.Random:
    if isinstance(rng, _random.Random):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return _random.Random(int(rng))
    raise TypeError(f"expected a random.Random or an int seed, got {type(rng).__name__}")


def sample(rng) -> Arch:
    """An architecture drawn uniformly from the space.

    Args:
        rng: a :class:`random.Random` (consumed) or an int seed.

    Examples:
        >>> sample(0) in set(all_archs())
        True
    """
    r = _rng(rng)
    return Arch(*(r.choice(v) for v in SPACE.values()))


def mutate(arch, rng) -> Arch:
    """Change one randomly chosen dimension of ``arch`` to another of its choices.

    This is the mutation of regularized evolution (Real et al., 2019): the child
    differs from its parent in exactly one choice.

    Args:
        arch: an architecture of the space (:class:`Arch` or dict).
        rng: a :class:`random.Random` or an int seed.

    Raises:
        TypeError, ValueError: ``arch`` is not in the space.

    Examples:
        >>> a = Arch(2, 8, 3, "max", "relu", False)
        >>> b = mutate(a, 1)
        >>> sum(x != y for x, y in zip(a.as_dict().values(), b.as_dict().values()))
        1
    """
    arch = validate_arch(arch, "mutate")
    r = _rng(rng)
    key = r.choice(_NAMES)
    others = [c for c in SPACE[key] if c != getattr(arch, key)]
    d = arch.as_dict()
    d[key] = r.choice(others)
    return Arch(**d)


def encode(arch) -> list[int]:
    """The choice index of every dimension (the "tokens" a controller emits).

    Examples:
        >>> encode(Arch(3, 16, 3, "max", "tanh", True))
        [1, 2, 0, 1, 1, 1]
    """
    arch = validate_arch(arch, "encode")
    return [SPACE[k].index(getattr(arch, k)) for k in _NAMES]


def decode(indices) -> Arch:
    """Inverse of :func:`encode`.

    Raises:
        ValueError: wrong length or an index out of range.

    Examples:
        >>> decode([1, 2, 0, 1, 1, 1])
        Arch(depth=3, channels=16, kernel=3, pool='max', act='tanh', skip=True)
    """
    idx = list(indices)
    if len(idx) != len(_NAMES):
        raise ValueError(f"decode: expected {len(_NAMES)} indices, got {len(idx)}")
    out = {}
    for k, i in zip(_NAMES, idx):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < len(SPACE[k]):
            raise ValueError(f"decode: index for {k} must be an int in [0, {len(SPACE[k])}), got {i!r}")
        out[k] = SPACE[k][int(i)]
    return Arch(**out)


_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class Net1D(nn.Module):
    """The 1-D CNN an :class:`Arch` describes (see the module docstring).

    Input ``(N, 40)`` or ``(N, 1, 40)`` float32; output logits ``(N, 10)``.
    """

    def __init__(self, arch: Arch, n_classes: int = N_CLASSES, seq_len: int = SEQ_LEN):
        super().__init__()
        self.arch = arch
        c, k = arch.channels, arch.kernel
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        length = seq_len
        for i in range(arch.depth):
            self.convs.append(nn.Conv1d(1 if i == 0 else c, c, k, padding=k // 2))
            self.norms.append(nn.BatchNorm1d(c))
            if arch.pool == "max" and i < arch.depth - 1:
                length //= 2
        self.act = _ACTS[arch.act]()
        self.pool = nn.MaxPool1d(2) if arch.pool == "max" else nn.Identity()
        self.head = nn.Linear(c * length, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        for i, (conv, bn) in enumerate(zip(self.convs, self.norms)):
            h = self.act(bn(conv(x)))
            x = h + x if (self.arch.skip and i > 0) else h
            if i < len(self.convs) - 1:
                x = self.pool(x)
        return self.head(x.flatten(1))


def build(arch, n_classes: int = N_CLASSES) -> Net1D:
    """The PyTorch model of an architecture (freshly initialized with the global RNG).

    Args:
        arch: an architecture of the space.
        n_classes: number of output logits.

    Returns:
        A :class:`Net1D`: input ``(N, 40)`` float32, output ``(N, n_classes)`` logits.

    Raises:
        TypeError, ValueError: ``arch`` is not in the space.

    Examples:
        >>> net = build(Arch(2, 8, 3, "max", "relu", False))
        >>> net(torch.zeros(5, 40)).shape
        torch.Size([5, 10])
    """
    return Net1D(validate_arch(arch, "build"), n_classes)
