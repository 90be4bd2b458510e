"""Multimodal networks: a three-modality digits data set, encoders, fusion, alignment, invariance.

Chapter 8 builds everything from five pieces, all defined here:

* **Data** — :func:`load_multimodal_digits`: every sample is an 8×8 image (scikit-learn
  digits), a 40-step signal (MNIST-1D) and a short token sequence (a noisy spelling of
  the class word, such as ``"sevrn"``), paired *by class* with a fixed seed.  Each
  modality is corrupted on purpose so that none of them is sufficient on its own.
* **Encoders** — one small network per modality (:class:`ImageEncoder`,
  :class:`SignalEncoder`, :class:`TokenEncoder`), all ending in the same feature size ``d``.
* **Fusion** — early (:class:`EarlyFusionClassifier`), feature-level
  (:class:`ConcatFusion`, :class:`MeanFusion`, :class:`WeightedFusion`,
  :class:`AttentionFusion`, :class:`TensorFusion`, :class:`LowRankFusion`,
  :class:`CoAttentionFusion`) and decision-level (:class:`LateFusion`), built by
  :func:`make_model`.
* **Alignment** — :class:`ContrastiveAligner` with the symmetric InfoNCE loss
  (:func:`info_nce`) and :func:`recall_at_k` retrieval.
* **Robustness and invariance** — modality dropout (:func:`modality_dropout_mask`,
  ``train(..., modality_dropout=p)``) and a gradient-reversal modality discriminator
  (:func:`grad_reverse`, :class:`InvariantAdapter`, :func:`train_invariant`,
  :func:`modality_probe_accuracy`).

Conventions used throughout:

* A batch of inputs is a ``dict`` mapping a modality name (``"image"``, ``"signal"``,
  ``"tokens"``) to a tensor whose first dimension is the batch.
* A *presence mask* is a bool tensor of shape ``(batch, n_modalities)``, one column per
  modality of the model in the model's order: ``True`` where that modality is present.
  A modality may be left out of the inputs only when a mask says it is absent.
* Features are stacked into a tensor of shape ``(batch, n_modalities, d)``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .cache import cached
from .train import History

MODALITIES: tuple[str, ...] = ("image", "signal", "tokens")
CLASS_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four",
                                "five", "six", "seven", "eight", "nine")
#: The token vocabulary: index 0 is padding, then the 15 letters that occur in the class words.
VOCAB: tuple[str, ...] = ("<pad>",) + tuple(sorted(set("".join(CLASS_WORDS))))
PAD = 0
MAX_LEN = max(len(w) for w in CLASS_WORDS)  # 5 characters
FUSIONS: tuple[str, ...] = ("early", "concat", "mean", "weighted", "attention",
                            "tensor", "lowrank", "coattention")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Corruption:
    """How strongly each modality is corrupted when the data set is built.

    Attributes:
        image_noise: standard deviation of Gaussian noise added to the pixels (which
            lie in ``[0, 1]``); the result is clipped back to ``[0, 1]``.
        image_occlusion: side, in pixels, of a square patch set to 0 at a random place
            of every image (0 = no occlusion; at most 8).
        signal_noise: standard deviation of Gaussian noise added to every step of the
            MNIST-1D signal (whose own standard deviation is about 1).
        signal_occlusion: length, in steps, of a random window of the signal set to 0
            (0 = none; at most 40).
        token_substitution: probability that a character is replaced by a letter drawn
            uniformly from the vocabulary (possibly the same letter).
        token_drop: probability that a character is deleted (at least one always stays).
    """

    image_noise: float = 0.3
    image_occlusion: int = 3
    signal_noise: float = 0.25
    signal_occlusion: int = 6
    token_substitution: float = 0.35
    token_drop: float = 0.15

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"Corruption.{f.name} must be a number >= 0, got {v!r}")
        if self.token_substitution > 1 or self.token_drop > 1:
            raise ValueError("Corruption.token_substitution and token_drop are probabilities in [0, 1], "
                             f"got {self.token_substitution} and {self.token_drop}")
        if self.image_occlusion > 8 or self.signal_occlusion > 40:
            raise ValueError(f"occlusions must fit the input (image <= 8 px, signal <= 40 steps), "
                             f"got {self.image_occlusion} and {self.signal_occlusion}")


@dataclass(frozen=True)
class MultimodalPart:
    """One split (train, validation or test) of the multimodal digits.

    Attributes:
        image: ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` (noisy, occluded digits).
        signal: ``(N, 40)`` float32 (noisy, partly blanked MNIST-1D signals).
        tokens: ``(N, 5)`` int64 character indices into :data:`VOCAB`, right-padded with 0.
        y: ``(N,)`` int64 class labels in ``0..9``, shared by the three modalities.
        image_source: ``(N,)`` int64, which original digits image each sample uses:
            ``0..1346`` index the digits training images, ``1347..1796`` the test images
            (``1347 + i`` for test image ``i``).
        signal_source: ``(N,)`` int64, likewise for MNIST-1D: ``0..3999`` training,
            ``4000..4999`` test signals.
        token_errors: ``(N,)`` int64, how many characters were substituted or dropped
            (a substitution that drew the same letter is not counted).
    """

    image: torch.Tensor
    signal: torch.Tensor
    tokens: torch.Tensor
    y: torch.Tensor
    image_source: torch.Tensor
    signal_source: torch.Tensor
    token_errors: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self) -> dict[str, torch.Tensor]:
        """The model inputs ``{"image": ..., "signal": ..., "tokens": ...}``."""
        return {"image": self.image, "signal": self.signal, "tokens": self.tokens}

    def take(self, idx) -> "MultimodalPart":
        """The samples at ``idx`` (an index tensor, array or slice), as a new part."""
        return MultimodalPart(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass(frozen=True)
class MultimodalDigits:
    """The multimodal digits data set returned by :func:`load_multimodal_digits`.

    Attributes:
        train, val, test: the three :class:`MultimodalPart` splits.
        corruption: the :class:`Corruption` used to build it.
        n_classes: 10.
    """

    train: MultimodalPart
    val: MultimodalPart
    test: MultimodalPart
    corruption: Corruption
    n_classes: int = 10

    def __repr__(self) -> str:
        return (f"MultimodalDigits(train {len(self.train)}, val {len(self.val)}, test {len(self.test)}; "
                "image (N, 1, 8, 8) float32, signal (N, 40) float32, tokens (N, 5) int64, y (N,) int64)")


def encode_word(word: str) -> list[int]:
    """Character indices of ``word`` in :data:`VOCAB` (no padding).

    Raises:
        TypeError: ``word`` is not a string.
        ValueError: a character is not in the vocabulary, or the word is empty or longer than 5.
    """
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    if not 1 <= len(word) <= MAX_LEN:
        raise ValueError(f"word must have 1..{MAX_LEN} characters, got {word!r}")
    bad = sorted(set(word) - set(VOCAB[1:]))
    if bad:
        raise ValueError(f"characters {bad} of {word!r} are not in the vocabulary {''.join(VOCAB[1:])}")
    return [VOCAB.index(ch) for ch in word]


def decode_tokens(tokens: torch.Tensor) -> list[str]:
    """Turn token indices back into strings, dropping padding.

    Args:
        tokens: int64 tensor ``(N, L)`` (or ``(L,)`` for one sequence).

    Returns:
        A list of ``N`` strings (one string in a list for a 1-D input).
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    rows = tokens.reshape(-1, tokens.shape[-1]).tolist()
    return ["".join(VOCAB[i] for i in row if i != PAD) for row in rows]


def noisy_spelling(label: int, substitution: float, drop: float, rng: np.random.Generator) -> tuple[list[int], int]:
    """A corrupted spelling of the class word ``CLASS_WORDS[label]``.

    Each character is independently deleted with probability ``drop`` or else replaced
    by a uniformly drawn letter with probability ``substitution``; at least one
    character always survives.

    Returns:
        ``(token_ids, n_errors)``: the indices (unpadded, length 1..5) and the number of
        characters that were dropped or changed into a different letter.
    """
    out, errors = [], 0
    for t in encode_word(CLASS_WORDS[label]):
        r = rng.random()
        if r < drop:
            errors += 1
            continue
        if r < drop + substitution * (1 - drop):
            new = int(rng.integers(1, len(VOCAB)))
            errors += new != t
            t = new
        out.append(t)
    if not out:  # everything was dropped: keep one random letter of the word
        out = [encode_word(CLASS_WORDS[label])[int(rng.integers(len(CLASS_WORDS[label])))]]
        errors -= 1
    return out, errors


def _pair_by_class(img_labels: np.ndarray, sig_labels: np.ndarray, n: int, rng: np.random.Generator):
    """Indices into the image and signal pools for ``n`` class-balanced pairs.

    For each class the pool's samples of that class are shuffled and taken in turn
    (cycling when more pairs than samples are needed), so every sample of the pool is
    used about equally often.
    """
    counts = [n // 10 + (c < n % 10) for c in range(10)]
    img_idx, sig_idx, labels = [], [], []
    for c, k in enumerate(counts):
        for pool_labels, dest in ((img_labels, img_idx), (sig_labels, sig_idx)):
            members = rng.permutation(np.flatnonzero(pool_labels == c))
            if len(members) == 0:
                raise ValueError(f"class {c} has no sample in a pool; cannot pair")
            dest.append(members[np.arange(k) % len(members)])
        labels.append(np.full(k, c))
    order = rng.permutation(n)
    return (np.concatenate(img_idx)[order], np.concatenate(sig_idx)[order], np.concatenate(labels)[order])


def _corrupt_images(x: np.ndarray, c: Corruption, rng: np.random.Generator) -> np.ndarray:
    x = x + c.image_noise * rng.standard_normal(x.shape)
    k = c.image_occlusion
    if k:
        for i in range(len(x)):
            r, s = rng.integers(0, 8 - k + 1, size=2)
            x[i, :, r:r + k, s:s + k] = 0.0
    return np.clip(x, 0.0, 1.0)


def _corrupt_signals(x: np.ndarray, c: Corruption, rng: np.random.Generator) -> np.ndarray:
    x = x + c.signal_noise * rng.standard_normal(x.shape)
    k = c.signal_occlusion
    if k:
        for i in range(len(x)):
            s = rng.integers(0, 40 - k + 1)
            x[i, s:s + k] = 0.0
    return x


def _build_part(images, img_labels, img_offset, signals, sig_labels, sig_offset, n, c, rng) -> dict:
    ii, si, y = _pair_by_class(img_labels, sig_labels, n, rng)
    tokens = np.zeros((n, MAX_LEN), dtype=np.int64)
    errors = np.zeros(n, dtype=np.int64)
    for k, label in enumerate(y):
        ids, errors[k] = noisy_spelling(int(label), c.token_substitution, c.token_drop, rng)
        tokens[k, :len(ids)] = ids
    return {
        "image": torch.tensor(_corrupt_images(images[ii].astype(np.float64), c, rng), dtype=torch.float32),
        "signal": torch.tensor(_corrupt_signals(signals[si].astype(np.float64), c, rng), dtype=torch.float32),
        "tokens": torch.from_numpy(tokens),
        "y": torch.from_numpy(y.astype(np.int64)),
        "image_source": torch.from_numpy(ii.astype(np.int64) + img_offset),
        "signal_source": torch.from_numpy(si.astype(np.int64) + sig_offset),
        "token_errors": torch.from_numpy(errors),
    }


def _check_size(name: str, n, minimum: int = 10) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum} (one sample per class at least), got {n}")
    return int(n)


def build_multimodal_digits(n_train: int = 2000, n_val: int = 500, n_test: int = 1000,
                            val_fraction: float = 0.2, corruption: Corruption | None = None,
                            seed: int = 0) -> MultimodalDigits:
    """Build the multimodal digits from scikit-learn digits and MNIST-1D (no download, no cache).

    Splits never share an underlying sample: the digits *test* images and MNIST-1D
    *test* signals pair only into the test split; the training pools (1347 images,
    4000 signals) are first divided, stratified by class, into a training part and a
    validation part (``val_fraction`` of each pool), and the training and validation
    splits are paired from those parts only.  Within a split, an image or signal may
    appear in several pairs (with different noise and a different partner).

    Args:
        n_train, n_val, n_test: number of (image, signal, tokens) samples per split, class-balanced.
        val_fraction: fraction of each training pool reserved for validation, in ``(0, 1)``.
        corruption: per-modality corruption; :class:`Corruption` defaults when ``None``.
        seed: seed of the pool division, the pairing and every corruption draw.

    Returns:
        A :class:`MultimodalDigits` (see :class:`MultimodalPart` for shapes and dtypes).

    Raises:
        TypeError: a size is not an int, or ``corruption`` is not a :class:`Corruption`.
        ValueError: a size < 10, or ``val_fraction`` outside ``(0, 1)``.
    """
    from sklearn.model_selection import train_test_split

    from .data import load_digits, load_mnist1d

    n_train, n_val, n_test = (_check_size(k, v) for k, v in
                              (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)))
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    corruption = Corruption() if corruption is None else corruption
    if not isinstance(corruption, Corruption):
        raise TypeError(f"corruption must be an nnbook.multimodal.Corruption, got {type(corruption).__name__}")
    rng = np.random.default_rng(seed)
    dig, sig = load_digits(), load_mnist1d()
    di, dl, si, sl = (dig.x_train.numpy(), dig.y_train.numpy(), sig.x_train.numpy(), sig.y_train.numpy())
    d_tr, d_va = train_test_split(np.arange(len(dl)), test_size=val_fraction, random_state=seed, stratify=dl)
    s_tr, s_va = train_test_split(np.arange(len(sl)), test_size=val_fraction, random_state=seed, stratify=sl)
    parts = {}
    for name, d_idx, s_idx, n in (("train", d_tr, s_tr, n_train), ("val", d_va, s_va, n_val)):
        p = _build_part(di[d_idx], dl[d_idx], 0, si[s_idx], sl[s_idx], 0, n, corruption, rng)
        p["image_source"] = torch.from_numpy(d_idx)[p["image_source"]]  # back to pool indices
        p["signal_source"] = torch.from_numpy(s_idx)[p["signal_source"]]
        parts[name] = p
    parts["test"] = _build_part(dig.x_test.numpy(), dig.y_test.numpy(), len(dl),
                                sig.x_test.numpy(), sig.y_test.numpy(), len(sl), n_test, corruption, rng)
    return MultimodalDigits(**{k: MultimodalPart(**v) for k, v in parts.items()}, corruption=corruption)


def load_multimodal_digits(n_train: int = 2000, n_val: int = 500, n_test: int = 1000,
                           val_fraction: float = 0.2, corruption: Corruption | None = None,
                           seed: int = 0) -> MultimodalDigits:
    """:func:`build_multimodal_digits`, cached on disk by :func:`nnbook.cache.cached`.

    Same arguments, result and errors; the cache key holds every argument, so a
    changed corruption or seed builds a new entry.
    """
    corruption = Corruption() if corruption is None else corruption
    if not isinstance(corruption, Corruption):
        raise TypeError(f"corruption must be an nnbook.multimodal.Corruption, got {type(corruption).__name__}")
    config = {"version": 1, "n_train": n_train, "n_val": n_val, "n_test": n_test,
              "val_fraction": val_fraction, "seed": seed,
              "corruption": {f.name: getattr(corruption, f.name) for f in fields(corruption)}}

    def build():
        ds = build_multimodal_digits(n_train, n_val, n_test, val_fraction, corruption, seed)
        return {s: {f.name: getattr(getattr(ds, s), f.name) for f in fields(MultimodalPart)}
                for s in ("train", "val", "test")}

    raw = cached("multimodal_digits", config, build)
    return MultimodalDigits(**{s: MultimodalPart(**raw[s]) for s in ("train", "val", "test")},
                            corruption=corruption)


# ---------------------------------------------------------------------------
# Encoders: each maps its modality to a sequence of d-dimensional features and a pooled vector
# ---------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, valid: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``valid`` is True.

    Args:
        x: ``(B, T, d)`` (or any shape with ``valid`` broadcastable after adding a last dim).
        valid: bool ``(B, T)``.

    Returns:
        ``(B, d)``; rows with no valid position give zeros.
    """
    w = valid.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim) / w.sum(dim).clamp_min(1.0)


class ImageEncoder(nn.Module):
    """Small CNN for ``(B, 1, 8, 8)`` images.

    ``conv 3×3 (1→width) → BN → ReLU → max-pool 2 → conv 3×3 (width→d) → BN → ReLU``
    gives a 4×4 map: :meth:`sequence` returns its 16 region features ``(B, 16, d)``;
    :meth:`forward` flattens them (keeping *where* each stroke is) through
    ``Linear(16·d → d) → ReLU``, giving ``(B, d)``.
    """

    def __init__(self, d: int = 32, width: int = 16):
        super().__init__()
        self.d = d
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(2),
                                  nn.Conv2d(width, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU())
        self.fc = nn.Linear(16 * d, d)

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x).flatten(2).transpose(1, 2)  # (B, 16, d)
        return h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.fc(seq.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(x))


class SignalEncoder(nn.Module):
    """Small 1-D CNN for ``(B, 40)`` signals.

    Two blocks ``conv k=5 → BN → ReLU → max-pool 2`` (channels 1→width→d) give 10 time
    steps: :meth:`sequence` returns them, ``(B, 10, d)``; :meth:`forward` flattens them
    through ``Linear(10·d → d) → ReLU``, giving ``(B, d)``.
    """

    def __init__(self, d: int = 32, width: int = 16):
        super().__init__()
        self.d = d
        self.conv = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.MaxPool1d(2),
                                  nn.Conv1d(width, d, 5, padding=2), nn.BatchNorm1d(d), nn.ReLU(),
                                  nn.MaxPool1d(2))
        self.fc = nn.Linear(10 * d, d)

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x.unsqueeze(1)).transpose(1, 2)  # (B, 10, d)
        return h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.fc(seq.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(x))


class TokenEncoder(nn.Module):
    """Character embedding + LSTM for ``(B, L)`` int64 token sequences, right-padded with 0.

    :meth:`sequence` gives the LSTM outputs ``(B, L, d)`` and the non-padding mask;
    :meth:`forward` the output at each sequence's last real character, ``(B, d)``.
    """

    def __init__(self, d: int = 32, embed: int = 16, vocab: int = len(VOCAB)):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        self.lstm = nn.LSTM(embed, d, batch_first=True)

    def sequence(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, _ = self.lstm(self.embed(tokens))
        return out, tokens != PAD

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        last = (valid.sum(1) - 1).clamp_min(0)  # index of the last real character
        return seq[torch.arange(len(seq), device=seq.device), last]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(tokens))


ENCODERS = {"image": ImageEncoder, "signal": SignalEncoder, "tokens": TokenEncoder}


def make_encoder(modality: str, d: int = 32) -> nn.Module:
    """The encoder of one modality with feature size ``d``.

    Raises:
        ValueError: unknown modality name, or ``d < 1``.
    """
    if modality not in ENCODERS:
        raise ValueError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"feature size d must be an int >= 1, got {d!r}")
    return ENCODERS[modality](d)


# ---------------------------------------------------------------------------
# Feature-level fusion: (B, M, d) features + (B, M) presence mask -> (B, out_features)
# ---------------------------------------------------------------------------
def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` in which positions with ``mask == False`` get weight 0.

    A row with no True position gets all-zero weights (not NaN).
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(w, nan=0.0)


class ConcatFusion(nn.Module):
    """Concatenate the modality features (absent ones as zeros): ``(B, M, d) -> (B, M*d)``."""

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        self.out_features = n_modalities * d

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (feats * mask.unsqueeze(-1)).flatten(1)


class MeanFusion(nn.Module):
    """Average the features of the present modalities: ``(B, M, d) -> (B, d)``."""

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        self.out_features = d

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(feats, mask)


class WeightedFusion(nn.Module):
    """Weighted sum with *learned, input-independent* modality weights ``softmax(w)``.

    ``w`` holds one learnable logit per modality; the softmax runs over the present
    modalities of each sample.  ``(B, M, d) -> (B, d)``.
    """

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        self.out_features = d
        self.logits = nn.Parameter(torch.zeros(n_modalities))

    def weights(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modality weights ``(B, M)``, each row summing to 1 over the present modalities."""
        return masked_softmax(self.logits.expand_as(mask), mask, dim=1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(feats, mask).unsqueeze(-1) * feats).sum(1)


class AttentionFusion(nn.Module):
    """Attention *over modalities*: each sample weighs its own modality features.

    Additive scoring ``s_m = v^T tanh(W f_m + b)`` per sample and modality, then a
    softmax over the modality axis (``dim=1``, present modalities only) and a weighted
    sum over that same axis, so no sample's output depends on another sample in the
    batch.  ``(B, M, d) -> (B, d)``.
    """

    def __init__(self, n_modalities: int, d: int, hidden: int | None = None):
        super().__init__()
        self.out_features = d
        self.score = nn.Sequential(nn.Linear(d, hidden or d), nn.Tanh(), nn.Linear(hidden or d, 1, bias=False))

    def weights(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, M)``: softmax over modalities, rows sum to 1."""
        return masked_softmax(self.score(feats).squeeze(-1), mask, dim=1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(feats, mask).unsqueeze(-1) * feats).sum(1)


class TensorFusion(nn.Module):
    """Tensor fusion (Zadeh et al., 2017, "Tensor Fusion Network for Multimodal Sentiment Analysis").

    Each modality's feature is projected to ``p`` dimensions and extended with a constant
    1, ``z_m = [1, P_m f_m]``; the fused vector is the flattened outer product
    ``z_1 ⊗ z_2 ⊗ ... ⊗ z_M`` of size ``(p+1)^M``.  The constant 1 keeps every unimodal
    and lower-order term, so an absent modality (``z_m = [1, 0, ..., 0]``) leaves the
    others' terms intact.  ``(B, M, d) -> (B, (p+1)^M)``.
    """

    def __init__(self, n_modalities: int, d: int, p: int = 8):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d, p) for _ in range(n_modalities))
        self.out_features = (p + 1) ** n_modalities

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ones = feats.new_ones(len(feats), 1)
        out = ones
        for m, proj in enumerate(self.proj):
            z = torch.cat([ones, proj(feats[:, m]) * mask[:, m:m + 1]], dim=1)  # (B, p+1)
            out = (out.unsqueeze(2) * z.unsqueeze(1)).flatten(1)  # outer product, flattened
        return out


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018, "Efficient Low-rank Multimodal Fusion
    with Modality-Specific Factors").

    Computes what a :class:`TensorFusion` followed by a linear layer computes, with that
    layer's weight tensor restricted to rank ``r``:
    ``h = sum_i prod_m (z_m W_m^{(i)}) + b`` with ``z_m = [1, f_m]`` and one factor
    ``W_m^{(i)}`` of shape ``(d+1, out)`` per modality and rank, so the cost grows linearly
    rather than exponentially with the number of modalities.  ``(B, M, d) -> (B, out)``.
    """

    def __init__(self, n_modalities: int, d: int, rank: int = 4, out: int | None = None):
        super().__init__()
        out = out or d
        self.out_features = out
        self.factors = nn.Parameter(torch.randn(n_modalities, rank, d + 1, out) / math.sqrt(d + 1))
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = torch.cat([feats.new_ones(*feats.shape[:2], 1), feats * mask.unsqueeze(-1)], dim=2)  # (B, M, d+1)
        per_mod = torch.einsum("bmi,mrio->bmro", z, self.factors)  # (B, M, rank, out)
        return per_mod.prod(dim=1).sum(dim=1) + self.bias


class CoAttentionFusion(nn.Module):
    """Cross-modal (co-)attention: each modality's summary attends over the *elements*
    of every other modality (image regions, signal time steps, characters).

    For modalities ``a != b``: ``c_{a<-b} = softmax(q_a K_b^T / sqrt(d)) V_b`` with
    ``q_a = W_q f_a`` and ``K_b, V_b = W_k S_b, W_v S_b`` from ``b``'s sequence ``S_b``
    (padding and absent modalities masked out).  The output for ``a`` is
    ``f_a + mean_b c_{a<-b}``; the fused vector concatenates them:
    ``(B, M*d)``.  Needs the encoders' sequences (``uses_sequences = True``).
    """

    uses_sequences = True

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        self.out_features = n_modalities * d
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor,
                seqs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        M, d = feats.shape[1], feats.shape[2]
        outs = []
        for a in range(M):
            q = self.q(feats[:, a]).unsqueeze(1)  # (B, 1, d)
            ctx, n_other = torch.zeros_like(feats[:, a]), torch.zeros_like(mask[:, :1], dtype=feats.dtype)
            for b in range(M):
                if b == a:
                    continue
                seq, valid = seqs[b]
                scores = (q @ self.k(seq).transpose(1, 2)).squeeze(1) / math.sqrt(d)  # (B, T_b)
                w = masked_softmax(scores, valid & mask[:, b:b + 1], dim=1)
                ctx = ctx + (w.unsqueeze(1) @ self.v(seq)).squeeze(1)
                n_other = n_other + mask[:, b:b + 1]
            outs.append((feats[:, a] + ctx / n_other.clamp_min(1)) * mask[:, a:a + 1])
        return torch.cat(outs, dim=1)


FEATURE_FUSIONS = {"concat": ConcatFusion, "mean": MeanFusion, "weighted": WeightedFusion,
                   "attention": AttentionFusion, "tensor": TensorFusion, "lowrank": LowRankFusion,
                   "coattention": CoAttentionFusion}


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def _batch_size_of(inputs, modalities, where: str) -> int:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"{where}: inputs must be a dict {{modality: tensor}}, got {type(inputs).__name__}")
    sizes = {}
    for m in modalities:
        x = inputs.get(m)
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: inputs[{m!r}] must be a torch.Tensor, got {type(x).__name__}")
        sizes[m] = len(x)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{where}: all modalities must have the same batch size, got {sizes}")
    return next(iter(sizes.values()), 0)


def check_inputs(inputs: Mapping[str, torch.Tensor], modalities: Sequence[str],
                 mask: torch.Tensor | None, where: str = "model") -> tuple[int, torch.Tensor]:
    """Validate a multimodal batch and return ``(batch_size, mask)``.

    Args:
        inputs: ``{modality: tensor}``; each tensor's first dimension is the batch.
        modalities: the modalities the model uses, in order.
        mask: bool presence mask ``(B, M)`` (or ``(M,)``, broadcast to every sample), or
            ``None`` meaning every modality is present.

    Returns:
        ``(B, mask)`` with ``mask`` a bool ``(B, M)`` tensor.

    Raises:
        TypeError: ``inputs`` is not a mapping, a value is not a tensor, or ``mask`` is
            not a tensor.
        ValueError: batch sizes differ between modalities; a modality is missing and no
            mask says it is absent; the mask has the wrong shape; a sample has no
            modality at all.
    """
    B = _batch_size_of(inputs, modalities, where)
    missing = [m for m in modalities if inputs.get(m) is None]
    if B == 0:
        raise ValueError(f"{where}: got no input for any of the modalities {list(modalities)}")
    if mask is None:
        if missing:
            raise ValueError(f"{where}: modality {missing} missing from the inputs; pass "
                             f"mask=(B, {len(modalities)}) bool tensor saying which modalities are present")
        return B, torch.ones(B, len(modalities), dtype=torch.bool)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{where}: mask must be a bool torch.Tensor, got {type(mask).__name__}")
    mask = mask.bool()
    if mask.dim() == 1:
        mask = mask.expand(B, -1)
    if tuple(mask.shape) != (B, len(modalities)):
        raise ValueError(f"{where}: mask must have shape (batch, n_modalities) = {(B, len(modalities))} "
                         f"for modalities {list(modalities)}, got {tuple(mask.shape)}")
    for j, m in enumerate(modalities):
        if m in missing and bool(mask[:, j].any()):
            raise ValueError(f"{where}: the mask says modality {m!r} is present, but it is missing from the inputs")
    if not bool(mask.any(1).all()):
        raise ValueError(f"{where}: every sample needs at least one present modality")
    return B, mask


def _check_modalities(modalities) -> tuple[str, ...]:
    if isinstance(modalities, str) or not isinstance(modalities, Iterable):
        raise TypeError(f"modalities must be a sequence of names, got {modalities!r}")
    modalities = tuple(modalities)
    bad = [m for m in modalities if m not in MODALITIES]
    if not modalities or bad or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {MODALITIES}, got {modalities}")
    return modalities


class FusionClassifier(nn.Module):
    """Per-modality encoders, a feature-level fusion module and an MLP head.

    ``forward(inputs, mask=None) -> logits (B, n_classes)``.  Absent modalities (mask
    ``False``, or left out of ``inputs``) are not encoded; their features are zeros and
    the fusion module ignores them.  With a single modality and ``ConcatFusion`` this is
    a unimodal classifier.
    """

    def __init__(self, modalities: Sequence[str], fusion: nn.Module, d: int = 32, n_classes: int = 10):
        super().__init__()
        self.modalities = _check_modalities(modalities)
        self.d = d
        self.encoders = nn.ModuleDict({m: make_encoder(m, d) for m in self.modalities})
        self.fusion = fusion
        self.head = nn.Sequential(nn.Linear(fusion.out_features, d), nn.ReLU(), nn.Linear(d, n_classes))

    def features(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None):
        """Encode every present modality.

        Returns:
            ``(feats, mask, seqs)``: features ``(B, M, d)`` (zeros where absent), the bool
            ``(B, M)`` mask, and per modality the encoder's ``(sequence, valid)`` pair
            (``None`` for a modality missing from the inputs).
        """
        B, mask = check_inputs(inputs, self.modalities, mask, type(self).__name__)
        dev = next(self.parameters()).device
        mask = mask.to(dev)
        feats, seqs = [], []
        for m in self.modalities:
            x = inputs.get(m)
            if x is None:
                feats.append(torch.zeros(B, self.d, device=dev))
                seqs.append((torch.zeros(B, 1, self.d, device=dev), torch.zeros(B, 1, dtype=torch.bool, device=dev)))
                continue
            enc = self.encoders[m]
            seq, valid = enc.sequence(x.to(dev))
            feats.append(enc.pool(seq, valid))
            seqs.append((seq, valid))
        return torch.stack(feats, dim=1), mask, seqs

    def forward(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        feats, mask, seqs = self.features(inputs, mask)
        feats = feats * mask.unsqueeze(-1)
        if getattr(self.fusion, "uses_sequences", False):
            fused = self.fusion(feats, mask, seqs)
        else:
            fused = self.fusion(feats, mask)
        return self.head(fused)

    def fusion_weights(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """The per-sample modality weights ``(B, M)`` of a weighted or attention fusion.

        Raises:
            TypeError: the fusion module has no modality weights.
        """
        if not hasattr(self.fusion, "weights"):
            raise TypeError(f"{type(self.fusion).__name__} has no modality weights "
                            "(only WeightedFusion and AttentionFusion do)")
        feats, mask, _ = self.features(inputs, mask)
        return self.fusion.weights(feats * mask.unsqueeze(-1), mask)


class EarlyFusionClassifier(nn.Module):
    """Early (data-level) fusion: concatenate the raw inputs, then one MLP.

    The input vector is the flattened image (64 values), the signal (40) and the
    one-hot tokens (5 × 16 = 80); an absent modality contributes zeros.
    ``forward(inputs, mask=None) -> logits (B, n_classes)``.
    """

    SIZES = {"image": 64, "signal": 40, "tokens": MAX_LEN * len(VOCAB)}

    def __init__(self, modalities: Sequence[str] = MODALITIES, hidden: int = 64, n_classes: int = 10):
        super().__init__()
        self.modalities = _check_modalities(modalities)
        n_in = sum(self.SIZES[m] for m in self.modalities)
        self.mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, inputs: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        B, mask = check_inputs(inputs, self.modalities, mask, type(self).__name__)
        dev = next(self.parameters()).device
        parts = []
        for j, m in enumerate(self.modalities):
            x = inputs.get(m)
            if x is None:
                parts.append(torch.zeros(B, self.SIZES[m], device=dev))
                continue
            x = x.to(dev)
            x = F.one_hot(x, len(VOCAB)).float() if m == "tokens" else x.float()
            parts.append(x.flatten(1) * mask[:, j:j + 1].to(dev))
        return self.mlp(torch.cat(parts, dim=1))


def make_model(fusion: str = "concat", modalities: Sequence[str] = MODALITIES, d: int = 32,
               n_classes: int = 10, **fusion_kwargs) -> nn.Module:
    """Build a multimodal classifier by the name of its fusion method.

    Args:
        fusion: one of :data:`FUSIONS`: ``"early"`` (raw-input concatenation, an
            :class:`EarlyFusionClassifier`), or a feature-level fusion
            (``"concat"``, ``"mean"``, ``"weighted"``, ``"attention"``, ``"tensor"``,
            ``"lowrank"``, ``"coattention"``) wrapped in a :class:`FusionClassifier`.
            Decision-level fusion combines trained models: see :class:`LateFusion`.
        modalities: which of ``"image"``, ``"signal"``, ``"tokens"`` to use, in order; a
            single modality with ``"concat"`` gives a unimodal classifier.
        d: feature size of every encoder.
        n_classes: number of logits.
        fusion_kwargs: passed to the fusion module (``p`` for tensor, ``rank`` for
            lowrank, ``hidden`` for attention and early).

    Returns:
        An ``nn.Module`` with ``forward(inputs, mask=None) -> (B, n_classes)`` logits and a
        ``modalities`` attribute.

    Raises:
        TypeError: ``fusion`` is not a string.
        ValueError: unknown fusion or modality name.
    """
    if not isinstance(fusion, str):
        raise TypeError(f"fusion must be a string, got {type(fusion).__name__}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}: expected one of {', '.join(FUSIONS)} "
                         "(decision-level fusion: LateFusion(members, rule))")
    modalities = _check_modalities(modalities)
    if fusion == "early":
        return EarlyFusionClassifier(modalities, n_classes=n_classes, **fusion_kwargs)
    module = FEATURE_FUSIONS[fusion](len(modalities), d, **fusion_kwargs)
    return FusionClassifier(modalities, module, d=d, n_classes=n_classes)


class LateFusion(nn.Module):
    """Decision-level (late) fusion of separately trained unimodal classifiers.

    Rules:
        * ``"mean"``: average the members' logits over the present modalities;
        * ``"vote"``: majority vote of the members' predicted classes (ties broken by
          the averaged softmax probabilities); returns vote counts, not logits;
        * ``"stack"``: a linear meta-classifier on the concatenated log-probabilities
          (absent members give zeros), trained with :func:`fit_stacking` on data the
          members were not trained on.

    The members are not modified: their outputs are computed without gradients and in
    eval mode, and :func:`fit_stacking` optimizes the meta-classifier only.
    ``forward(inputs, mask=None) -> (B, n_classes)``.

    Raises:
        ValueError: unknown rule, a member using more than one modality, or two members
            for the same modality.
    """

    RULES = ("mean", "vote", "stack")

    def __init__(self, members: Sequence[nn.Module], rule: str = "mean", n_classes: int = 10):
        super().__init__()
        if rule not in self.RULES:
            raise ValueError(f"unknown late-fusion rule {rule!r}: expected one of {', '.join(self.RULES)}")
        mods = [tuple(getattr(m, "modalities", ())) for m in members]
        if any(len(t) != 1 for t in mods) or len({t[0] for t in mods}) != len(mods):
            raise ValueError(f"late fusion needs unimodal members with distinct modalities, got {mods}")
        self.rule, self.n_classes = rule, n_classes
        self.modalities = tuple(t[0] for t in mods)
        self.members = nn.ModuleList(members)
        self.meta = nn.Linear(len(members) * n_classes, n_classes) if rule == "stack" else None

    def train(self, mode: bool = True) -> "LateFusion":
        """Set the meta-classifier's mode; the members always stay in eval mode, so that
        fitting the meta-classifier never updates their batch-norm statistics."""
        super().train(mode)
        self.members.eval()
        return self

    def member_logits(self, inputs, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked member logits ``(B, M, n_classes)`` (zeros where absent) and the mask ``(B, M)``."""
        B, mask = check_inputs(inputs, self.modalities, mask, "LateFusion")
        dev = next(self.members.parameters()).device
        mask = mask.to(dev)
        out = torch.zeros(B, len(self.members), self.n_classes, device=dev)
        for j, (m, member) in enumerate(zip(self.modalities, self.members)):
            if inputs.get(m) is not None:
                with torch.no_grad():
                    out[:, j] = member({m: inputs[m]})
        return out * mask.unsqueeze(-1), mask

    def forward(self, inputs, mask=None) -> torch.Tensor:
        logits, mask = self.member_logits(inputs, mask)
        if self.rule == "mean":
            return masked_mean(logits, mask)
        if self.rule == "vote":
            votes = F.one_hot(logits.argmax(-1), self.n_classes).float() * mask.unsqueeze(-1)
            tie_break = masked_mean(logits.softmax(-1), mask)  # in [0, 1): never outweighs a vote
            return votes.sum(1) + 0.5 * tie_break
        logp = logits.log_softmax(-1) * mask.unsqueeze(-1)
        return self.meta(logp.flatten(1))


# ---------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------
def modality_dropout_mask(batch: int, n_modalities: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random presence mask for modality dropout.

    Each modality of each sample is dropped independently with probability ``p``; a
    sample that lost every modality gets one modality back, chosen uniformly.

    Returns:
        bool ``(batch, n_modalities)``, at least one ``True`` per row.

    Raises:
        ValueError: ``p`` outside ``[0, 1]``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout p must be in [0, 1], got {p}")
    keep = torch.rand(batch, n_modalities, generator=generator) >= p
    empty = ~keep.any(1)
    if empty.any():
        pick = torch.randint(n_modalities, (int(empty.sum()),), generator=generator)
        keep[empty.nonzero().squeeze(1), pick] = True
    return keep


def present(n: int, modalities: Sequence[str], drop: Sequence[str] = ()) -> torch.Tensor:
    """Presence mask ``(n, M)`` with the modalities named in ``drop`` absent for every sample.

    Raises:
        ValueError: a name in ``drop`` is not one of ``modalities``.
    """
    bad = [m for m in drop if m not in modalities]
    if bad:
        raise ValueError(f"cannot drop {bad}: the model's modalities are {list(modalities)}")
    return torch.tensor([m not in drop for m in modalities]).expand(n, -1).clone()


def classification_loss(model, inputs, y, mask):
    """Cross-entropy of ``model(inputs, mask)``; returns ``(loss, logits)``."""
    logits = model(inputs, mask=mask)
    return F.cross_entropy(logits, y), logits


def train(model: nn.Module, part: MultimodalPart, *, epochs: int = 5, lr: float = 1e-2, batch_size: int = 128,
          seed: int = 0, modality_dropout: float = 0.0, loss_fn: Callable | None = None,
          params: Iterable[torch.Tensor] | None = None, device=None) -> History:
    """Train a multimodal model with Adam on the samples of ``part``.

    Args:
        model: ``forward(inputs, mask=None)``; its ``modalities`` attribute gives the mask width.
        part: the training split.
        epochs, lr, batch_size: the usual; batches are shuffled by a generator seeded with ``seed``.
        modality_dropout: probability of dropping each modality of each training sample
            (:func:`modality_dropout_mask`); 0 trains with every modality present.
        loss_fn: ``loss_fn(model, inputs, y, mask) -> (loss, logits or None)``;
            :func:`classification_loss` by default.
        params: the parameters to optimize (all trainable ones by default).
        device: where to train (the model's current device by default).

    Returns:
        A :class:`nnbook.train.History` (training loss and accuracy per epoch, accuracy NaN
        when ``loss_fn`` returns no logits; ``epoch_time_s`` in seconds).

    Raises:
        TypeError: ``part`` is not a :class:`MultimodalPart`.
        ValueError: ``epochs`` or ``batch_size`` < 1.
    """
    if not isinstance(part, MultimodalPart):
        raise TypeError(f"train: part must be a MultimodalPart, got {type(part).__name__}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"train: epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    loss_fn = loss_fn or classification_loss
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n_mod = len(model.modalities)
    hist = History()
    data = {k: v.to(dev) for k, v in part.inputs().items()}
    y_all = part.y.to(dev)
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        total, correct, loss_sum, has_logits = 0, 0, 0.0, False
        for idx in torch.randperm(len(part), generator=gen).split(batch_size):
            idx = idx.to(dev)
            inputs, y = {k: v[idx] for k, v in data.items()}, y_all[idx]
            mask = modality_dropout_mask(len(idx), n_mod, modality_dropout, gen) if modality_dropout > 0 else None
            loss, logits = loss_fn(model, inputs, y, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            if logits is not None:
                has_logits = True
                correct += int((logits.detach().argmax(1) == y).sum())
            total += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        hist.epoch_time_s.append(time.perf_counter() - t0)
        hist.train_loss.append(loss_sum / total)
        hist.train_acc.append(correct / total if has_logits else float("nan"))
    model.eval()
    return hist


def predict(model: nn.Module, part: MultimodalPart, mask: torch.Tensor | None = None,
            drop: Sequence[str] = (), batch_size: int = 1000) -> torch.Tensor:
    """Outputs ``(N, n_classes)`` of ``model`` on ``part``, in eval mode, on the CPU.

    Args:
        mask: presence mask ``(N, M)``; or use ``drop`` to remove whole modalities
            (they are then also left out of the inputs).

    Raises:
        TypeError: ``part`` is not a :class:`MultimodalPart`.
    """
    if not isinstance(part, MultimodalPart):
        raise TypeError(f"predict: part must be a MultimodalPart, got {type(part).__name__}")
    if drop:
        mask = present(len(part), model.modalities, drop)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(part), batch_size):
            inputs = {k: v[s:s + batch_size].to(dev) for k, v in part.inputs().items() if k not in drop}
            m = None if mask is None else mask[s:s + batch_size]
            outs.append(model(inputs, mask=m).float().cpu())
    model.train(was_training)
    return torch.cat(outs)


def accuracy(model: nn.Module, part: MultimodalPart, mask: torch.Tensor | None = None, drop: Sequence[str] = ()) -> float:
    """Fraction of ``part`` that ``model`` classifies correctly (see :func:`predict` for ``mask`` and ``drop``)."""
    return float((predict(model, part, mask, drop).argmax(1) == part.y).float().mean())


def fit_stacking(late: LateFusion, part: MultimodalPart, epochs: int = 30, lr: float = 0.05, seed: int = 0) -> History:
    """Train the meta-classifier of a ``LateFusion(rule="stack")`` on ``part`` (use validation data).

    Raises:
        ValueError: ``late`` does not use the ``"stack"`` rule.
    """
    if not isinstance(late, LateFusion) or late.rule != "stack":
        raise ValueError("fit_stacking needs a LateFusion with rule='stack'")
    return train(late, part, epochs=epochs, lr=lr, batch_size=len(part), seed=seed, params=late.meta.parameters())


# ---------------------------------------------------------------------------
# Contrastive alignment
# ---------------------------------------------------------------------------
def info_nce(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor | float = 10.0) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss of a batch of paired embeddings.

    Sample ``i`` of ``za`` and sample ``i`` of ``zb`` form the positive pair; the other
    ``B-1`` samples of the batch are the negatives (van den Oord et al., 2018,
    "Representation Learning with Contrastive Predictive Coding"; Radford et al., 2021,
    "Learning Transferable Visual Models From Natural Language Supervision").

    ``loss = (CE(s·A Bᵀ, I) + CE(s·B Aᵀ, I)) / 2`` with L2-normalized rows and scale
    ``s = 1/temperature``.

    Args:
        za, zb: ``(B, e)`` float embeddings (normalized here).
        scale: inverse temperature (a tensor, so it can be learned, or a float).

    Raises:
        ValueError: shapes differ or are not 2-D.
    """
    if za.dim() != 2 or za.shape != zb.shape:
        raise ValueError(f"info_nce: expected two (B, e) tensors of the same shape, got {tuple(za.shape)} and {tuple(zb.shape)}")
    za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = scale * za @ zb.T
    target = torch.arange(len(za), device=za.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ContrastiveAligner(nn.Module):
    """Two encoders and linear projections into a shared, L2-normalized embedding space.

    ``forward(inputs, mask=None) -> (za, zb)``, each ``(B, embed)`` with unit rows.  The
    inverse temperature is learned as ``exp(log_scale)``, started at ``1/temperature``
    and clamped to at most 100, as in CLIP.  ``encoders`` (optional) starts from trained
    encoders, which are copied, never modified.  Train with
    ``train(aligner, part, loss_fn=contrastive_loss)``.
    """

    def __init__(self, a: str = "image", b: str = "signal", d: int = 32, embed: int = 32, temperature: float = 0.1,
                 encoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.modalities = _check_modalities((a, b))
        if len(self.modalities) != 2:
            raise ValueError("ContrastiveAligner aligns exactly two different modalities")
        if encoders is None:
            self.encoders = nn.ModuleDict({m: make_encoder(m, d) for m in self.modalities})
        else:
            if set(encoders) != set(self.modalities):
                raise ValueError(f"encoders must be given for exactly {self.modalities}, got {sorted(encoders)}")
            self.encoders = nn.ModuleDict({m: copy.deepcopy(encoders[m]) for m in self.modalities})
        self.proj = nn.ModuleDict({m: nn.Linear(d, embed) for m in self.modalities})
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(N, embed)`` of one modality's inputs."""
        if modality not in self.modalities:
            raise ValueError(f"this aligner embeds {self.modalities}, not {modality!r}")
        return F.normalize(self.proj[modality](self.encoders[modality](x)), dim=1)

    def forward(self, inputs, mask=None):
        check_inputs(inputs, self.modalities, None, "ContrastiveAligner")
        dev = self.log_scale.device
        return tuple(self.embed(m, inputs[m].to(dev)) for m in self.modalities)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)


def contrastive_loss(model: ContrastiveAligner, inputs, y, mask):
    """``loss_fn`` for :func:`train`: InfoNCE of the aligner's two embeddings (labels unused)."""
    za, zb = model(inputs)
    return info_nce(za, zb, model.scale), None


def recall_at_k(queries: torch.Tensor, candidates: torch.Tensor, ks: Sequence[int] = (1, 5),
                query_labels: torch.Tensor | None = None,
                candidate_labels: torch.Tensor | None = None) -> dict[int, float]:
    """Retrieval recall@k by cosine similarity.

    Two definitions of a hit:

    * *instance match* (no labels): query ``i``'s only correct candidate is candidate ``i``
      (needs as many candidates as queries); chance recall@1 is ``1/N``;
    * *class match* (both label tensors given): any candidate with the query's label is
      correct; chance recall@1 is the fraction of candidates that share the query's label.

    Args:
        queries: ``(Q, e)``; candidates: ``(N, e)``.
        ks: the cut-offs, each in ``1..N``.

    Returns:
        ``{k: fraction of queries with a correct candidate among the k most similar}``.

    Raises:
        ValueError: mismatched shapes, a bad ``k``, or only one of the label tensors given.
    """
    if queries.dim() != 2 or candidates.dim() != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"recall_at_k: expected (Q, e) and (N, e), got {tuple(queries.shape)} and {tuple(candidates.shape)}")
    if (query_labels is None) != (candidate_labels is None):
        raise ValueError("recall_at_k: give both query_labels and candidate_labels (class match) or neither (instance match)")
    N = len(candidates)
    if any(not 1 <= k <= N for k in ks):
        raise ValueError(f"recall_at_k: every k must be in 1..{N}, got {list(ks)}")
    sim = F.normalize(queries, dim=1) @ F.normalize(candidates, dim=1).T
    top = sim.topk(max(ks), dim=1).indices  # (Q, kmax)
    if query_labels is None:
        if len(queries) != N:
            raise ValueError(f"recall_at_k: instance match needs as many queries as candidates, got {len(queries)} and {N}")
        hit = top == torch.arange(N, device=top.device).unsqueeze(1)
    else:
        hit = candidate_labels.to(top.device)[top] == query_labels.to(top.device).unsqueeze(1)
    return {k: float(hit[:, :k].any(1).float().mean()) for k in ks}


# ---------------------------------------------------------------------------
# Gradient reversal and modality-invariant features
# ---------------------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Gradient reversal layer (Ganin & Lempitsky, 2015, "Unsupervised Domain Adaptation
    by Backpropagation"): the identity in the forward pass, multiplies the gradient by
    ``-lambd`` in the backward pass.

    Raises:
        ValueError: ``lambd < 0``.
    """
    if lambd < 0:
        raise ValueError(f"grad_reverse: lambd must be >= 0, got {lambd}")
    return _GradReverse.apply(x, lambd)


def dann_lambda(progress: float, lambd: float = 1.0) -> float:
    """The reversal weight schedule of Ganin & Lempitsky (2015): ``lambd·(2/(1+exp(-10p)) - 1)``.

    Starts at 0 (while the features are still random the discriminator's gradient is
    noise) and approaches ``lambd`` as training ``progress`` ``p`` goes from 0 to 1.
    """
    return lambd * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class InvariantAdapter(nn.Module):
    """Map each modality's (frozen) encoder features into a shared space that a modality
    discriminator, trained through a gradient-reversal layer, cannot tell apart.

    * :meth:`embed`: ``(B, M, d) -> (B, M, d)``: a per-modality adapter
      ``Linear → ReLU → Linear`` followed by a parameter-free layer norm (bounded
      features: without a bound, the encoders could "win" by blowing up the features);
    * :meth:`forward`: class logits ``(B, M, n_classes)`` of every modality through one
      *shared* head (so the shared space must keep the class information);
    * ``discriminator``: linear by default (``disc_hidden=0``), guessing the modality
      ``0..M-1`` of a shared-space feature vector.

    Train with :func:`train_invariant`.
    """

    def __init__(self, n_modalities: int = 2, d: int = 32, n_classes: int = 10, lambd: float = 1.0,
                 disc_hidden: int = 0):
        super().__init__()
        if n_modalities < 2:
            raise ValueError(f"InvariantAdapter needs at least 2 modalities, got {n_modalities}")
        self.d, self.lambd = d, lambd
        self.adapters = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
                                      for _ in range(n_modalities))
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_classes))
        self.discriminator = (nn.Sequential(nn.Linear(d, disc_hidden), nn.ReLU(), nn.Linear(disc_hidden, n_modalities))
                              if disc_hidden else nn.Linear(d, n_modalities))

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() != 3 or feats.shape[1] != len(self.adapters) or feats.shape[2] != self.d:
            raise ValueError(f"expected features (B, {len(self.adapters)}, {self.d}), got {tuple(feats.shape)}")
        z = torch.stack([a(feats[:, m]) for m, a in enumerate(self.adapters)], dim=1)
        return F.layer_norm(z, (self.d,))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(feats))


def train_invariant(model: InvariantAdapter, feats: torch.Tensor, y: torch.Tensor, *, steps: int = 600,
                    batch_size: int = 256, lr: float = 0.05, disc_weight_decay: float = 3.0,
                    seed: int = 0) -> dict[str, list[float]]:
    """Adversarial training with a gradient-reversal layer (Ganin & Lempitsky, 2015).

    Loss per step: cross-entropy of the shared head on every modality's features, plus
    the discriminator's cross-entropy on ``grad_reverse(z, λ_t)`` (``λ_t`` from
    :func:`dann_lambda`).  The discriminator descends its loss; the reversed gradient
    makes the adapters *ascend* it.  Plain SGD (no momentum) and weight decay on the
    discriminator damp the oscillation that this two-player game otherwise shows
    (features swap sides instead of merging).  ``model.lambd = 0`` trains the same
    discriminator with no effect on the features: the baseline.

    Args:
        feats: ``(N, M, d)`` frozen encoder features; y: ``(N,)`` int64 labels.
        steps: SGD steps on random batches of ``batch_size``.

    Returns:
        ``{"loss": [...], "disc_acc": [...]}`` per step (discriminator accuracy on the batch).

    Raises:
        ValueError: ``feats`` and ``y`` disagree in length.
    """
    if len(feats) != len(y):
        raise ValueError(f"feats and y must have the same length, got {len(feats)} and {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    disc = list(model.discriminator.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in disc)]
    opt = torch.optim.SGD([{"params": rest}, {"params": disc, "weight_decay": disc_weight_decay}], lr=lr)
    M = feats.shape[1]
    log = {"loss": [], "disc_acc": []}
    model.train()
    for step in range(steps):
        idx = torch.randint(len(feats), (batch_size,), generator=gen)
        z = model.embed(feats[idx])  # (B, M, d)
        cls = F.cross_entropy(model.head(z).flatten(0, 1), y[idx].repeat_interleave(M))
        which = torch.arange(M).repeat(batch_size)
        d_logits = model.discriminator(grad_reverse(z, dann_lambda(step / steps, model.lambd)).flatten(0, 1))
        loss = cls + F.cross_entropy(d_logits, which)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log["loss"].append(float(loss.detach()))
        log["disc_acc"].append(float((d_logits.argmax(1) == which).float().mean()))
    model.eval()
    return log


def encode_features(encoders: Mapping[str, nn.Module], part: MultimodalPart, batch_size: int = 1000) -> torch.Tensor:
    """Features ``(N, M, d)`` of ``part`` from one trained encoder per modality (eval mode, no gradients).

    Args:
        encoders: ``{modality: encoder}``, e.g. ``{"image": model.encoders["image"], ...}``; the
            order of the mapping gives the order of ``M``.

    Raises:
        ValueError: an unknown modality name.
    """
    _check_modalities(list(encoders))
    inputs = part.inputs()
    outs = []
    with torch.no_grad():
        for m, enc in encoders.items():
            was = enc.training
            enc.eval()
            dev = next(enc.parameters()).device
            outs.append(torch.cat([enc(inputs[m][s:s + batch_size].to(dev)).cpu()
                                   for s in range(0, len(part), batch_size)]))
            enc.train(was)
    return torch.stack(outs, dim=1)


def modality_probe_accuracy(train_feats: torch.Tensor, test_feats: torch.Tensor, steps: int = 300,
                            hidden: int = 32, seed: int = 0) -> float:
    """Train a fresh modality discriminator on frozen features; return its test accuracy.

    The honest measure of modality invariance: the discriminator inside
    :class:`InvariantAdapter` is being fought by the adapters, so its own accuracy says
    little.  Chance is ``1/M``.  Features are standardized with the training part's
    mean and standard deviation first.

    Args:
        train_feats, test_feats: ``(N, M, d)`` features (sample, modality, feature).
        steps: full-batch Adam steps (learning rate 0.01).
        hidden: width of the probe's hidden layer; 0 gives a linear (logistic-regression) probe.

    Raises:
        ValueError: the two tensors disagree in ``M`` or ``d``, or are not 3-D.
    """
    if train_feats.dim() != 3 or train_feats.shape[1:] != test_feats.shape[1:]:
        raise ValueError(f"expected (N, M, d) features with equal M and d, got {tuple(train_feats.shape)} "
                         f"and {tuple(test_feats.shape)}")
    g = torch.Generator().manual_seed(seed)
    M, d = train_feats.shape[1:]
    x = train_feats.detach().flatten(0, 1).cpu()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    y = torch.arange(M).repeat(len(train_feats))
    probe = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, M)) if hidden else nn.Linear(d, M)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 1 else 1 / math.sqrt(p.shape[1])))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    with torch.enable_grad():  # callers often hold features computed under no_grad
        for _ in range(steps):
            loss = F.cross_entropy(probe((x - mu) / sd), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt = test_feats.detach().flatten(0, 1).cpu()
    with torch.no_grad():
        pred = probe((xt - mu) / sd).argmax(1)
    return float((pred == torch.arange(M).repeat(len(test_feats))).float().mean())
