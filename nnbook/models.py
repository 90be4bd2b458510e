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
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"mlp: hidden must be a sequence of ints such as (128,), got {hidden!r}")
    sizes = [in_features, *hidden, n_classes]
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"mlp: sizes must be positive ints, got in_features={in_features!r}, hidden={tuple(hidden)!r}, "
                         f"n_classes={n_classes!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be a number in [0, 1), got {dropout!r}")
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
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or len(channels) != 3 \
                or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"DigitsCNN: channels must be three positive ints, got {channels!r}")
        _check_ints("DigitsCNN", n_classes=n_classes)
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


#: Fraction of the digits training part held out for validation by :func:`pretrained`
#: (``load_digits(val_size=VAL_SIZE, seed=0)``): the baselines never see those images.
VAL_SIZE = 0.2


def recipes() -> list[str]:
    """Names accepted by :func:`pretrained`."""
    return sorted(_RECIPES)


def pretrained(name: str, seed: int = 0, progress: bool = False):
    """A trained baseline, trained once per ``(name, seed)`` and then read from the cache.

    Recipes (Adam, CPU-sized), trained on the *training* part of the book's fixed
    digits split with validation, ``load_digits(val_size=VAL_SIZE, seed=0)`` (1077
    images): the 270 validation images are never trained on, so chapters can choose
    things (layers to prune, thresholds) on them honestly, and the 450 test images
    only report:

    * ``"digits_cnn"`` — :class:`DigitsCNN` with channels (32, 64, 64), 30 epochs;
    * ``"digits_mlp"`` — the LeNet-300-100 layout of Han et al. (2015) on 64 inputs,
      ``mlp(64, (300, 100))``, 40 epochs.

    Training always runs on the CPU, in one thread, so the cached weights are the same
    whatever device a reader has and whichever chapter trains them first; the model
    is returned on the CPU, in eval mode.

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
    config = {"name": name, "seed": int(seed), "version": 3, "val_size": VAL_SIZE,
              **{k: v for k, v in recipe.items() if k != "make"}}

    def build():
        torch.manual_seed(seed)
        model = recipe["make"]()
        split = load_digits(val_size=VAL_SIZE, seed=0)
        train, _, test = loaders(split, batch_size=recipe["batch_size"], seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe["epochs"])
        hist = fit(model, train, None, epochs=recipe["epochs"], optimizer=opt,
                   scheduler=sched, device="cpu", n_classes=10, progress=progress, desc=name)
        _, acc = evaluate(model, test)
        return {"state_dict": model.state_dict(), "history": hist.as_dict(), "test_acc": acc}

    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bit-identical weights whichever chapter trains the baseline first
    try:
        entry = cached(f"pretrained-{name}", config, build)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng_state)  # using the cache must not change the notebook's random stream
    model = recipe["make"]()
    model.load_state_dict(entry["state_dict"])
    model.eval()
    info = {"recipe": config, "history": History(**entry["history"]), "test_acc": entry["test_acc"]}
    return model, info


# ---------------------------------------------------------------------------
# Chapter 2: one model per architecture family, for MNIST-1D sequences.
#
# Every model below maps a batch of MNIST-1D signals, float32 of shape (N, 40),
# to class logits, float32 of shape (N, n_classes).  Later chapters (NAS, the
# case studies) build on them, so they are small, readable and CPU-sized.
# ---------------------------------------------------------------------------

def _check_ints(where: str, **sizes) -> None:
    """Raise ValueError unless every keyword value is a positive int (bools rejected)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def _as_sequence(x: torch.Tensor, length: int, where: str) -> torch.Tensor:
    """Check a batch of signals ``(N, length)`` and return it as ``(N, length, 1)``."""
    if x.dim() != 2 or x.shape[1] != length:
        raise ValueError(f"{where}: expected input of shape (N, {length}), got {tuple(x.shape)}")
    return x.unsqueeze(-1)


def softmax_regression(in_features: int = 40, n_classes: int = 10) -> nn.Sequential:
    """Softmax (multinomial logistic) regression: one linear layer, ``mlp(in_features, (), n_classes)``.

    Input ``(N, in_features)`` float32; output logits ``(N, n_classes)`` float32
    (the softmax itself is part of the cross-entropy loss).  The linear baseline of
    every comparison: ``(in_features + 1) * n_classes`` parameters.

    Raises:
        ValueError: a non-positive size.
    """
    return mlp(in_features, (), n_classes)


class ConvNet1d(nn.Module):
    """A 1-D convolutional network for MNIST-1D, after the layout of the MNIST-1D reference CNN.

    ``n_layers`` blocks of ``Conv1d(kernel_size, stride 2, padding kernel_size // 2) →
    BatchNorm → ReLU`` halve the length each time (40 → 20 → 10 → 5 for three layers);
    the feature map is flattened and a linear layer gives the logits.  Convolutions
    share one small kernel across positions (weight sharing) and see only a local
    window (local connectivity), the two ideas of LeCun et al. (1998), "Gradient-based
    learning applied to document recognition".  The reference layout (Greydanus, 2020,
    "Scaling down deep learning") uses three layers of 25 channels and no
    normalization; the batch normalization here (Ioffe & Szegedy, 2015, "Batch
    normalization: accelerating deep network training by reducing internal covariate
    shift") lets it come within a few points of the reference accuracy (94 %) in a few
    hundred optimizer steps: about 91 % after 320 steps of 128 signals in chapter 2.

    Args:
        channels: channels of every convolution.
        n_layers: number of stride-2 convolutions.
        kernel_size: odd kernel width.
        batch_norm: put a ``BatchNorm1d`` after every convolution.
        length: input length (40 for MNIST-1D).
        n_classes: number of output logits.

    Input ``(N, length)`` float32; output logits ``(N, n_classes)`` float32.

    Raises:
        ValueError: a non-positive size, an even ``kernel_size``, or a non-bool ``batch_norm``.
    """

    def __init__(self, channels: int = 25, n_layers: int = 3, kernel_size: int = 5,
                 batch_norm: bool = True, length: int = 40, n_classes: int = 10):
        super().__init__()
        _check_ints("ConvNet1d", channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                    length=length, n_classes=n_classes)
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvNet1d: kernel_size must be odd, got {kernel_size}")
        if not isinstance(batch_norm, bool):
            raise ValueError(f"ConvNet1d: batch_norm must be True or False, got {batch_norm!r}")
        layers: list[nn.Module] = []
        c_in, out_len = 1, length
        for _ in range(n_layers):
            layers.append(nn.Conv1d(c_in, channels, kernel_size, stride=2, padding=kernel_size // 2))
            layers += [nn.BatchNorm1d(channels), nn.ReLU()] if batch_norm else [nn.ReLU()]
            c_in, out_len = channels, (out_len - 1) // 2 + 1  # stride 2, padding k // 2: ceil(len / 2)
        self.length = length
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * out_len, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_sequence(x, self.length, "ConvNet1d").transpose(1, 2)  # (N, 1, length)
        return self.classifier(self.features(x).flatten(1))


class ReferenceConvNet1d(nn.Module):
    """The MNIST-1D reference CNN, layer for layer (Greydanus & Kobak, "Scaling down deep
    learning with MNIST-1D", ICML 2024; the ``ConvBase`` model of the mnist1d package).

    Three stride-2 convolutions of 25 channels with kernels 5, 3, 3 and padding 1
    (length 40 → 19 → 10 → 5), ReLU after each, no normalization, then a linear layer
    on the 125 flattened features: 5,210 parameters. Chapter 2 compares it with
    :class:`ConvNet1d` (kernels 5, 5, 5 plus BatchNorm), which learns faster in the
    chapter's short training budget.

    Input ``(N, 40)`` float32; output logits ``(N, n_classes)`` float32.
    """

    def __init__(self, channels: int = 25, n_classes: int = 10):
        super().__init__()
        _check_ints("ReferenceConvNet1d", channels=channels, n_classes=n_classes)
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Linear(channels * 5, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_sequence(x, 40, "ReferenceConvNet1d").transpose(1, 2)  # (N, 1, 40)
        return self.classifier(self.features(x).flatten(1))


class RecurrentClassifier(nn.Module):
    """A recurrent classifier: the signal is read one sample per time step.

    ``cell`` chooses the recurrence:

    * ``"rnn"`` — the plain (Elman) tanh RNN, ``h_t = tanh(W x_t + U h_{t-1} + b)``
      (Elman, 1990, "Finding structure in time");
    * ``"lstm"`` — long short-term memory (Hochreiter & Schmidhuber, 1997, "Long
      short-term memory"; PyTorch's version has the forget gate of Gers et al., 2000);
    * ``"gru"`` — the gated recurrent unit (Cho et al., 2014, "Learning phrase
      representations using RNN encoder-decoder for statistical machine translation").

    The recurrences are PyTorch's maintained ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.
    The logits come from a linear layer on the last hidden state of the top layer, so
    everything the model knows about early samples has to survive ``length`` steps of
    the recurrence: this is where vanishing gradients bite.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        hidden: size of the hidden state.
        n_layers: stacked recurrent layers.
        length: input length (40 for MNIST-1D).
        n_classes: number of output logits.

    Input ``(N, length)`` float32; output logits ``(N, n_classes)`` float32.

    Raises:
        ValueError: an unknown ``cell`` or a non-positive size.
    """

    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cell: str = "gru", hidden: int = 32, n_layers: int = 1,
                 length: int = 40, n_classes: int = 10):
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"RecurrentClassifier: cell must be one of {sorted(self.CELLS)}, got {cell!r}")
        _check_ints("RecurrentClassifier", hidden=hidden, n_layers=n_layers, length=length, n_classes=n_classes)
        self.cell, self.length = cell, length
        self.rnn = self.CELLS[cell](1, hidden, num_layers=n_layers, batch_first=True)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(_as_sequence(x, self.length, "RecurrentClassifier"))  # (N, length, hidden)
        return self.classifier(out[:, -1])


class MessagePassingGNN(nn.Module):
    """A graph neural network that treats the signal as a graph: one node per sample.

    The graph links every sample to the ``k`` samples before and after it
    (``k = 1`` is the path graph).  A node starts with two features, its value and
    its position ``t / (length - 1)``, embedded to ``hidden`` numbers.  Each of
    ``rounds`` message-passing rounds (Gilmer et al., 2017, "Neural message passing
    for quantum chemistry") then does, for every node ``i`` with neighbours ``N(i)``:

    * message and aggregation: ``m_i = mean_{j in N(i)} h_j`` (a mean, so every node
      gets the same scale whatever its degree);
    * update: ``h_i <- h_i + MLP([h_i, m_i])`` (a residual update by a 2-layer MLP).

    A graph-level readout (mean and max over the nodes, concatenated) feeds a linear
    layer.  The adjacency is a fixed ``(length, length)`` buffer, so aggregation is
    one batched matrix product; no graph library is needed.

    Args:
        hidden: node-state size.
        rounds: message-passing rounds; the receptive field grows by ``k`` per round.
        k: neighbours on each side in time.
        length: number of nodes (40 for MNIST-1D).
        n_classes: number of output logits.

    Input ``(N, length)`` float32; output logits ``(N, n_classes)`` float32.

    Raises:
        ValueError: a non-positive size, or ``k >= length``.
    """

    def __init__(self, hidden: int = 32, rounds: int = 3, k: int = 2, length: int = 40, n_classes: int = 10):
        super().__init__()
        _check_ints("MessagePassingGNN", hidden=hidden, rounds=rounds, k=k, length=length, n_classes=n_classes)
        if k >= length:
            raise ValueError(f"MessagePassingGNN: need k < length, got k={k}, length={length}")
        self.length = length
        t = torch.arange(length)
        adj = ((t[:, None] - t[None, :]).abs() <= k) & (t[:, None] != t[None, :])
        self.register_buffer("adjacency", adj.float() / adj.sum(1, keepdim=True))  # row-normalized: a mean
        self.register_buffer("position", (t.float() / max(length - 1, 1)).view(1, length, 1))
        self.embed = nn.Linear(2, hidden)
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(rounds))
        self.classifier = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_sequence(x, self.length, "MessagePassingGNN")          # (N, L, 1)
        h = self.embed(torch.cat([x, self.position.expand_as(x)], -1))   # (N, L, hidden)
        for update in self.updates:
            m = self.adjacency @ h                                       # mean over neighbours
            h = h + update(torch.cat([h, m], -1))
        readout = torch.cat([h.mean(1), h.amax(1)], -1)                  # (N, 2 * hidden)
        return self.classifier(readout)


class EncoderBlock(nn.Module):
    """One pre-norm Transformer encoder layer, written out (Vaswani et al., 2017, "Attention is all you need").

    For tokens ``x`` of shape ``(N, T, d_model)``::

        x = x + MultiHeadSelfAttention(LayerNorm(x))
        x = x + FeedForward(LayerNorm(x))            # Linear -> GELU -> Linear

    Self-attention per head: ``softmax(Q K^T / sqrt(d_head)) V`` with ``Q, K, V``
    linear maps of the tokens; the heads are concatenated and mixed by a linear
    layer.  It computes the same function as PyTorch's
    ``nn.TransformerEncoderLayer(d_model, n_heads, ff, dropout=0, activation="gelu",
    batch_first=True, norm_first=True)`` (the unit tests check this), but as plain
    matrix products, which ``torch.utils.flop_counter`` can count (PyTorch's fused
    inference path for that layer is not counted).

    Args:
        d_model: token width; must be divisible by ``n_heads``.
        n_heads: attention heads.
        ff: hidden width of the feed-forward block.

    Input and output ``(N, T, d_model)`` float32.

    Raises:
        ValueError: a non-positive size, or ``d_model`` not divisible by ``n_heads``.
    """

    def __init__(self, d_model: int = 32, n_heads: int = 4, ff: int = 64):
        super().__init__()
        _check_ints("EncoderBlock", d_model=d_model, n_heads=n_heads, ff=ff)
        if d_model % n_heads:
            raise ValueError(f"EncoderBlock: d_model must be divisible by n_heads, "
                             f"got d_model={d_model}, n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)   # queries, keys and values of all heads at once
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / (d // self.n_heads) ** 0.5, dim=-1)  # (N, H, T, T)
        return self.out((weights @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ff(self.norm2(x))


class TransformerClassifier(nn.Module):
    """A small Transformer encoder (Vaswani et al., 2017) for MNIST-1D signals.

    The signal is cut into ``length / patch`` non-overlapping patches (tokens), each
    embedded by one linear layer, plus a learned positional embedding (as in
    Dosovitskiy et al., 2021, "An image is worth 16x16 words"); ``n_layers``
    :class:`EncoderBlock` layers mix the tokens by self-attention; a final LayerNorm
    and the mean over tokens feed a linear layer.

    Args:
        d_model: token width; must be divisible by ``n_heads``.
        n_heads: attention heads.
        n_layers: encoder layers (one keeps chapter 2 within its time budget).
        patch: samples per token; must divide ``length``.
        ff: hidden width of each layer's feed-forward block.
        length: input length (40 for MNIST-1D).
        n_classes: number of output logits.

    Input ``(N, length)`` float32; output logits ``(N, n_classes)`` float32.

    Raises:
        ValueError: a non-positive size, ``d_model`` not divisible by ``n_heads``, or
            ``patch`` not dividing ``length``.
    """

    def __init__(self, d_model: int = 32, n_heads: int = 4, n_layers: int = 1, patch: int = 4,
                 ff: int = 64, length: int = 40, n_classes: int = 10):
        super().__init__()
        _check_ints("TransformerClassifier", d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    patch=patch, ff=ff, length=length, n_classes=n_classes)
        if d_model % n_heads:
            raise ValueError(f"TransformerClassifier: d_model must be divisible by n_heads, "
                             f"got d_model={d_model}, n_heads={n_heads}")
        if length % patch:
            raise ValueError(f"TransformerClassifier: patch must divide length, got patch={patch}, length={length}")
        self.length, self.patch = length, patch
        self.embed = nn.Linear(patch, d_model)
        self.pos = nn.Parameter(torch.randn(1, length // patch, d_model) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(d_model, n_heads, ff) for _ in range(n_layers)))
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_sequence(x, self.length, "TransformerClassifier")
        tokens = self.embed(x.reshape(x.shape[0], self.length // self.patch, self.patch)) + self.pos  # shape[0], not len(x): keeps the batch axis dynamic in torch.export / ONNX
        return self.classifier(self.norm(self.blocks(tokens)).mean(1))


# ---------------------------------------------------------------------------
# Chapter 4: a residual MLP whose blocks can be removed (structured pruning of whole layers).
# ---------------------------------------------------------------------------

class Residual(nn.Module):
    """``y = x + body(x)``: a block with an identity path around it.

    Because of the identity path, the block can be removed (replaced by ``nn.Identity``)
    and the network still computes something sensible; Veit et al. (2016), "Residual
    networks behave like ensembles of relatively shallow networks", showed that
    deleting single blocks of a trained residual network often costs little accuracy
    (:func:`nnbook.prune.remove_layer`).

    Args:
        body: a module whose output has the shape of its input.

    Input and output: tensors of the same shape.

    Raises:
        TypeError: ``body`` is not an ``nn.Module``.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        from ._checks import check_model

        check_model(body, "Residual", "body")
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def residual_mlp(in_features: int = 64, width: int = 64, blocks: int = 4, n_classes: int = 10) -> nn.Sequential:
    """A small residual MLP: ``Flatten → Linear → ReLU → blocks × Residual(Linear → ReLU → Linear) → ReLU → Linear``.

    Input ``(N, ...)`` with ``in_features`` values per sample; output logits ``(N, n_classes)``.
    The blocks are children ``"3"``, ``"4"``, ... of the returned ``nn.Sequential``.

    Raises:
        ValueError: a non-positive size (``blocks`` may be 0).

    Examples:
        >>> import torch
        >>> residual_mlp(64, 16, blocks=2)(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """
    _check_ints("residual_mlp", in_features=in_features, width=width, n_classes=n_classes)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"residual_mlp: blocks must be an int >= 0, got {blocks!r}")
    body = [Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)))
            for _ in range(blocks)]
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(), *body,
                         nn.ReLU(), nn.Linear(width, n_classes))
