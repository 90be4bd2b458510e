"""Knowledge distillation: training a small *student* to imitate a large *teacher*.

The case studies of chapter 9 use these pieces to recover the accuracy that pruning
or a smaller architecture lost.

* **Soft-target distillation** (Hinton, Vinyals and Dean, 2015, "Distilling the
  Knowledge in a Neural Network"): the student matches the teacher's class
  probabilities softened by a temperature ``T``,

  .. math::

      L = \\alpha\\,T^2\\,\\mathrm{KL}\\big(\\mathrm{softmax}(t/T)\\,\\|\\,\\mathrm{softmax}(s/T)\\big)
          + (1-\\alpha)\\,\\mathrm{CE}(s, y),

  where ``s`` and ``t`` are the student's and the teacher's logits and ``y`` the hard
  labels.  The gradient of the soft term with respect to ``s`` is
  ``(softmax(s/T) - softmax(t/T)) / T`` per sample; the factor ``T**2`` makes it
  ``T * (softmax(s/T) - softmax(t/T))``, whose size stays roughly the same when ``T``
  changes (for large ``T`` it tends to ``(s - t) / C`` after centring the logits), so
  ``alpha`` keeps its meaning across temperatures.  :func:`soft_targets`,
  :func:`distillation_loss`, :func:`distill_step`.
* **Hint (feature) distillation** (Romero et al., 2015, "FitNets: Hints for Thin Deep
  Nets"): an intermediate feature map of the student, passed through a small learned
  *regressor*, is pulled towards the teacher's: :func:`hint_loss`.
* **How much of the gap distillation closes**: :func:`gap_closed`, the number the
  chapter-9 claims are stated in.

Shapes.  Logits are ``(N, C)`` float tensors, labels ``(N,)`` integer tensors.  For
sequence models whose logits are ``(N, L, C)`` (classes last, as a language model
returns them), flatten first: ``distillation_loss(s.reshape(-1, C), t.reshape(-1, C),
y.reshape(-1))``; :func:`distill_step` does that for you.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import _given, check_float, check_model, check_positive, check_tensor

__all__ = ["soft_targets", "distillation_loss", "distill_step", "hint_loss", "gap_closed"]


# --------------------------------------------------------------------------- checks
def _check_logits(x, where: str, name: str) -> torch.Tensor:
    x = check_tensor(x, where, name, ndim=2, floating=True)
    return x


def _check_alpha(alpha, where: str) -> float:
    return check_float(alpha, where, "alpha", minimum=0.0, maximum=1.0)


def _check_pair(student_logits, teacher_logits, where: str):
    s = _check_logits(student_logits, where, "student_logits")
    t = _check_logits(teacher_logits, where, "teacher_logits")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"{where}: the student outputs {s.shape[1]} classes but the teacher {t.shape[1]}; "
                         "distillation needs the same classes in the same order")
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"{where}: student_logits has {s.shape[0]} rows but teacher_logits {t.shape[0]}")
    return s, t


def _check_targets(targets, n: int, n_classes: int, where: str) -> torch.Tensor:
    y = check_tensor(targets, where, "targets", ndim=1)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{where}: targets must be an integer tensor of class labels, got dtype {y.dtype}")
    if len(y) != n:
        raise ValueError(f"{where}: targets has {len(y)} labels but the logits have {n} rows")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"{where}: targets must lie in [0, {n_classes}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


# --------------------------------------------------------------------- soft targets
def soft_targets(teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The teacher's class probabilities softened by ``temperature``: ``softmax(t / T)``.

    ``T = 1`` gives the ordinary softmax; a larger ``T`` raises the small probabilities
    (which wrong classes the teacher finds *similar* to the right one — Hinton et al.'s
    "dark knowledge") so that they carry weight in the loss.

    Args:
        teacher_logits: float tensor ``(N, C)``.
        temperature: ``T > 0``.

    Returns:
        float tensor ``(N, C)``, rows summing to 1, without gradient.

    Raises:
        TypeError: ``teacher_logits`` is not a floating-point tensor; ``temperature`` is not a number.
        ValueError: ``teacher_logits`` is not 2-D or is empty; ``temperature <= 0``.

    Examples:
        >>> t = torch.tensor([[4.0, 2.0, 0.0]])
        >>> [round(p, 3) for p in soft_targets(t, 1.0)[0].tolist()]
        [0.867, 0.117, 0.016]
        >>> [round(p, 3) for p in soft_targets(t, 4.0)[0].tolist()]
        [0.506, 0.307, 0.186]
    """
    t = _check_logits(teacher_logits, "soft_targets", "teacher_logits")
    temperature = check_positive(temperature, "soft_targets", "temperature")
    return F.softmax(t.detach() / temperature, dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      targets: torch.Tensor | None, temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton et al.'s (2015) distillation loss, averaged over the batch.

    ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, where
    the KL divergence is summed over the classes and averaged over the ``N`` samples
    (``F.kl_div(..., reduction="batchmean")``) and ``CE`` is the ordinary cross-entropy
    at temperature 1.  The teacher's logits are detached: no gradient reaches the teacher.
    The gradient with respect to ``student_logits`` is
    ``alpha * T * (softmax(s/T) - softmax(t/T)) / N + (1 - alpha) * (softmax(s) - onehot(y)) / N``.

    Args:
        student_logits: float tensor ``(N, C)``.
        teacher_logits: float tensor ``(N, C)``, same classes in the same order.
        targets: int tensor ``(N,)`` of labels in ``[0, C)``; may be ``None`` only with
            ``alpha == 1`` (pure soft targets, e.g. on an unlabelled *transfer set*).
        temperature: ``T > 0``; Hinton et al. used values from 2 to 20.
        alpha: weight of the soft term, in ``[0, 1]`` (``0`` is plain cross-entropy).

    For sequences, flatten ``(N, L, C)`` logits to ``(N*L, C)`` and labels to ``(N*L,)``.

    Returns:
        A scalar tensor.

    Raises:
        TypeError: the logits are not floating-point tensors, ``targets`` is not an
            integer tensor, ``temperature``/``alpha`` are not numbers.
        ValueError: ``temperature <= 0``; ``alpha`` outside ``[0, 1]``; the logits are not
            2-D; the student and the teacher differ in the number of classes or rows;
            ``targets`` has the wrong length or labels outside ``[0, C)``; ``targets`` is
            ``None`` while ``alpha < 1``.

    Examples:
        >>> s = torch.tensor([[1.0, 0.0, -1.0]])
        >>> y = torch.tensor([0])
        >>> distillation_loss(s, s.clone(), y, temperature=4.0, alpha=1.0).item()  # same logits: KL = 0
        0.0
        >>> ce = F.cross_entropy(s, y)
        >>> bool(torch.isclose(distillation_loss(s, 3 * s, y, alpha=0.0), ce))     # alpha = 0: plain CE
        True
    """
    where = "distillation_loss"
    s, t = _check_pair(student_logits, teacher_logits, where)
    temperature = check_positive(temperature, where, "temperature")
    alpha = _check_alpha(alpha, where)
    if targets is None:
        if alpha != 1.0:
            raise ValueError(f"{where}: targets=None (no labels) needs alpha=1.0 (soft targets only), got alpha={alpha}")
        y = None
    else:
        y = _check_targets(targets, s.shape[0], s.shape[1], where)
    log_p_s = F.log_softmax(s / temperature, dim=1)
    log_p_t = F.log_softmax(t.detach().to(s.dtype) / temperature, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2
    if y is None or alpha == 1.0:
        return alpha * soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(s, y)


def _flatten(logits: torch.Tensor, targets, where: str, name: str):
    """``(N, L, C)`` logits (classes last) and ``(N, L)`` labels -> ``(N*L, C)`` and ``(N*L,)``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{where}: the {name} must return a tensor of logits, got {_given(logits)}")
    if logits.dim() < 2:
        raise ValueError(f"{where}: the {name} must return logits of shape (N, C) or (N, L, C), "
                         f"got shape {tuple(logits.shape)}")
    if logits.dim() > 2:
        logits = logits.reshape(-1, logits.shape[-1])
        if isinstance(targets, torch.Tensor):
            targets = targets.reshape(-1)
    return logits, targets


def distill_step(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> Callable:
    """A ``step`` for :func:`nnbook.train.fit` that trains the model as a distilled student.

    The teacher runs in eval mode without gradients on every batch; the student's loss is
    :func:`distillation_loss`.  Use it as ``fit(student, loader, step=distill_step(teacher))``.
    :func:`nnbook.train.evaluate` with the same step reports the distillation loss and the
    student's accuracy; evaluate with the default step for the plain cross-entropy.

    Batches may be

    * ``(x, y)``: inputs and labels (the usual layout);
    * ``(x, y, t)``: with the teacher's logits ``t`` precomputed (the teacher is then not
      run; useful when the teacher is slow and the inputs are not augmented);
    * ``x`` alone or ``(x,)``: an unlabelled *transfer set*; needs ``alpha == 1``; the step
      then returns the teacher's argmax as ``targets``, so ``fit``'s accuracy is the
      student's agreement with the teacher;
    * ``(x, t)`` with ``t`` a *floating-point* tensor: an unlabelled batch with the
      teacher's logits precomputed (labels are integer tensors, so the two pair layouts
      cannot be confused); needs ``alpha == 1`` as well.

    Sequence models returning ``(N, L, C)`` logits (classes last) with ``(N, L)`` labels
    are flattened to ``(N*L, C)`` and ``(N*L,)``.

    Args:
        teacher: the trained teacher; it is not modified (its train/eval mode is
            restored after each call).
        temperature: ``T > 0``.
        alpha: weight of the soft term in ``[0, 1]``.

    Returns:
        ``step(model, batch) -> (loss, student_logits, targets)``.

    Raises:
        TypeError: ``teacher`` is not a module; ``temperature``/``alpha`` are not numbers;
            (when called) a batch of another layout.
        ValueError: ``temperature <= 0``; ``alpha`` outside ``[0, 1]``; (when called) the
            teacher and the student output a different number of classes, checked on the
            first batch (so before any training step); an unlabelled batch with ``alpha < 1``.

    Examples:
        >>> from nnbook.train import fit
        >>> torch.manual_seed(0) and None
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> h = fit(student, [(x, y)], epochs=2, step=distill_step(teacher, 2.0, 0.5),
        ...         progress=False, device="cpu")
        >>> h.epochs
        2
        >>> fit(nn.Linear(4, 5), [(x, y)], epochs=1, step=distill_step(teacher),
        ...     progress=False, device="cpu")
        Traceback (most recent call last):
        ...
        ValueError: distill_step: the student outputs 5 classes but the teacher 3; distillation needs the same classes in the same order
    """
    where = "distill_step"
    check_model(teacher, where, "teacher")
    temperature = check_positive(temperature, where, "temperature")
    alpha = _check_alpha(alpha, where)
    checked = {"done": False}

    def teacher_logits(x):
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                return teacher(x)
        finally:
            teacher.train(was_training)

    def step(model: nn.Module, batch):
        t = None
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2, 3):
            x = batch[0]
            y = batch[1] if len(batch) > 1 else None
            t = batch[2] if len(batch) == 3 else None
            if len(batch) == 2 and isinstance(y, torch.Tensor) and y.is_floating_point():
                y, t = None, y  # (x, teacher_logits): an unlabelled batch with precomputed teacher logits
        else:
            raise TypeError(f"{where}: a batch must be x, (x,), (x, y) or (x, y, teacher_logits), "
                            f"got {_given(batch)}")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{where}: the inputs must be a torch.Tensor, got {_given(x)}")
        if t is None:
            t = teacher_logits(x)
        s = model(x)
        s, y = _flatten(s, y, where, "student")
        t, _ = _flatten(t, None, where, "teacher")
        if not checked["done"]:
            if s.shape[-1] != t.shape[-1]:
                raise ValueError(f"{where}: the student outputs {s.shape[-1]} classes but the teacher "
                                 f"{t.shape[-1]}; distillation needs the same classes in the same order")
            checked["done"] = True
        if y is None:
            if alpha != 1.0:
                raise ValueError(f"{where}: an unlabelled batch needs alpha=1.0 (soft targets only), got alpha={alpha}")
            loss = distillation_loss(s, t, None, temperature, 1.0)
            return loss, s, t.argmax(1)
        try:
            loss = distillation_loss(s, t, y, temperature, alpha)
        except (TypeError, ValueError) as e:
            raise type(e)(str(e).replace("distillation_loss:", f"{where}:", 1)) from None
        return loss, s, y

    return step


# ------------------------------------------------------------------------- hints
def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              regressor: nn.Module | None = None) -> torch.Tensor:
    """FitNets' hint loss (Romero et al., 2015): mean squared error between features.

    ``mean((r(u) - v)**2)`` where ``u`` is a feature map of the student, ``v`` the
    teacher's feature map at the *hint* layer, and ``r`` a small trainable *regressor*
    (e.g. a 1×1 convolution or a linear layer) that maps the thinner student features
    to the teacher's width.  The teacher's features are detached.  (Romero et al. write
    ``1/2 * ||v - r(u)||^2``; the mean only rescales it, which the weight of the term absorbs.)

    Args:
        student_features: float tensor ``(N, ...)``.
        teacher_features: float tensor ``(N, ...)``.
        regressor: module applied to ``student_features`` first (identity by default);
            its parameters must be trained together with the student.

    Returns:
        A scalar tensor.

    Raises:
        TypeError: features not floating-point tensors; ``regressor`` not a module.
        ValueError: empty features; shapes that differ after the regressor.

    Examples:
        >>> u, v = torch.zeros(2, 3), torch.ones(2, 4)
        >>> r = nn.Linear(3, 4)
        >>> with torch.no_grad():
        ...     _ = r.weight.zero_(); _ = r.bias.fill_(0.5)
        >>> hint_loss(u, v, r).item()
        0.25
    """
    where = "hint_loss"
    u = check_tensor(student_features, where, "student_features", floating=True)
    v = check_tensor(teacher_features, where, "teacher_features", floating=True)
    if regressor is not None:
        check_model(regressor, where, "regressor")
        u = regressor(u)
    if u.shape != v.shape:
        raise ValueError(f"{where}: the student features{' after the regressor' if regressor is not None else ''} "
                         f"have shape {tuple(u.shape)} but the teacher's {tuple(v.shape)}")
    return F.mse_loss(u, v.detach())


# ---------------------------------------------------------------------- reporting
def gap_closed(student: float, distilled: float, teacher: float) -> float:
    """Fraction of the student–teacher gap that distillation closes: ``(distilled - student) / (teacher - student)``.

    Works for a score where higher is better (accuracy) and for one where lower is better
    (errors, bits per character): the signs cancel.  ``1`` means the distilled student
    matches the teacher, ``0`` that distillation did nothing, a negative value that it hurt.
    Hinton et al. (2015) on MNIST: 146 errors for the student, 74 distilled, 67 for the
    teacher, so ``gap_closed(146, 74, 67)`` is about 0.91.

    Raises:
        TypeError: a value is not a real number.
        ValueError: a value is not finite; ``teacher == student`` (there is no gap).

    Examples:
        >>> round(gap_closed(146, 74, 67), 3)
        0.911
        >>> gap_closed(90, 95, 100)   # accuracies in %
        0.5
    """
    where = "gap_closed"
    s = check_float(student, where, "student")
    d = check_float(distilled, where, "distilled")
    t = check_float(teacher, where, "teacher")
    if t == s:
        raise ValueError(f"{where}: the teacher and the student score the same ({t}); there is no gap to close")
    return (d - s) / (t - s)
