"""Regularization (chapter 6): penalties, DropConnect, early stopping, max-norm, augmentation.

Everything here plugs into the book's one training loop, :func:`nnbook.train.fit`:

* **penalties** (:func:`l2_penalty`, :func:`l1_penalty`) are added to the loss through
  ``fit(loss_fn=penalized_loss(model, l2=...))``;
* **decoupled weight decay** is an optimizer (``torch.optim.AdamW``), given the
  parameter groups of :func:`param_groups` so that biases are not decayed;
* **DropConnect** (:class:`DropConnect`) and **variational recurrent dropout**
  (:class:`RecurrentDropoutClassifier`) are layers/models;
* **early stopping** (:class:`EarlyStopping`) is a ``fit`` callback;
* the **max-norm constraint** (:func:`max_norm`) is an ``after_step`` hook;
* **data augmentation** (:func:`digits_augmentation`, :func:`shift_and_noise`) runs in a
  ``step`` built by :func:`augmented_step`, in training mode only.

Which parameters are penalized: by default only *weights* of dimension >= 2 (the
matrices and kernels of linear and convolutional layers). Biases and the scales and
shifts of normalization layers are 1-D and are left out, as is usual (a penalty on a
bias does not reduce the capacity of the function, and decaying a BatchNorm scale
interacts with the normalization).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_bool, check_choice, check_float, check_fraction, check_int, check_model, check_tensor

__all__ = [
    "penalized_parameters", "param_groups", "l2_penalty", "l1_penalty", "penalized_loss",
    "DropConnect", "EarlyStopping", "max_norm_", "max_norm",
    "digits_augmentation", "augment_images", "shift_and_noise", "augmented_step",
    "RecurrentDropoutClassifier", "near_zero_fraction",
]


# --------------------------------------------------------------------------- penalties

def penalized_parameters(model: nn.Module, include_bias: bool = False) -> list[nn.Parameter]:
    """The parameters a penalty (or weight decay) acts on.

    Args:
        model: any module.
        include_bias: also include the 1-D parameters (biases, normalization scales and shifts).

    Returns:
        The trainable parameters of dimension >= 2 (all trainable ones with ``include_bias``).

    Raises:
        TypeError: ``model`` is not a module, or ``include_bias`` not a bool.
    """
    check_model(model, "penalized_parameters")
    include_bias = check_bool(include_bias, "penalized_parameters", "include_bias")
    return [p for p in model.parameters() if p.requires_grad and (include_bias or p.dim() >= 2)]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer parameter groups: weights decayed by ``weight_decay``, the 1-D rest not.

    Pass the result to an optimizer, e.g. ``torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)``.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``weight_decay < 0``.

    Examples:
        >>> groups = param_groups(nn.Linear(3, 2), 0.1)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.1), (1, 0.0)]
    """
    check_model(model, "param_groups")
    weight_decay = check_float(weight_decay, "param_groups", "weight_decay", minimum=0.0)
    decayed = {id(p) for p in penalized_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]


def l2_penalty(model: nn.Module, lam: float, include_bias: bool = False) -> torch.Tensor:
    """The L2 penalty :math:`\\frac{\\lambda}{2}\\lVert\\theta\\rVert_2^2` of a model's weights.

    The factor 1/2 makes the gradient exactly ``lam * theta``, so that plain SGD with
    this penalty and SGD with ``weight_decay=lam`` take identical steps (this is
    "weight decay" in its original sense; with Adam the two differ, see
    :func:`torch.optim.AdamW` and Loshchilov & Hutter, 2019). Note the *square*: the
    unsquared norm :math:`\\lambda\\lVert\\theta\\rVert_2` is a different penalty
    (its gradient has constant length ``lam``).

    Args:
        model: the module whose parameters are penalized (see :func:`penalized_parameters`).
        lam: the coefficient :math:`\\lambda \\ge 0` (per unit of the loss).
        include_bias: also penalize biases and normalization parameters.

    Returns:
        A scalar tensor (float32) that carries gradients.

    Raises:
        TypeError: ``model`` is not a module, ``lam`` not a number.
        ValueError: ``lam < 0`` or not finite.

    Examples:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> round(l2_penalty(layer, 0.1).item(), 6)  # 0.1 / 2 * (9 + 16), the bias left out
        1.25
    """
    lam = check_float(lam, "l2_penalty", "lam", minimum=0.0)
    params = penalized_parameters(check_model(model, "l2_penalty"), include_bias)
    if not params:
        return torch.zeros(())
    return 0.5 * lam * sum(p.pow(2).sum() for p in params)


def l1_penalty(model: nn.Module, lam: float, include_bias: bool = False) -> torch.Tensor:
    """The L1 penalty :math:`\\lambda\\lVert\\theta\\rVert_1 = \\lambda\\sum_i |\\theta_i|` (Tibshirani, 1996).

    Its (sub)gradient ``lam * sign(theta)`` has the same size for small and large
    weights, so it pushes small weights all the way to zero: L1 gives sparse models.

    Args, returns and errors: as :func:`l2_penalty`.

    Examples:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, -4.0]]))
        >>> round(l1_penalty(layer, 0.1).item(), 6)  # 0.1 * (3 + 4)
        0.7
    """
    lam = check_float(lam, "l1_penalty", "lam", minimum=0.0)
    params = penalized_parameters(check_model(model, "l1_penalty"), include_bias)
    if not params:
        return torch.zeros(())
    return lam * sum(p.abs().sum() for p in params)


def penalized_loss(model: nn.Module, *, l1: float = 0.0, l2: float = 0.0, label_smoothing: float = 0.0,
                   include_bias: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``loss_fn(logits, labels)`` for :func:`nnbook.train.fit`: cross-entropy plus penalties.

    ``loss = CE(logits, labels; label_smoothing) + l1_penalty(model, l1) + l2_penalty(model, l2)``.

    Label smoothing (Szegedy et al., 2016) replaces the one-hot target by
    ``(1 - eps) * one_hot + eps / n_classes``.

    Args:
        model: the model being trained (its parameters are read at every call).
        l1, l2: penalty coefficients, ``>= 0``.
        label_smoothing: ``eps`` in ``[0, 1)``.
        include_bias: also penalize biases and normalization parameters.

    Returns:
        ``loss_fn(logits, labels) -> scalar tensor``.

    Raises:
        TypeError, ValueError: a coefficient is not a number ``>= 0``; ``label_smoothing``
        is outside ``[0, 1)``.

    Examples:
        >>> model = nn.Linear(4, 3)
        >>> loss_fn = penalized_loss(model, l2=1e-2)
        >>> logits, y = model(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1])
        >>> bool(loss_fn(logits, y) > F.cross_entropy(logits, y))
        True
    """
    check_model(model, "penalized_loss")
    l1 = check_float(l1, "penalized_loss", "l1", minimum=0.0)
    l2 = check_float(l2, "penalized_loss", "l2", minimum=0.0)
    label_smoothing = check_fraction(label_smoothing, "penalized_loss", "label_smoothing")

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if l1:
            loss = loss + l1_penalty(model, l1, include_bias)
        if l2:
            loss = loss + l2_penalty(model, l2, include_bias)
        return loss

    return loss_fn


def near_zero_fraction(model: nn.Module, tol: float = 1e-2) -> float:
    """Fraction of the penalized weights (dimension >= 2) with ``|w| <= tol``.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``tol < 0``, or the model has no weight matrix.

    Examples:
        >>> layer = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0], [0.001, -2.0]]))
        >>> near_zero_fraction(layer)
        0.5
    """
    tol = check_float(tol, "near_zero_fraction", "tol", minimum=0.0)
    params = penalized_parameters(check_model(model, "near_zero_fraction"))
    if not params:
        raise ValueError("near_zero_fraction: the model has no weight of dimension >= 2")
    small = sum(int((p.detach().abs() <= tol).sum()) for p in params)
    return small / sum(p.numel() for p in params)


# --------------------------------------------------------------------------- DropConnect

class DropConnect(nn.Module):
    """A linear layer whose *weights* are dropped at training time (Wan et al., 2013).

    Dropout (Srivastava et al., 2014) zeroes *activations*: every unit is kept with
    probability ``1 - p``. DropConnect instead zeroes each *weight* :math:`W_{ij}`
    independently, with a fresh Bernoulli mask :math:`M` for every example:

    .. math:: y = \\frac{1}{1-p}\\,(M \\odot W)\\,x + b, \\qquad M_{ij} \\sim \\text{Bernoulli}(1 - p).

    The factor ``1 / (1 - p)`` ("inverted" scaling, as PyTorch's dropout) keeps the
    expected output equal to ``W x + b``, so at inference this layer uses the mean
    weights ``W`` (the *mean rule*). Wan et al. instead approximate, for each unit, the
    distribution of the pre-activation by a Gaussian with the matching mean and
    variance, and average the activation over samples of it (moment matching); the
    mean rule is the simpler, cheaper approximation used here.

    Drawing one mask per example (shape ``(N, out, in)``) costs ``N`` times the
    weight's memory; this layer is meant for small layers.

    Args:
        in_features, out_features: sizes of the input and output (``>= 1``).
        p: probability of dropping a weight, in ``[0, 1)``.
        bias: learn an additive bias (never dropped).

    Shapes:
        input ``(N, in_features)`` float; output ``(N, out_features)``.

    Raises:
        TypeError, ValueError: bad sizes or ``p`` outside ``[0, 1)`` (at construction);
        an input that is not a 2-D float tensor with ``in_features`` columns (at call).

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> layer = DropConnect(4, 3, p=0.5)
        >>> x = torch.randn(2, 4)
        >>> torch.allclose(layer.eval()(x), nn.functional.linear(x, layer.weight, layer.bias))
        True
        >>> layer.train()(x).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True):
        super().__init__()
        self.in_features = check_int(in_features, "DropConnect", "in_features", minimum=1)
        self.out_features = check_int(out_features, "DropConnect", "out_features", minimum=1)
        self.p = check_fraction(p, "DropConnect", "p")
        bias = check_bool(bias, "DropConnect", "bias")
        ref = nn.Linear(self.in_features, self.out_features, bias=bias)  # PyTorch's default initialization
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float = 0.5) -> "DropConnect":
        """A DropConnect layer with a copy of ``linear``'s weights and bias."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"DropConnect.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, p, bias=linear.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "DropConnect", "input", ndim=2, floating=True)
        if x.shape[1] != self.in_features:
            raise ValueError(f"DropConnect: input must have {self.in_features} features per row, "
                             f"got shape {tuple(x.shape)}")
        if not self.training or self.p == 0.0:
            return F.linear(x, self.weight, self.bias)
        keep = 1.0 - self.p
        mask = torch.rand(x.shape[0], *self.weight.shape, device=x.device) < keep  # Bernoulli(keep)
        w = self.weight.unsqueeze(0) * mask / keep  # (N, out, in): one weight matrix per example
        y = (w * x.unsqueeze(1)).sum(2)  # y[n] = w[n] @ x[n]
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, p={self.p}, bias={self.bias is not None}"


# --------------------------------------------------------------------------- early stopping

class EarlyStopping:
    """A :func:`nnbook.train.fit` callback: stop when the validation score stops improving.

    Called as ``cb(epoch, model, history)`` after every epoch, it reads the last entry
    of ``history.val_acc`` (``monitor="val_acc"``, higher is better) or
    ``history.val_loss`` (``monitor="val_loss"``, lower is better). It keeps a copy of
    the model's ``state_dict`` at the best epoch so far, and returns ``True`` (stop)
    after ``patience`` epochs without an improvement larger than ``min_delta``. When
    it stops and ``restore_best`` is set, it loads the best weights back into the
    model. When ``fit`` instead runs to its last epoch, call :meth:`restore` after it.

    Early stopping as a regularizer: the number of epochs is a capacity knob chosen on
    validation data (Prechelt, 1998; Goodfellow et al., 2016, section 7.8).

    Args:
        patience: epochs without improvement before stopping, ``>= 1``.
        monitor: ``"val_acc"`` or ``"val_loss"``.
        restore_best: load the best weights when stopping.
        min_delta: the smallest change that counts as an improvement, ``>= 0``.

    Attributes:
        best_score: the best monitored value so far (``None`` before the first epoch).
        best_epoch: its 0-based epoch.
        best_state: a copy (on the CPU) of the model's ``state_dict`` at that epoch.
        stopped_epoch: the epoch at which training was stopped, or ``None``.

    Raises:
        TypeError, ValueError: ``patience < 1``, an unknown ``monitor``, ``min_delta < 0``
        (at construction); a history without validation entries (at call).

    Examples:
        >>> from nnbook.train import fit
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> stop = EarlyStopping(patience=2)
        >>> h = fit(nn.Linear(4, 2), [(x, y)], [(x, y)], epochs=50, lr=0.5, callbacks=[stop],
        ...         progress=False, device="cpu")
        >>> stop.best_score == max(h.val_acc)
        True
    """

    def __init__(self, patience: int = 5, monitor: str = "val_acc", restore_best: bool = True,
                 min_delta: float = 0.0):
        self.patience = check_int(patience, "EarlyStopping", "patience", minimum=1)
        self.monitor = check_choice(monitor, "EarlyStopping", "monitor", ("val_acc", "val_loss"))
        self.restore_best = check_bool(restore_best, "EarlyStopping", "restore_best")
        self.min_delta = check_float(min_delta, "EarlyStopping", "min_delta", minimum=0.0)
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict | None = None
        self.stopped_epoch: int | None = None

    def _improved(self, score: float) -> bool:
        if self.best_score is None:
            return True
        if self.monitor == "val_acc":
            return score > self.best_score + self.min_delta
        return score < self.best_score - self.min_delta

    def __call__(self, epoch: int, model: nn.Module, history) -> bool:
        values = getattr(history, self.monitor, None)
        if not values:
            raise ValueError(f"EarlyStopping: history has no {self.monitor} entries (give fit a val_loader)")
        score = float(values[-1])
        if self._improved(score):
            self.best_score, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return False
        if epoch - self.best_epoch >= self.patience:
            self.stopped_epoch = epoch
            if self.restore_best:
                self.restore(model)
            return True
        return False

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best weights seen into ``model`` (in place) and return it.

        Raises:
            RuntimeError: the callback has not been called yet.
        """
        check_model(model, "EarlyStopping.restore")
        if self.best_state is None:
            raise RuntimeError("EarlyStopping.restore: no epoch recorded yet (pass it to fit as a callback first)")
        model.load_state_dict(self.best_state)
        return model


# --------------------------------------------------------------------------- max-norm

def max_norm_(model: nn.Module, max_value: float = 3.0) -> None:
    """Rescale, in place, every unit's incoming weight vector to an L2 norm of at most ``max_value``.

    For a ``Linear`` or ``Conv`` weight of shape ``(out, ...)``, each slice ``W[j]`` (the
    weights into unit ``j``) is divided by ``max(1, ||W[j]||_2 / max_value)``. Srivastava
    et al. (2014) combine this constraint with dropout (typical ``max_value`` 3 to 4).

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: ``max_value <= 0``.

    Examples:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> max_norm_(layer, 1.0)
        >>> layer.weight.detach().norm().item()
        1.0
    """
    check_model(model, "max_norm_")
    max_value = check_float(max_value, "max_norm_", "max_value", minimum=0.0, min_open=True)
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and w.dim() >= 2 and isinstance(m, (nn.Linear, DropConnect, nn.Conv1d, nn.Conv2d)):
                norms = w.flatten(1).norm(dim=1).clamp_min(1e-12)
                scale = (max_value / norms).clamp(max=1.0)
                w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))


def max_norm(max_value: float = 3.0) -> Callable[[nn.Module], None]:
    """An ``after_step`` hook for :func:`nnbook.train.fit` that applies :func:`max_norm_`.

    Raises:
        ValueError: ``max_value <= 0``.
    """
    max_value = check_float(max_value, "max_norm", "max_value", minimum=0.0, min_open=True)
    return lambda model: max_norm_(model, max_value)


# --------------------------------------------------------------------------- augmentation

def digits_augmentation(degrees: float = 10.0, max_shift: float = 1.0):
    """Random small rotations and shifts for 8×8 digits images (``torchvision.transforms.v2``).

    Args:
        degrees: rotations drawn uniformly from ``[-degrees, degrees]``.
        max_shift: shifts of up to this many pixels in each direction (on an 8-pixel side).

    Returns:
        A ``v2.RandomAffine`` transform for one ``(1, 8, 8)`` image tensor. (Given a
        batch, a v2 transform draws *one* set of parameters for the whole batch; use
        :func:`augment_images` for independent draws per image.)

    Raises:
        ValueError: ``degrees`` outside ``[0, 180]`` or ``max_shift`` outside ``[0, 4]``.
    """
    from torchvision.transforms import v2

    degrees = check_float(degrees, "digits_augmentation", "degrees", minimum=0.0, maximum=180.0)
    max_shift = check_float(max_shift, "digits_augmentation", "max_shift", minimum=0.0, maximum=4.0)
    return v2.RandomAffine(degrees=degrees, translate=(max_shift / 8.0, max_shift / 8.0))


def augment_images(x: torch.Tensor, transform: Callable) -> torch.Tensor:
    """Apply ``transform`` to every image of a batch independently.

    Args:
        x: images ``(N, C, H, W)``, float.
        transform: a per-image transform such as :func:`digits_augmentation`'s.

    Returns:
        A new tensor of the same shape and dtype.

    Raises:
        TypeError, ValueError: ``x`` is not a 4-D float tensor; ``transform`` not callable.

    Examples:
        >>> x = torch.rand(5, 1, 8, 8)
        >>> augment_images(x, digits_augmentation()).shape
        torch.Size([5, 1, 8, 8])
    """
    check_tensor(x, "augment_images", "x", ndim=4, floating=True)
    if not callable(transform):
        raise TypeError(f"augment_images: transform must be callable, got {type(transform).__name__}")
    return torch.stack([transform(img) for img in x])


def shift_and_noise(x: torch.Tensor, max_shift: int = 4, noise: float = 0.1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment 1-D signals as MNIST-1D's own generator varies them: a random shift plus Gaussian noise.

    Each signal ``x[i]`` is shifted by an integer ``s_i`` drawn uniformly from
    ``[-max_shift, max_shift]`` (the edge value is repeated where the shift uncovers
    the border), then white noise of standard deviation ``noise`` is added.
    (Greydanus, 2020, builds MNIST-1D from templates with random padding/shifts,
    scaling, shear and correlated noise.)

    Args:
        x: signals ``(N, L)``, float.
        max_shift: largest shift in samples, ``>= 0``.
        noise: standard deviation of the added noise, ``>= 0``.
        generator: an optional ``torch.Generator`` for reproducible draws.

    Returns:
        A new ``(N, L)`` tensor.

    Raises:
        TypeError, ValueError: ``x`` is not a 2-D float tensor, ``max_shift`` not an int
        in ``[0, L)``, or ``noise < 0``.

    Examples:
        >>> x = torch.arange(6.0).view(1, 6)
        >>> shift_and_noise(x, max_shift=0, noise=0.0).tolist()
        [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    """
    check_tensor(x, "shift_and_noise", "x", ndim=2, floating=True)
    n, length = x.shape
    max_shift = check_int(max_shift, "shift_and_noise", "max_shift", minimum=0, maximum=length - 1)
    noise = check_float(noise, "shift_and_noise", "noise", minimum=0.0)
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=generator)
    idx = (torch.arange(length).unsqueeze(0) - shifts).clamp(0, length - 1).to(x.device)
    out = x.gather(1, idx)
    if noise:
        out = out + noise * torch.randn(out.shape, generator=generator).to(x.device)
    return out


def augmented_step(augment: Callable[[torch.Tensor], torch.Tensor],
                   loss_fn: Callable | None = None) -> Callable:
    """A ``step`` for :func:`nnbook.train.fit` that augments the inputs in training mode only.

    ``fit`` also evaluates the validation loader with its ``step``; there the model is
    in eval mode and the inputs are left untouched.

    Args:
        augment: maps a batch of inputs to a batch of augmented inputs of the same shape.
        loss_fn: ``loss_fn(logits, labels)``; cross-entropy by default.

    Returns:
        ``step(model, (x, y)) -> (loss, logits, y)``.

    Raises:
        TypeError: ``augment`` (or ``loss_fn``) is not callable.
    """
    if not callable(augment):
        raise TypeError(f"augmented_step: augment must be callable, got {type(augment).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"augmented_step: loss_fn must be callable, got {type(loss_fn).__name__}")
    loss_fn = loss_fn or F.cross_entropy

    def step(model: nn.Module, batch):
        x, y = batch
        if model.training:
            x = augment(x)
        logits = model(x)
        return loss_fn(logits, y), logits, y

    return step


# --------------------------------------------------------------------------- recurrent dropout

class RecurrentDropoutClassifier(nn.Module):
    """A GRU sequence classifier with dropout on its recurrent connections: naive or variational.

    At step ``t`` a GRU computes its gates from the input ``x_t`` and the previous state
    ``h_{t-1}`` (``r, z = σ(W x_t + U h_{t-1} + b)``, ``n = tanh(W_n x_t + r ⊙ (U_n h_{t-1} + b_n))``)
    and then mixes ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``. Dropout here multiplies the copy of
    ``h_{t-1}`` that enters the recurrent products ``U h_{t-1}`` by a mask (inverted scaling,
    ``1 / (1 - p)``); the carry path ``z ⊙ h_{t-1}`` is left unmasked, as in Gal & Ghahramani's
    (2016) GRU and Keras' ``recurrent_dropout``:

    * ``mode="naive"``: a fresh mask at every time step (standard dropout applied
      step by step);
    * ``mode="variational"``: one mask per sequence, reused at every step (Gal &
      Ghahramani, 2016), the dropout that follows from reading the network as a
      Bayesian model;
    * ``mode="none"``: no dropout (then the model computes exactly what ``nn.GRUCell`` does).

    Why not mask the whole state? A unit kept by a variational mask would then be
    multiplied by ``1 / (1 - p)`` at *every* step through the carry path: after ``T`` steps
    by ``(1 - p)^-T`` (about 1,000 for ``p = 0.5, T = 10``), which wrecks training. The
    step is written out (not ``nn.GRUCell``) because where the mask goes is the lesson;
    the weights live in an ``nn.GRUCell`` so the two can be compared.

    Args:
        hidden: hidden-state size, ``>= 1``.
        p: dropout probability on the recurrent state, in ``[0, 1)``.
        mode: ``"naive"``, ``"variational"`` or ``"none"``.
        n_classes: output logits.

        input_size: values fed to the cell per time step; a 2-D input ``(N, L)`` is read
            as ``L / input_size`` steps of ``input_size`` consecutive values.
        mask_carry: also mask the carry path ``z ⊙ h_{t-1}`` (the whole state), the common
            mistake described above; ``False`` (default) follows Gal & Ghahramani.

    Shapes:
        input ``(N, L)`` or ``(N, T, input_size)``, float; output ``(N, n_classes)``.

    Raises:
        TypeError, ValueError: bad sizes, ``p`` outside ``[0, 1)``, an unknown mode; an
        input that is not a 2-D or 3-D float tensor with one channel.

    Examples:
        >>> model = RecurrentDropoutClassifier(hidden=8, p=0.25, mode="variational", input_size=4)
        >>> model(torch.randn(3, 40)).shape  # 10 steps of 4 values
        torch.Size([3, 10])
    """

    def __init__(self, hidden: int = 32, p: float = 0.25, mode: str = "variational", n_classes: int = 10,
                 input_size: int = 1, mask_carry: bool = False):
        super().__init__()
        self.input_size = check_int(input_size, "RecurrentDropoutClassifier", "input_size", minimum=1)
        self.hidden = check_int(hidden, "RecurrentDropoutClassifier", "hidden", minimum=1)
        self.p = check_fraction(p, "RecurrentDropoutClassifier", "p")
        self.mode = check_choice(mode, "RecurrentDropoutClassifier", "mode", ("naive", "variational", "none"))
        n_classes = check_int(n_classes, "RecurrentDropoutClassifier", "n_classes", minimum=1)
        self.mask_carry = check_bool(mask_carry, "RecurrentDropoutClassifier", "mask_carry")
        self.cell = nn.GRUCell(self.input_size, self.hidden)
        self.head = nn.Linear(self.hidden, n_classes)

    def _mask(self, h: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.p
        return torch.bernoulli(torch.full_like(h, keep)) / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "RecurrentDropoutClassifier", "input", ndim=(2, 3), floating=True)
        if x.dim() == 2:  # (N, L): group consecutive samples into steps of input_size values
            if x.shape[1] % self.input_size:
                raise ValueError(f"RecurrentDropoutClassifier: sequence length {x.shape[1]} is not a multiple "
                                 f"of input_size={self.input_size}")
            x = x.reshape(x.shape[0], -1, self.input_size)
        if x.shape[2] != self.input_size:
            raise ValueError(f"RecurrentDropoutClassifier: input must have {self.input_size} features per step, "
                             f"got shape {tuple(x.shape)}")
        h = x.new_zeros(x.shape[0], self.hidden)
        drop = self.training and self.mode != "none" and self.p > 0
        mask = self._mask(h) if drop and self.mode == "variational" else None  # one mask per sequence
        c = self.cell
        for t in range(x.shape[1]):
            h_in = h
            if drop:  # naive: a fresh mask per step; variational: the sequence's mask
                h_in = h * (self._mask(h) if self.mode == "naive" else mask)
            gi = F.linear(x[:, t], c.weight_ih, c.bias_ih).chunk(3, dim=1)    # input part of r, z, n
            gh = F.linear(h_in, c.weight_hh, c.bias_hh).chunk(3, dim=1)       # recurrent part (masked)
            r = torch.sigmoid(gi[0] + gh[0])
            z = torch.sigmoid(gi[1] + gh[1])
            n = torch.tanh(gi[2] + r * gh[2])
            h = (1 - z) * n + z * (h_in if self.mask_carry else h)  # the carry path: unmasked by default
        return self.head(h)
