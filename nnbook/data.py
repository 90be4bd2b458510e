"""The book's offline data sets and the DataLoaders built from them.

Nothing here downloads anything:

* **digits** comes from :func:`sklearn.datasets.load_digits`, which ships with
  scikit-learn (the UCI optical-recognition digits: 1797 grey 8×8 images, 10 classes).
* **MNIST-1D** (Greydanus, 2020) is *generated* locally by the ``mnist1d`` package's
  :func:`mnist1d.data.make_dataset` with its default arguments (seed 42): 4000 training
  and 1000 test sequences of 40 samples, 10 classes.  It is cached on disk with an
  atomic write (:mod:`nnbook.cache`).  ``mnist1d.data.get_dataset`` is never called,
  because it downloads.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ._checks import check_fraction, check_int
from .cache import cached


@dataclass(frozen=True)
class Split:
    """A data set split into training, (optional) validation and test tensors.

    Attributes:
        x_train, y_train: inputs (float32) and integer labels (int64, shape ``(N,)``).
        x_val, y_val: the validation part, or ``None`` when no validation split was asked for.
        x_test, y_test: the fixed test part; never used for training or model selection.
        n_classes: number of classes.
        name: ``"digits"`` or ``"mnist1d"``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(1, 8, 8)`` for digits, ``(40,)`` for MNIST-1D."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:  # short, so notebooks can print it
        val = "none" if self.x_val is None else len(self.x_val)
        return (f"Split({self.name}: train {tuple(self.x_train.shape)}, val {val}, "
                f"test {tuple(self.x_test.shape)}, {self.n_classes} classes)")


def _check_fraction(val_size: float, where: str = "load_digits") -> float:
    return check_fraction(val_size, where, "val_size")


def _with_validation(split: Split, val_size: float, seed: int) -> Split:
    """Move a stratified ``val_size`` fraction of the training part into a validation part."""
    if val_size == 0.0:
        return split
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split.y_train))
    tr, va = train_test_split(idx, test_size=val_size, random_state=seed, stratify=split.y_train.numpy())
    tr, va = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(va))
    return replace(split, x_train=split.x_train[tr], y_train=split.y_train[tr],
                   x_val=split.x_train[va], y_val=split.y_train[va])


def load_digits(val_size: float = 0.0, seed: int = 0) -> Split:
    """Load scikit-learn's bundled handwritten digits with the book's fixed split.

    The test part (450 images, 25 %, stratified by class) is fixed for the whole
    book; ``val_size`` moves a fraction of the remaining 1347 training images into a
    validation part.

    Args:
        val_size: fraction of the training part to hold out for validation, in ``[0, 1)``.
        seed: seed of the validation split only (the test split never changes).

    Returns:
        A :class:`Split` with images of shape ``(N, 1, 8, 8)``, float32 scaled to
        ``[0, 1]``, and labels of shape ``(N,)``, int64 in ``0..9``.

    Raises:
        TypeError, ValueError: ``val_size`` is not a number in ``[0, 1)``.
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    val_size = _check_fraction(val_size)
    bunch = _sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=bunch.target)
    tr, te = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(te))
    split = Split(x[tr], y[tr], None, None, x[te], y[te], 10, "digits")
    return _with_validation(split, val_size, seed)


def _make_mnist1d() -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # defaults: 5000 samples, 80/20 split, seed 42
    raw = make_dataset(args)
    return {k: torch.as_tensor(np.asarray(raw[k])) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d(val_size: float = 0.0, seed: int = 0) -> Split:
    """Generate (or read from the cache) MNIST-1D with the package's default arguments.

    MNIST-1D (Greydanus, 2020, "Scaling down deep learning") turns the ten digit
    templates into 1-D signals and adds shifts, scaling, shear, correlated noise and
    padding.  The reference test accuracies in its README are about 32 % for logistic
    regression, 68 % for an MLP, 91 % for a GRU and 94 % for a CNN.

    Args:
        val_size: fraction of the 4000 training sequences to hold out for validation.
        seed: seed of the validation split only.

    Returns:
        A :class:`Split` with sequences of shape ``(N, 40)``, float32, and labels of
        shape ``(N,)``, int64 in ``0..9``; 4000 training and 1000 test samples.

    Raises:
        TypeError, ValueError: ``val_size`` is not a number in ``[0, 1)``.
    """
    val_size = _check_fraction(val_size, "load_mnist1d")
    raw = cached("mnist1d", {"generator": "mnist1d.make_dataset", "args": "default", "seed": 42}, _make_mnist1d)
    split = Split(raw["x"].float(), raw["y"].long(), None, None,
                  raw["x_test"].float(), raw["y_test"].long(), 10, "mnist1d")
    return _with_validation(split, val_size, seed)


def loaders(split: Split, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
    """Build the DataLoaders of a :class:`Split`.

    The training loader shuffles with its own seeded generator (so a run is
    reproducible whatever else consumed random numbers); validation and test loaders
    keep the data order.

    Args:
        split: the data.
        batch_size: samples per batch, ``>= 1``.
        seed: seed of the training loader's shuffling.
        num_workers: worker processes (0 = load in the main process, best for tiny data).

    Returns:
        ``(train_loader, val_loader, test_loader)``; ``val_loader`` is ``None`` when the
        split has no validation part.

    Raises:
        TypeError: ``split`` is not a :class:`Split`.
        ValueError: ``batch_size`` < 1.
    """
    if not isinstance(split, Split):
        raise TypeError(f"loaders: split must be an nnbook.data.Split, got {type(split).__name__}")
    batch_size = check_int(batch_size, "loaders", "batch_size", minimum=1)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=batch_size,
                       shuffle=True, generator=gen, num_workers=num_workers)
    val = None
    if split.x_val is not None:
        val = DataLoader(TensorDataset(split.x_val, split.y_val), batch_size=512, num_workers=num_workers)
    test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=512, num_workers=num_workers)
    return train, val, test
