"""Fusion: how the modalities' features are combined, and the models built from them.

* early fusion (:class:`EarlyFusionClassifier`) concatenates the raw inputs;
* feature-level fusion modules map stacked features ``(B, M, d)`` and a presence mask
  ``(B, M)`` to one vector (:class:`ConcatFusion`, :class:`MeanFusion`,
  :class:`WeightedFusion`, :class:`AttentionFusion`, :class:`TensorFusion`,
  :class:`LowRankFusion`, :class:`CoAttentionFusion`), wrapped by :class:`FusionClassifier`;
* decision-level (late) fusion (:class:`LateFusion`) combines per-modality classifiers.

:func:`make_model` builds any of them by name (:data:`FUSIONS`). A new fusion method is
a module with ``forward(feats, mask)`` here, plus a name in :func:`make_model`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .data import FUSIONS, MAX_LEN, MODALITIES, VOCAB
from .encoders import make_encoder, masked_mean


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
