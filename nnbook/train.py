"""The book's training loop: :func:`fit`, :func:`evaluate` and :func:`predict`.

Deliberately plain (one loop) so a reader can follow every line. Chapters that
need a twist do not write a second loop: they pass ``loss_fn`` (a penalty term),
``step`` (another batch layout or objective: multimodal dicts, distillation, a
VAE), ``after_step`` (re-apply a pruning mask) or ``callbacks`` (early stopping).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ._checks import check_int, check_model, check_positive
from .utils import device as _device
from .utils import progress_bar


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
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


Batch = "torch.Tensor | tuple | list | dict"
StepFn = Callable[[nn.Module, object], tuple]


def to_device(batch, device: torch.device):
    """Move a batch to ``device``: a tensor, or a tuple/list/dict of them (nested), other values kept.

    Examples:
        >>> b = to_device({"image": torch.zeros(2, 3), "y": torch.ones(2)}, torch.device("cpu"))
        >>> sorted(b)
        ['image', 'y']
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _check_batch(batch, where: str):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"{where}: each batch must be a pair (inputs, labels) of tensors, got {type(batch).__name__}"
                        " (pass step= for other batch layouts)")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{where}: each batch must be a pair of torch.Tensor, got ({type(x).__name__}, {type(y).__name__})")
    if y.dim() != 1 or y.is_floating_point():
        raise ValueError(f"{where}: labels must be an integer tensor of shape (batch,), got shape "
                         f"{tuple(y.shape)} and dtype {y.dtype}")
    if len(x) != len(y):
        raise ValueError(f"{where}: a batch has {len(x)} inputs but {len(y)} labels")
    return x, y


def _check_logits(logits: torch.Tensor, n_classes: int | None, where: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{where}: the model must return logits of shape (batch, n_classes), got {shape}")
    if n_classes is not None and logits.shape[1] != n_classes:
        raise ValueError(f"{where}: the model outputs {logits.shape[1]} scores per sample, "
                         f"but the data has n_classes={n_classes}")


def classification_step(loss_fn: Callable | None = None, where: str = "fit") -> StepFn:
    """The default step of :func:`fit`: ``(x, y) -> (loss_fn(model(x), y), logits, y)``.

    Args:
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.

    Returns:
        ``step(model, batch) -> (loss, logits, targets)``.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy

    def step(model: nn.Module, batch):
        x, y = _check_batch(batch, where)
        logits = model(x)
        _check_logits(logits, None, where)
        return loss_fn(logits, y), logits, y

    return step


def _run_step(step: StepFn, model: nn.Module, batch, where: str):
    out = step(model, batch)
    if not isinstance(out, tuple) or len(out) != 3:
        raise TypeError(f"{where}: step(model, batch) must return (loss, logits, targets), got {type(out).__name__}")
    loss, logits, targets = out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"{where}: the step's loss must be a scalar tensor, got {type(loss).__name__}")
    return loss, logits, targets


def _count_correct(logits, targets) -> tuple[int, int]:
    """(correct, counted) for a batch; (0, 0) when the step returned no logits."""
    if logits is None or targets is None:
        return 0, 0
    return int((logits.detach().argmax(1) == targets).sum()), len(targets)


def _batch_len(batch, targets) -> int:
    if targets is not None:
        return len(targets)
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    return len(batch[0]) if isinstance(batch, (tuple, list)) and batch else 1


def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None, device=None,
             n_classes: int | None = None, *, step: StepFn | None = None) -> tuple[float, float]:
    """Mean loss and accuracy of a classifier over a loader, without gradients, in eval mode.

    Args:
        model: maps a batch of inputs to logits of shape ``(batch, n_classes)``.
        loader: yields ``(inputs, labels)`` tensor pairs (labels int64 of shape ``(batch,)``),
            or any batch layout that ``step`` understands.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; cross-entropy by default.
        device: where to run; the model's current device by default.
        n_classes: when given, the logits' width is checked against it.
        step: ``step(model, batch) -> (loss, logits, targets)`` as in :func:`fit`.

    Returns:
        ``(mean_loss, accuracy)``, accuracy as a fraction in ``[0, 1]`` (NaN when the
        step returns no logits).

    Raises:
        TypeError: ``model`` is not a module; a batch is not a pair of tensors.
        ValueError: the logits are not ``(batch, n_classes)``, or the loader is empty.

    The model's train/eval mode is restored even when its forward raises.
    """
    check_model(model, "evaluate")
    step = step or classification_step(loss_fn, "evaluate")
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    total, counted, correct, loss_sum = 0, 0, 0, 0.0
    try:
        with torch.no_grad():
            for batch in loader:
                batch = to_device(batch, dev)
                loss, logits, targets = _run_step(step, model, batch, "evaluate")
                if logits is not None:
                    _check_logits(logits, n_classes, "evaluate")
                n = _batch_len(batch, targets)
                loss_sum += float(loss) * n
                c, k = _count_correct(logits, targets)
                correct, counted, total = correct + c, counted + k, total + n
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return loss_sum / total, (correct / counted if counted else float("nan"))


def _leaves(x) -> list:
    if isinstance(x, dict):
        return [t for v in x.values() for t in _leaves(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _leaves(v)]
    return [x]


def _slice(x, i: int, j: int):
    if isinstance(x, torch.Tensor):
        return x[i:j]
    if isinstance(x, dict):
        return {k: _slice(v, i, j) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_slice(v, i, j) for v in x)
    return x  # None


def predict(model: nn.Module, x, batch_size: int = 512, device=None) -> torch.Tensor:
    """Outputs of a model for a tensor of inputs, in eval mode, on the CPU.

    Args:
        model: any module.
        x: inputs, shape ``(N, ...)``; or a dict/tuple of such tensors (same ``N``; ``None``
            entries allowed) for models whose forward takes one structured argument.
        batch_size: samples per forward pass.

    Returns:
        float32 tensor of shape ``(N, n_outputs)`` on the CPU.

    Raises:
        TypeError: ``x`` is not a tensor (or a structure of tensors); ``model`` is not a module.
        ValueError: ``batch_size < 1``; the tensors differ in length.

    The model's train/eval mode is restored even when its forward raises.
    """
    check_model(model, "predict")
    batch_size = check_int(batch_size, "predict", "batch_size", minimum=1)
    leaves = [t for t in _leaves(x) if t is not None]
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        raise TypeError(f"predict: x must be a torch.Tensor (or a dict/tuple of them), got {type(x).__name__}")
    lengths = sorted({len(t) for t in leaves})
    if len(lengths) != 1:
        raise ValueError(f"predict: the input tensors must share their first dimension, got lengths {lengths}")
    n = lengths[0]
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = torch.cat([model(to_device(_slice(x, i, i + batch_size), dev)).float().cpu()
                             for i in range(0, n, batch_size)])
    finally:
        model.train(was_training)
    return out


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _probe_width(model: nn.Module, batch, step: StepFn, n_classes: int | None) -> None:
    """Check the output width on one batch in eval mode without gradients, before any
    training-mode forward can change BatchNorm statistics; the mode is restored."""
    if n_classes is None:
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, logits, _ = _run_step(step, model, batch, "fit")
        if logits is not None:
            _check_logits(logits, n_classes, "fit")
    finally:
        model.train(was_training)


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *,
        epochs: int = 10, optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
        loss_fn: Callable | None = None, step: StepFn | None = None, scheduler=None, device=None,
        n_classes: int | None = None, after_step: Callable[[nn.Module], None] | None = None,
        callbacks: Sequence[Callable] = (), params: Iterable[torch.Tensor] | None = None,
        progress: bool = True, desc: str | None = None) -> History:
    """Train a model and record its per-epoch history: the book's one training loop.

    Every chapter trains through this function; a chapter that needs a twist passes
    a hook instead of writing a second loop:

    - ``loss_fn(logits, labels)`` to change the loss (add a penalty through a closure);
    - ``step(model, batch) -> (loss, logits, targets)`` for any other batch layout or
      objective (dict batches with masks in chapter 8, distillation from a teacher,
      a VAE's ELBO); ``logits``/``targets`` may be ``None`` when there is nothing to
      count as accuracy;
    - ``after_step(model)`` after every optimizer step (re-apply a pruning mask,
      clip a max-norm);
    - ``callbacks``: each called as ``cb(epoch, model, history)`` after every epoch
      (0-based epoch, after validation); returning ``True`` stops training
      (early stopping is such a callback, :class:`nnbook.regularize.EarlyStopping`).

    Args:
        model: the module to train; moved to ``device``.
        train_loader: an iterable of batches: ``(inputs, labels)`` pairs by default, or
            anything ``step`` understands. Tensors inside tuples, lists and dicts are
            moved to ``device``.
        val_loader: optional loader evaluated after every epoch with the same ``step``.
        epochs: number of passes over ``train_loader``, ``>= 1``.
        optimizer: a ready optimizer; Adam with ``lr`` over ``params`` by default.
        lr: learning rate of the default Adam optimizer, ``> 0``.
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (cross-entropy by default); used by
            the default step only.
        step: see above; :func:`classification_step` by default.
        scheduler: optional learning-rate scheduler, stepped once per epoch
            (``ReduceLROnPlateau`` is stepped with the validation loss, or the training
            loss when there is no validation loader).
        device: ``"cpu"``, ``"cuda"``, ... ; :func:`nnbook.device` by default.
        n_classes: when given, the model's output width is checked against it on the
            first batch, in eval mode without gradients, before any training step.
        after_step: called as ``after_step(model)`` after every optimizer step.
        callbacks: called as ``cb(epoch, model, history)`` after every epoch.
        params: the parameters the default optimizer updates (all with
            ``requires_grad`` by default).
        progress: show a progress bar over epochs (:func:`nnbook.utils.progress_bar`).
        desc: label of the progress bar.

    Returns:
        A :class:`History`; ``History.stopped_early`` tells whether a callback stopped it.

    Raises:
        ValueError: ``epochs < 1``; ``lr <= 0``; the model's logits are not
            ``(batch, n_classes)``; the training loader is empty; the loss became NaN
            or infinite (the message gives the epoch and batch).
        TypeError: ``model`` is not an ``nn.Module``; a batch is not a pair of tensors
            (with the default step); ``step`` returned something else than a triple.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> h = fit(nn.Linear(4, 2), [(x, y)], epochs=3, lr=0.1, progress=False, device="cpu")
        >>> h.epochs, len(h.train_acc)
        (3, 3)
    """
    check_model(model, "fit")
    epochs = check_int(epochs, "fit", "epochs", minimum=1)
    lr = check_positive(lr, "fit", "lr")
    if step is not None and not callable(step):
        raise TypeError(f"fit: step must be callable, got {type(step).__name__}")
    if step is not None and loss_fn is not None:
        raise ValueError("fit: give loss_fn or step, not both (a custom step computes its own loss)")
    dev = _device(device) if not isinstance(device, torch.device) else device
    model.to(dev)
    step = step or classification_step(loss_fn)
    if optimizer is None:
        trainable = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
        if not trainable:
            raise ValueError("fit: there is no parameter with requires_grad=True to train")
        optimizer = torch.optim.Adam(trainable, lr=lr)
    hist = History()
    bar = progress_bar(range(epochs), desc=desc or type(model).__name__, disable=not progress)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        total, counted, correct, loss_sum = 0, 0, 0, 0.0
        for b, batch in enumerate(train_loader):
            batch = to_device(batch, dev)
            if epoch == 0 and b == 0:
                _probe_width(model, batch, step, n_classes)
            loss, logits, targets = _run_step(step, model, batch, "fit")
            if not bool(torch.isfinite(loss.detach())):
                raise ValueError(f"fit: the loss became {float(loss.detach())} at epoch {epoch}, batch {b} "
                                 "(check the inputs for NaN/Inf, or lower the learning rate)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            n = _batch_len(batch, targets)
            loss_sum += float(loss.detach()) * n
            c, k = _count_correct(logits, targets)
            correct, counted, total = correct + c, counted + k, total + n
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        hist.epoch_time_s.append(time.perf_counter() - t0)
        if total == 0:
            raise ValueError("fit: the training loader yielded no samples")
        hist.train_loss.append(loss_sum / total)
        hist.train_acc.append(correct / counted if counted else float("nan"))
        post = {"loss": f"{hist.train_loss[-1]:.3f}"}
        if counted:
            post["acc"] = f"{hist.train_acc[-1]:.3f}"
        if val_loader is not None:
            vl, va = evaluate(model, val_loader, device=dev, n_classes=n_classes, step=step)
            hist.val_loss.append(vl)
            hist.val_acc.append(va)
            post.update(val_acc=f"{va:.3f}")
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(hist.val_loss[-1] if hist.val_loss else hist.train_loss[-1])
            else:
                scheduler.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(post)
        if any(bool(cb(epoch, model, hist)) for cb in callbacks):
            hist.stopped_early = True
            break
    return hist
