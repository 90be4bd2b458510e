"""Modality-invariant features by adversarial training with a gradient-reversal layer."""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import _given, check_float, check_int, check_model, check_tensor
from ..train import fit
from .data import MultimodalPart
from .fusion import _check_modalities


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
        TypeError: ``x`` is not a floating-point tensor; ``lambd`` not a number.
        ValueError: ``lambd`` negative or not finite.

    Examples:
        >>> x = torch.ones(2, requires_grad=True)
        >>> grad_reverse(x, 0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    check_tensor(x, "grad_reverse", "x", floating=True, nonempty=False)
    lambd = check_float(lambd, "grad_reverse", "lambd", minimum=0.0)
    return _GradReverse.apply(x, lambd)


def dann_lambda(progress: float, lambd: float = 1.0) -> float:
    """The reversal weight schedule of Ganin & Lempitsky (2015): ``lambd·(2/(1+exp(-10p)) - 1)``.

    Starts at 0 (while the features are still random the discriminator's gradient is
    noise) and approaches ``lambd`` as training ``progress`` ``p`` goes from 0 to 1.
    """
    progress = check_float(progress, "dann_lambda", "progress", minimum=0.0, maximum=1.0)
    lambd = check_float(lambd, "dann_lambda", "lambd", minimum=0.0)
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
        n_modalities = check_int(n_modalities, "InvariantAdapter", "n_modalities", minimum=2)
        d = check_int(d, "InvariantAdapter", "d", minimum=1)
        n_classes = check_int(n_classes, "InvariantAdapter", "n_classes", minimum=2)
        lambd = check_float(lambd, "InvariantAdapter", "lambd", minimum=0.0)
        disc_hidden = check_int(disc_hidden, "InvariantAdapter", "disc_hidden", minimum=0)
        self.d, self.lambd = d, lambd
        self.adapters = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
                                      for _ in range(n_modalities))
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, n_classes))
        self.discriminator = (nn.Sequential(nn.Linear(d, disc_hidden), nn.ReLU(), nn.Linear(disc_hidden, n_modalities))
                              if disc_hidden else nn.Linear(d, n_modalities))

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        check_tensor(feats, "InvariantAdapter.embed", "feats", ndim=3, floating=True)
        if feats.shape[1] != len(self.adapters) or feats.shape[2] != self.d:
            raise ValueError(f"InvariantAdapter.embed: feats must have shape (B, {len(self.adapters)}, {self.d}), "
                             f"got {tuple(feats.shape)}")
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
        TypeError: ``model`` is not an :class:`InvariantAdapter`; ``feats``/``y`` not tensors.
        ValueError: ``feats`` and ``y`` disagree in length; NaN/Inf in ``feats``; labels
            out of range; ``steps``/``batch_size`` < 1; ``lr`` or ``disc_weight_decay`` invalid.
    """
    from .._checks import check_labels, check_positive

    if not isinstance(model, InvariantAdapter):
        raise TypeError(f"train_invariant: model must be an InvariantAdapter, got {_given(model)}")
    check_tensor(feats, "train_invariant", "feats", ndim=3, floating=True, finite=True)
    check_labels(y, "train_invariant", model.head[-1].out_features, name="y")
    if len(feats) != len(y):
        raise ValueError(f"train_invariant: feats and y must have the same length, got {len(feats)} and {len(y)}")
    steps = check_int(steps, "train_invariant", "steps", minimum=1)
    batch_size = check_int(batch_size, "train_invariant", "batch_size", minimum=1)
    lr = check_positive(lr, "train_invariant", "lr")
    disc_weight_decay = check_float(disc_weight_decay, "train_invariant", "disc_weight_decay", minimum=0.0)
    seed = check_int(seed, "train_invariant", "seed", minimum=0)
    was_training = model.training
    gen = torch.Generator().manual_seed(seed)
    disc = list(model.discriminator.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in disc)]
    opt = torch.optim.SGD([{"params": rest}, {"params": disc, "weight_decay": disc_weight_decay}], lr=lr)
    M = feats.shape[1]
    if M != len(model.adapters) or feats.shape[2] != model.d:
        raise ValueError(f"train_invariant: feats must have shape (N, {len(model.adapters)}, {model.d}), "
                         f"got {tuple(feats.shape)}")
    log = {"loss": [], "disc_acc": []}
    model.train()
    try:
        _game(model, feats, y, steps, batch_size, opt, gen, M, log)
    finally:
        model.train(was_training)
    model.eval()
    return log


def _game(model, feats, y, steps, batch_size, opt, gen, M, log) -> None:
    # This loop is written out on purpose: the two-player game (a discriminator that
    # descends its loss while the reversed gradient makes the adapters ascend it, with
    # weight decay on the discriminator only) is the lesson of this section, and it
    # reads best as the plain five lines of a training step.
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


def encode_features(encoders: Mapping[str, nn.Module], part: MultimodalPart, batch_size: int = 1000) -> torch.Tensor:
    """Features ``(N, M, d)`` of ``part`` from one trained encoder per modality (eval mode, no gradients).

    Args:
        encoders: ``{modality: encoder}``, e.g. ``{"image": model.encoders["image"], ...}``; the
            order of the mapping gives the order of ``M``.

    Raises:
        TypeError: ``encoders`` is not a mapping of modules, ``part`` not a :class:`MultimodalPart`.
        ValueError: an unknown modality name.
    """
    if not isinstance(encoders, Mapping) or not encoders:
        raise TypeError(f"encode_features: encoders must be a non-empty dict {{modality: encoder}}, got {_given(encoders)}")
    for m, enc in encoders.items():
        check_model(enc, "encode_features", f"encoders[{m!r}]")
    if not isinstance(part, MultimodalPart):
        raise TypeError(f"encode_features: part must be a MultimodalPart, got {_given(part)}")
    batch_size = check_int(batch_size, "encode_features", "batch_size", minimum=1)
    inputs = part.inputs()
    outs = []
    with torch.no_grad():
        for m, enc in encoders.items():
            was = enc.training
            enc.eval()
            try:
                dev = next(enc.parameters()).device
                outs.append(torch.cat([enc(inputs[m][s:s + batch_size].to(dev)).cpu()
                                       for s in range(0, len(part), batch_size)]))
            finally:
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
        TypeError: the features are not floating-point tensors.
        ValueError: the two tensors disagree in ``M`` or ``d``, are not 3-D, hold NaN or
            Inf, or ``M < 2``; ``steps < 1``; ``hidden < 0``.
    """
    check_tensor(train_feats, "modality_probe_accuracy", "train_feats", ndim=3, floating=True, finite=True)
    check_tensor(test_feats, "modality_probe_accuracy", "test_feats", ndim=3, floating=True, finite=True)
    if train_feats.shape[1:] != test_feats.shape[1:] or train_feats.shape[1] < 2:
        raise ValueError(f"modality_probe_accuracy: expected (N, M, d) features with equal M >= 2 and d, got "
                         f"{tuple(train_feats.shape)} and {tuple(test_feats.shape)}")
    steps = check_int(steps, "modality_probe_accuracy", "steps", minimum=1)
    hidden = check_int(hidden, "modality_probe_accuracy", "hidden", minimum=0)
    seed = check_int(seed, "modality_probe_accuracy", "seed", minimum=0)
    g = torch.Generator().manual_seed(seed)
    M, d = train_feats.shape[1:]
    x = train_feats.detach().flatten(0, 1).cpu()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    y = torch.arange(M).repeat(len(train_feats))
    probe = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, M)) if hidden else nn.Linear(d, M)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 1 else 1 / math.sqrt(p.shape[1])))
    xs = (x - mu) / sd
    with torch.enable_grad():  # callers often hold features computed under no_grad
        # full-batch Adam: one "epoch" of fit is one step on the whole training set
        fit(probe, [(xs, y)], epochs=steps, lr=1e-2, device="cpu", progress=False)
    xt = test_feats.detach().flatten(0, 1).cpu()
    with torch.no_grad():
        pred = probe((xt - mu) / sd).argmax(1)
    return float((pred == torch.arange(M).repeat(len(test_feats))).float().mean())
