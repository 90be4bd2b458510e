"""Training and evaluating the multimodal models: thin wrappers over :func:`nnbook.train.fit`.

Batches are ``(inputs, labels, mask)`` triples (``inputs`` a dict by modality, ``mask`` a
presence mask or ``None``); :func:`train` builds them, with modality dropout when asked,
and hands them to the book's one training loop with a step that passes the mask on.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import _given, check_fraction, check_int, check_model
from ..train import History, _model_device, evaluate, fit
from ..train import predict as predict_batches
from .data import MultimodalPart
from .fusion import LateFusion


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
        TypeError: ``batch``/``n_modalities`` not ints, ``p`` not a number.
        ValueError: ``p`` outside ``[0, 1]`` or NaN; ``batch`` < 0; ``n_modalities`` < 1.

    Examples:
        >>> keep = modality_dropout_mask(4, 3, 0.5, torch.Generator().manual_seed(0))
        >>> tuple(keep.shape), bool(keep.any(1).all())
        ((4, 3), True)
    """
    batch = check_int(batch, "modality_dropout_mask", "batch", minimum=0)
    n_modalities = check_int(n_modalities, "modality_dropout_mask", "n_modalities", minimum=1)
    p = check_fraction(p, "modality_dropout_mask", "p", allow_one=True)
    keep = torch.rand(batch, n_modalities, generator=generator) >= p
    empty = ~keep.any(1)
    if empty.any():
        pick = torch.randint(n_modalities, (int(empty.sum()),), generator=generator)
        keep[empty.nonzero().squeeze(1), pick] = True
    return keep


def present(n: int, modalities: Sequence[str], drop: Sequence[str] = ()) -> torch.Tensor:
    """Presence mask ``(n, M)`` with the modalities named in ``drop`` absent for every sample.

    Raises:
        TypeError: ``drop`` is a single string instead of a sequence of names.
        ValueError: a name in ``drop`` is not one of ``modalities``; ``n < 0``.
    """
    n = check_int(n, "present", "n", minimum=0)
    if isinstance(drop, str) or isinstance(modalities, str):
        raise TypeError(f"present: drop and modalities must be sequences of names such as ('image',), got "
                        f"{drop!r} and {modalities!r}")
    bad = [m for m in drop if m not in modalities]
    if bad:
        raise ValueError(f"cannot drop {bad}: the model's modalities are {list(modalities)}")
    return torch.tensor([m not in drop for m in modalities]).expand(n, -1).clone()


def classification_loss(model, inputs, y, mask):
    """Cross-entropy of ``model(inputs, mask)``; returns ``(loss, logits)``."""
    logits = model(inputs, mask=mask)
    return F.cross_entropy(logits, y), logits


class Batches:
    """The shuffled training batches of a :class:`MultimodalPart`, as ``(inputs, y, mask)``.

    One pass (``iter``) draws a fresh permutation, and, with ``modality_dropout > 0``,
    a fresh presence mask per batch (:func:`modality_dropout_mask`), both from one
    generator seeded once, so a run is reproducible. ``mask`` is ``None`` without dropout.

    Args:
        part: the split to iterate over.
        batch_size: samples per batch, ``>= 1``.
        n_modalities: the mask width (the model's number of modalities).
        modality_dropout: probability of dropping each modality of each sample, in ``[0, 1)``.
        seed: seeds the generator.
    """

    def __init__(self, part: MultimodalPart, batch_size: int, n_modalities: int,
                 modality_dropout: float = 0.0, seed: int = 0):
        if not isinstance(part, MultimodalPart):
            raise TypeError(f"Batches: part must be a MultimodalPart, got {_given(part)}")
        batch_size = check_int(batch_size, "Batches", "batch_size", minimum=1)
        n_modalities = check_int(n_modalities, "Batches", "n_modalities", minimum=1)
        modality_dropout = check_fraction(modality_dropout, "Batches", "modality_dropout")
        seed = check_int(seed, "Batches", "seed", minimum=0)
        self.part, self.batch_size, self.n_modalities = part, batch_size, n_modalities
        self.modality_dropout = modality_dropout
        self.gen = torch.Generator().manual_seed(seed)
        self._inputs = part.inputs()

    def __len__(self) -> int:
        return -(-len(self.part) // self.batch_size)

    def __iter__(self):
        for idx in torch.randperm(len(self.part), generator=self.gen).split(self.batch_size):
            inputs = {k: v[idx] for k, v in self._inputs.items()}
            mask = (modality_dropout_mask(len(idx), self.n_modalities, self.modality_dropout, self.gen)
                    if self.modality_dropout > 0 else None)
            yield inputs, self.part.y[idx], mask


def masked_step(loss_fn: Callable | None = None):
    """The :func:`nnbook.train.fit` step for ``(inputs, y, mask)`` batches.

    Args:
        loss_fn: ``loss_fn(model, inputs, y, mask) -> (loss, logits or None)``;
            :func:`classification_loss` by default.
    """
    loss_fn = loss_fn or classification_loss

    def step(model, batch):
        inputs, y, mask = batch
        loss, logits = loss_fn(model, inputs, y, mask)
        return loss, logits, (y if logits is not None else None)

    return step


def train(model: nn.Module, part: MultimodalPart, *, epochs: int = 5, lr: float = 1e-2, batch_size: int = 128,
          seed: int = 0, modality_dropout: float = 0.0, loss_fn: Callable | None = None,
          params: Iterable[torch.Tensor] | None = None, device=None, progress: bool = True) -> History:
    """Train a multimodal model with Adam on the samples of ``part`` (through :func:`nnbook.train.fit`).

    Args:
        model: ``forward(inputs, mask=None)``; its ``modalities`` attribute gives the mask width.
        part: the training split.
        epochs, lr, batch_size: the usual; batches are shuffled by a generator seeded with ``seed``.
        modality_dropout: probability of dropping each modality of each training sample
            (:func:`modality_dropout_mask`), in ``[0, 1)``; 0 trains with every modality present.
        loss_fn: ``loss_fn(model, inputs, y, mask) -> (loss, logits or None)``;
            :func:`classification_loss` by default.
        params: the parameters to optimize (all trainable ones by default).
        device: where to train (the model's current device by default).
        progress: show a progress bar over epochs.

    Returns:
        A :class:`nnbook.train.History` (training loss and accuracy per epoch, accuracy NaN
        when ``loss_fn`` returns no logits; ``epoch_time_s`` in seconds). The model is
        left in eval mode.

    Raises:
        TypeError: ``model`` is not a module or ``part`` is not a :class:`MultimodalPart`.
        ValueError: ``epochs`` or ``batch_size`` < 1; ``lr <= 0``; ``modality_dropout``
            outside ``[0, 1)``; the model has no ``modalities`` attribute.
    """
    check_model(model, "train")
    if not isinstance(part, MultimodalPart):
        raise TypeError(f"train: part must be a MultimodalPart, got {_given(part)}")
    seed = check_int(seed, "train", "seed", minimum=0)
    epochs = check_int(epochs, "train", "epochs", minimum=1)
    batch_size = check_int(batch_size, "train", "batch_size", minimum=1)
    modality_dropout = check_fraction(modality_dropout, "train", "modality_dropout")
    if not hasattr(model, "modalities"):
        raise ValueError("train: the model must have a `modalities` attribute (the order of its mask columns)")
    dev = torch.device(device) if device is not None else _model_device(model)
    batches = Batches(part, batch_size, len(model.modalities), modality_dropout, seed)
    hist = fit(model, batches, epochs=epochs, lr=lr, step=masked_step(loss_fn), params=params, device=dev,
               progress=progress, desc=type(model).__name__)
    model.eval()
    return hist


class _WithMask(nn.Module):
    """Adapter so :func:`nnbook.train.predict` can call ``model(inputs, mask=mask)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, batch):
        inputs, mask = batch
        return self.model(inputs, mask=mask)


def _inputs_for(model: nn.Module, part: MultimodalPart, mask, drop: Sequence[str], where: str):
    if not isinstance(part, MultimodalPart):
        raise TypeError(f"{where}: part must be a MultimodalPart, got {_given(part)}")
    if not hasattr(model, "modalities"):
        raise ValueError(f"{where}: the model must have a `modalities` attribute (a multimodal model)")
    if isinstance(drop, str):
        raise TypeError(f"{where}: drop must be a sequence of modality names such as ('image',), got {drop!r}")
    if drop:
        mask = present(len(part), model.modalities, drop)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != (len(part), len(model.modalities)):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{where}: mask must be a bool tensor of shape ({len(part)}, {len(model.modalities)}), "
                             f"got {got}")
        mask = mask.bool()
    inputs = {k: v for k, v in part.inputs().items() if k not in drop}
    return inputs, mask


def predict(model: nn.Module, part: MultimodalPart, mask: torch.Tensor | None = None,
            drop: Sequence[str] = (), batch_size: int = 1000) -> torch.Tensor:
    """Outputs ``(N, n_classes)`` of ``model`` on ``part``, in eval mode, on the CPU
    (through :func:`nnbook.train.predict`).

    Args:
        mask: presence mask ``(N, M)``; or use ``drop`` to remove whole modalities
            (they are then also left out of the inputs).

    Raises:
        TypeError: ``part`` is not a :class:`MultimodalPart`.
        ValueError: ``mask`` has the wrong shape; ``drop`` names an unknown modality.
    """
    check_model(model, "predict")
    batch_size = check_int(batch_size, "predict", "batch_size", minimum=1)
    inputs, mask = _inputs_for(model, part, mask, drop, "predict")
    return predict_batches(_WithMask(model), (inputs, mask), batch_size)


def accuracy(model: nn.Module, part: MultimodalPart, mask: torch.Tensor | None = None, drop: Sequence[str] = (),
             batch_size: int = 1000) -> float:
    """Fraction of ``part`` that ``model`` classifies correctly (through :func:`nnbook.train.evaluate`;
    see :func:`predict` for ``mask`` and ``drop``)."""
    check_model(model, "accuracy")
    batch_size = check_int(batch_size, "accuracy", "batch_size", minimum=1)
    inputs, mask = _inputs_for(model, part, mask, drop, "accuracy")
    n = len(part)
    batches = [({k: v[s:s + batch_size] for k, v in inputs.items()}, part.y[s:s + batch_size],
                None if mask is None else mask[s:s + batch_size]) for s in range(0, n, batch_size)]
    return evaluate(model, batches, step=masked_step())[1]


def fit_stacking(late: LateFusion, part: MultimodalPart, epochs: int = 30, lr: float = 0.05, seed: int = 0) -> History:
    """Train the meta-classifier of a ``LateFusion(rule="stack")`` on ``part`` (use validation data).

    Raises:
        TypeError: ``late`` is not a :class:`LateFusion`.
        ValueError: ``late`` does not use the ``"stack"`` rule.
    """
    if not isinstance(late, LateFusion):
        raise TypeError(f"fit_stacking: late must be a LateFusion, got {_given(late)}")
    if late.rule != "stack":
        raise ValueError(f"fit_stacking: late must use rule='stack', got rule={late.rule!r}")
    return train(late, part, epochs=epochs, lr=lr, batch_size=len(part), seed=seed, params=late.meta.parameters(),
                 progress=False)
