"""The multimodal digits data set of chapter 8: image + signal + tokens, paired by class.

Every sample is an 8×8 image (scikit-learn digits), a 40-step signal (MNIST-1D) and a
short token sequence (a noisy spelling of the class word, such as ``"sevrn"``), paired
*by class* with a fixed seed. Each modality is corrupted on purpose (:class:`Corruption`)
so that none of them is sufficient on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..cache import cached



MODALITIES: tuple[str, ...] = ("image", "signal", "tokens")
CLASS_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four",
                                "five", "six", "seven", "eight", "nine")
#: The token vocabulary: index 0 is padding, then the 15 letters that occur in the class words.
VOCAB: tuple[str, ...] = ("<pad>",) + tuple(sorted(set("".join(CLASS_WORDS))))
PAD = 0
MAX_LEN = max(len(w) for w in CLASS_WORDS)  # 5 characters
FUSIONS: tuple[str, ...] = ("early", "concat", "mean", "weighted", "attention",
                            "tensor", "lowrank", "coattention", "crossattention")


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
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"Corruption: {f.name} must be a number >= 0, got {v!r}")
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"Corruption: {f.name} must be a finite number >= 0, got {v!r}")
            if f.name.endswith("occlusion") and v != int(v):
                raise ValueError(f"Corruption: {f.name} is a size in pixels or steps and must be a whole number, got {v!r}")
        if self.token_substitution > 1 or self.token_drop > 1:
            raise ValueError("Corruption: token_substitution and token_drop are probabilities in [0, 1], "
                             f"got {self.token_substitution} and {self.token_drop}")
        if self.image_occlusion > 8 or self.signal_occlusion > 40:
            raise ValueError(f"Corruption: occlusions must fit the input (image <= 8 px, signal <= 40 steps), "
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
        raise TypeError(f"encode_word: word must be a str, got {type(word).__name__}")
    if not 1 <= len(word) <= MAX_LEN:
        raise ValueError(f"encode_word: word must have 1..{MAX_LEN} characters, got {word!r}")
    bad = sorted(set(word) - set(VOCAB[1:]))
    if bad:
        raise ValueError(f"encode_word: characters {bad} of {word!r} are not in the vocabulary {''.join(VOCAB[1:])}")
    return [VOCAB.index(ch) for ch in word]


def decode_tokens(tokens: torch.Tensor) -> list[str]:
    """Turn token indices back into strings, dropping padding.

    Args:
        tokens: int64 tensor ``(N, L)`` (or ``(L,)`` for one sequence).

    Returns:
        A list of ``N`` strings (one string in a list for a 1-D input).

    Raises:
        TypeError: ``tokens`` is not an integer tensor.
        ValueError: an index outside ``[0, len(VOCAB))`` (a negative one would silently
            wrap around to the end of the vocabulary).

    Examples:
        >>> decode_tokens(torch.tensor([encode_word("six") + [0, 0]]))
        ['six']
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"decode_tokens: tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool or tokens.dim() == 0:
        raise TypeError(f"decode_tokens: tokens must be an integer tensor of shape (N, L) or (L,), got dtype "
                        f"{tokens.dtype} and shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= len(VOCAB)):
        raise ValueError(f"decode_tokens: indices must lie in [0, {len(VOCAB)}), got values in "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
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

    Raises:
        TypeError: ``rng`` is not a NumPy ``Generator``.
        ValueError: ``label`` outside ``0..9``; ``substitution`` or ``drop`` outside ``[0, 1]``.
    """
    from .._checks import check_fraction, check_int

    label = check_int(label, "noisy_spelling", "label", minimum=0, maximum=9)
    substitution = check_fraction(substitution, "noisy_spelling", "substitution", allow_one=True)
    drop = check_fraction(drop, "noisy_spelling", "drop", allow_one=True)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"noisy_spelling: rng must be a numpy.random.Generator, got {type(rng).__name__}")
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

    from ..data import load_digits, load_mnist1d

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


# ---------------------------------------------------------------------------
# A task that needs an interaction between modalities
# ---------------------------------------------------------------------------
INTERACTION_TASKS: tuple[str, ...] = ("same", "sum")


def interaction_part(part: MultimodalPart, task: str = "same", seed: int = 0,
                     partner: str = "tokens") -> MultimodalPart:
    """Re-pair ``part`` so that the label needs the image *and* a partner modality together.

    Every sample keeps its image (and its other modality, which still shows the image's
    digit); its ``partner`` modality (``"tokens"`` or ``"signal"``) is replaced by that of
    another sample of ``part``, drawn so that the new label depends on the two digits
    *together*:

    * ``"same"``: ``y = 1`` when the image's digit equals the signal's digit, else 0.
      With probability 1/2 the partner signal has the image's class, else a class drawn
      uniformly from the other nine;
    * ``"sum"``: ``y = (image digit + signal digit) mod 10``, the partner drawn uniformly
      from all of ``part``.

    In both, the partner's digit is uniform and independent of the image's digit given the
    task's construction, so the label is independent of each modality alone: a unimodal
    classifier, and any late fusion of unimodal classifiers of this label, is at chance
    (1/2 for ``"same"``, 1/10 for ``"sum"``). Built from one split only, so splits still
    share no underlying sample.

    Args:
        part: a split of :func:`load_multimodal_digits` (labels ``0..9``, every class present).
        task: ``"same"`` or ``"sum"``.
        seed: seeds the re-pairing.
        partner: the modality taken from another sample: ``"tokens"`` (the spelling:
            "does the word name the digit in the picture?") or ``"signal"``.

    Returns:
        A :class:`MultimodalPart` of the same length: the image and its source as in
        ``part``; the partner modality (with its source or error count) from the partner
        sample; the third modality as in ``part``; ``y`` the new int64 label.

    Raises:
        TypeError: ``part`` is not a :class:`MultimodalPart`.
        ValueError: unknown ``task`` or ``partner``, or a class missing from ``part``.

    Examples:
        >>> ds = build_multimodal_digits(20, 10, 10, seed=0)
        >>> same = interaction_part(ds.train, "same", seed=0)
        >>> len(same), sorted(set(same.y.tolist())) == [0, 1]
        (20, True)
    """
    from .._checks import check_choice, check_int

    if not isinstance(part, MultimodalPart):
        raise TypeError(f"interaction_part: part must be a MultimodalPart, got {type(part).__name__}")
    check_choice(task, "interaction_part", "task", INTERACTION_TASKS)
    check_choice(partner, "interaction_part", "partner", ("tokens", "signal"))
    seed = check_int(seed, "interaction_part", "seed", minimum=0)
    rng = np.random.default_rng(seed)
    y = part.y.numpy()
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    if any(len(b) == 0 for b in by_class):
        raise ValueError("interaction_part: every class 0..9 must occur in part, got counts "
                         f"{[len(b) for b in by_class]}")
    n = len(y)
    if task == "same":
        same = rng.permutation(np.arange(n) % 2 == 0)  # exactly half the samples (rounded up) match
        other = (y + rng.integers(1, 10, size=n)) % 10  # uniform over the nine other classes
        partner_class = np.where(same, y, other)
    else:
        partner_class = rng.integers(0, 10, size=n)
    partner_idx = np.array([rng.choice(by_class[c]) for c in partner_class])
    label = (partner_class == y).astype(np.int64) if task == "same" else (y + partner_class) % 10
    idx = torch.from_numpy(partner_idx)
    moved = ("tokens", "token_errors") if partner == "tokens" else ("signal", "signal_source")
    new = {f.name: getattr(part, f.name)[idx] if f.name in moved else getattr(part, f.name) for f in fields(part)}
    new["y"] = torch.from_numpy(label.astype(np.int64))
    return MultimodalPart(**new)


def interaction_task(data: MultimodalDigits, task: str = "same", seed: int = 0,
                     partner: str = "tokens") -> MultimodalDigits:
    """:func:`interaction_part` applied to each split (with seeds ``seed``, ``seed+1``, ``seed+2``).

    Returns:
        A :class:`MultimodalDigits` whose ``n_classes`` is 2 (``"same"``) or 10 (``"sum"``).

    Raises:
        TypeError: ``data`` is not a :class:`MultimodalDigits`; see :func:`interaction_part`.
    """
    if not isinstance(data, MultimodalDigits):
        raise TypeError(f"interaction_task: data must be a MultimodalDigits, got {type(data).__name__}")
    parts = {s: interaction_part(getattr(data, s), task, seed + i, partner)
             for i, s in enumerate(("train", "val", "test"))}
    return MultimodalDigits(**parts, corruption=data.corruption, n_classes=2 if task == "same" else 10)
