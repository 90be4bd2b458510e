"""The book's training loop: :func:`fit`, :func:`evaluate` and :func:`predict`.

Deliberately plain (one loop, no callbacks framework) so a reader can follow every
line; chapters that need a twist (a penalty term, a mask to re-apply after each
step, a fake-quantized forward pass) pass ``loss_fn`` or ``after_step``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from .utils import device as _device


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run.

    Attributes (lists with one entry per epoch):
        train_loss, train_acc: mean loss and accuracy (fraction in ``[0, 1]``) over the
            training batches of that epoch, measured while training.
        val_loss, val_acc: loss and accuracy on the validation loader after the epoch
            (empty when no validation loader was given).
        epoch_time_s: wall-clock seconds of the epoch's training (validation excluded).
    """

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    epoch_time_s: list = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def as_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


def _check_batch(batch, where: str):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"{where}: each batch must be a pair (inputs, labels) of tensors, got {type(batch).__name__}")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{where}: each batch must be a pair of torch.Tensor, got ({type(x).__name__}, {type(y).__name__})")
    return x, y


def _check_logits(logits: torch.Tensor, n_classes: int | None, where: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{where}: the model must return logits of shape (batch, n_classes), got {shape}")
    if n_classes is not None and logits.shape[1] != n_classes:
        raise ValueError(f"{where}: the model outputs {logits.shape[1]} scores per sample, "
                         f"but the data has n_classes={n_classes}")


def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None, device=None,
             n_classes: int | None = None) -> tuple[float, float]:
    """Mean loss and accuracy of a classifier over a loader, without gradients, in eval mode.

    Args:
        model: maps a batch of inputs to logits of shape ``(batch, n_classes)``.
        loader: yields ``(inputs, labels)`` tensor pairs; labels int64 of shape ``(batch,)``.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.
        device: where to run; the model's current device by default.
        n_classes: when given, the logits' width is checked against it.

    Returns:
        ``(mean_loss, accuracy)``, accuracy as a fraction in ``[0, 1]``.

    Raises:
        TypeError: a batch is not a pair of tensors.
        ValueError: the logits are not ``(batch, n_classes)``, or the loader is empty.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for batch in loader:
            x, y = _check_batch(batch, "evaluate")
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            _check_logits(logits, n_classes, "evaluate")
            loss_sum += float(loss_fn(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return loss_sum / total, correct / total


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512, device=None) -> torch.Tensor:
    """Logits of a model for a tensor of inputs, in eval mode, on the CPU.

    Args:
        x: inputs, shape ``(N, ...)``.
    Returns:
        float32 tensor of shape ``(N, n_classes)`` on the CPU.
    Raises:
        TypeError: ``x`` is not a tensor.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"predict: x must be a torch.Tensor, got {type(x).__name__}")
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
        epochs: int = 10, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        loss_fn: Callable | None = None, scheduler=None, device=None, n_classes: int | None = None,
        after_step: Callable[[nn.Module], None] | None = None, progress: bool = True,
        desc: str | None = None) -> History:
    """Train a classifier and record its per-epoch history.

    Args:
        model: maps a batch of inputs to logits ``(batch, n_classes)``; moved to ``device``.
        train_loader: yields ``(inputs, labels)`` pairs of tensors (labels int64 ``(batch,)``).
        val_loader: optional loader evaluated after every epoch.
        epochs: number of passes over ``train_loader``, ``>= 1``.
        optimizer: a ready optimizer over ``model``'s parameters; Adam with ``lr`` by default.
        lr: learning rate of the default Adam optimizer.
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (cross-entropy by default). Add
            penalties here (it may also read the model through a closure).
        scheduler: optional learning-rate scheduler, stepped once per epoch
            (``ReduceLROnPlateau`` is stepped with the validation loss, or the training
            loss when there is no validation loader).
        device: ``"cpu"``, ``"cuda"``, ... ; :func:`nnbook.device` by default.
        n_classes: when given, the model's output width is checked against it on the
            first batch.
        after_step: called as ``after_step(model)`` after every optimizer step, e.g. to
            re-apply a pruning mask.
        progress: show a ``tqdm.auto`` progress bar over epochs.
        desc: label of the progress bar.

    Returns:
        A :class:`History`.

    Raises:
        ValueError: ``epochs < 1``; the model's logits are not ``(batch, n_classes)``;
            the training loader is empty.
        TypeError: ``model`` is not an ``nn.Module``; a batch is not a pair of tensors.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be an int >= 1, got {epochs!r}")
    dev = _device(device) if not isinstance(device, torch.device) else device
    model.to(dev)
    loss_fn = loss_fn or nn.functional.cross_entropy
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    hist = History()
    bar = tqdm(range(epochs), desc=desc or type(model).__name__, disable=not progress, leave=True)
    for _ in bar:
        model.train()
        t0 = time.perf_counter()
        total, correct, loss_sum = 0, 0, 0.0
        for batch in train_loader:
            x, y = _check_batch(batch, "fit")
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            logits = model(x)
            if total == 0:
                _check_logits(logits, n_classes, "fit")
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            total += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        hist.epoch_time_s.append(time.perf_counter() - t0)
        if total == 0:
            raise ValueError("fit: the training loader yielded no samples")
        hist.train_loss.append(loss_sum / total)
        hist.train_acc.append(correct / total)
        post = {"loss": f"{hist.train_loss[-1]:.3f}", "acc": f"{hist.train_acc[-1]:.3f}"}
        if val_loader is not None:
            vl, va = evaluate(model, val_loader, loss_fn, dev, n_classes)
            hist.val_loss.append(vl)
            hist.val_acc.append(va)
            post.update(val_acc=f"{va:.3f}")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(hist.val_loss[-1] if hist.val_loss else hist.train_loss[-1])
            else:
                scheduler.step()
        bar.set_postfix(post)
    return hist
