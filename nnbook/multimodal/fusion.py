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

from .._checks import _given, check_choice, check_int, check_model, check_tensor
from .data import FUSIONS, MAX_LEN, MODALITIES, VOCAB
from .encoders import _check_modality_tensor, make_encoder, masked_mean


# ---------------------------------------------------------------------------
# Feature-level fusion: (B, M, d) features + (B, M) presence mask -> (B, out_features)
# ---------------------------------------------------------------------------
def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` in which positions with ``mask == False`` get weight 0.

    A row with no True position gets all-zero weights (not NaN): that is how an absent
    modality or an all-padding sequence contributes nothing.

    Args:
        scores: float tensor; mask: bool tensor broadcastable to ``scores``.

    Raises:
        TypeError: ``scores`` is not a floating-point tensor or ``mask`` not a bool tensor.
        ValueError: the shapes do not broadcast, or a score at a position the mask keeps
            is NaN or infinite (a zero row would hide it).

    Examples:
        >>> masked_softmax(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[True, True, False]]))
        tensor([[0.5000, 0.5000, 0.0000]])
    """
    check_tensor(scores, "masked_softmax", "scores", floating=True, nonempty=False)
    check_tensor(mask, "masked_softmax", "mask", nonempty=False)
    if mask.dtype != torch.bool:
        raise TypeError(f"masked_softmax: mask must be a bool tensor, got dtype {mask.dtype}")
    try:
        torch.broadcast_shapes(scores.shape, mask.shape)
    except RuntimeError:
        raise ValueError(f"masked_softmax: mask of shape {tuple(mask.shape)} does not broadcast to scores of "
                         f"shape {tuple(scores.shape)}") from None
    if not bool(torch.isfinite(scores.detach()).logical_or(~mask).all()):
        raise ValueError("masked_softmax: scores must be finite where the mask is True, got NaN or Inf")
    scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(w, nan=0.0)


class ConcatFusion(nn.Module):
    """Concatenate the modality features (absent ones as zeros): ``(B, M, d) -> (B, M*d)``."""

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        _check_sizes("ConcatFusion", n_modalities, d)
        self.out_features = n_modalities * d

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_fusion_args("ConcatFusion", feats, mask)
        return (feats * mask.unsqueeze(-1)).flatten(1)


class MeanFusion(nn.Module):
    """Average the features of the present modalities: ``(B, M, d) -> (B, d)``."""

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        _check_sizes("MeanFusion", n_modalities, d)
        self.out_features = d

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_fusion_args("MeanFusion", feats, mask)
        return masked_mean(feats, mask)


class WeightedFusion(nn.Module):
    """Weighted sum with *learned, input-independent* modality weights ``softmax(w)``.

    ``w`` holds one learnable logit per modality; the softmax runs over the present
    modalities of each sample.  ``(B, M, d) -> (B, d)``.
    """

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        _check_sizes("WeightedFusion", n_modalities, d)
        self.out_features = d
        self.logits = nn.Parameter(torch.zeros(n_modalities))

    def weights(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Modality weights ``(B, M)``, each row summing to 1 over the present modalities."""
        return masked_softmax(self.logits.expand_as(mask), mask, dim=1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_fusion_args("WeightedFusion", feats, mask)
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
        _check_sizes("AttentionFusion", n_modalities, d)
        if hidden is not None:
            check_int(hidden, "AttentionFusion", "hidden", minimum=1)
        self.out_features = d
        self.score = nn.Sequential(nn.Linear(d, hidden or d), nn.Tanh(), nn.Linear(hidden or d, 1, bias=False))

    def weights(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, M)``: softmax over modalities, rows sum to 1."""
        _check_fusion_args("AttentionFusion", feats, mask)
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
        _check_sizes("TensorFusion", n_modalities, d)
        check_int(p, "TensorFusion", "p", minimum=1)
        self.proj = nn.ModuleList(nn.Linear(d, p) for _ in range(n_modalities))
        self.out_features = (p + 1) ** n_modalities

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_fusion_args("TensorFusion", feats, mask)
        if feats.shape[1] != len(self.proj):
            raise ValueError(f"TensorFusion: feats must have {len(self.proj)} modalities, got shape {tuple(feats.shape)}")
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
        _check_sizes("LowRankFusion", n_modalities, d)
        check_int(rank, "LowRankFusion", "rank", minimum=1)
        if out is not None:
            check_int(out, "LowRankFusion", "out", minimum=1)
        out = out or d
        self.out_features = out
        self.factors = nn.Parameter(torch.randn(n_modalities, rank, d + 1, out) / math.sqrt(d + 1))
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_fusion_args("LowRankFusion", feats, mask)
        if tuple(feats.shape[1:]) != (self.factors.shape[0], self.factors.shape[2] - 1):
            raise ValueError(f"LowRankFusion: feats must have shape (B, {self.factors.shape[0]}, "
                             f"{self.factors.shape[2] - 1}), got {tuple(feats.shape)}")
        z = torch.cat([feats.new_ones(*feats.shape[:2], 1), feats * mask.unsqueeze(-1)], dim=2)  # (B, M, d+1)
        per_mod = torch.einsum("bmi,mrio->bmro", z, self.factors)  # (B, M, rank, out)
        return per_mod.prod(dim=1).sum(dim=1) + self.bias


class CrossAttentionFusion(nn.Module):
    """Cross-modal attention from a pooled query: each modality's *summary* attends over
    the *elements* of every other modality (image regions, signal time steps, characters).

    This is one-directional, transformer-style cross-attention (not Lu et al.'s
    co-attention, see :class:`CoAttentionFusion`). For modalities ``a != b``:
    ``c_{a<-b} = softmax(q_a K_b^T / sqrt(d)) V_b`` with ``q_a = W_q f_a`` and
    ``K_b, V_b = W_k S_b, W_v S_b`` from ``b``'s sequence ``S_b`` (padding and absent
    modalities masked out).  The output for ``a`` is ``f_a + mean_b c_{a<-b}``; the fused
    vector concatenates them: ``(B, M*d)``.  Needs the encoders' sequences
    (``uses_sequences = True``).
    """

    uses_sequences = True

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        _check_sizes("CrossAttentionFusion", n_modalities, d)
        self.out_features = n_modalities * d
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor,
                seqs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        _check_fusion_args("CrossAttentionFusion", feats, mask, seqs)
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


class CoAttentionFusion(nn.Module):
    """Parallel co-attention (Lu et al., 2016, "Hierarchical Question-Image Co-Attention
    for Visual Question Answering", NIPS 2016, pp. 289-297), for every pair of modalities.

    For a pair ``(a, b)`` with element sequences ``S_a (B, T_a, d)`` and ``S_b (B, T_b, d)``
    (row vectors; the paper writes columns):

    * affinity ``C = tanh(S_a W_ab S_b^T)``, ``(B, T_a, T_b)``, one learned ``W_ab (d, d)``
      per pair (entries of padding or absent elements set to 0);
    * ``H_a = tanh(S_a U_a^T + C (S_b U_b^T))`` and ``H_b = tanh(S_b U_b^T + C^T (S_a U_a^T))``,
      ``(B, T, k)``: each side's elements, informed by the other side through ``C``;
    * attention maps ``α_a = softmax(H_a w_a)`` over ``a``'s elements and
      ``α_b = softmax(H_b w_b)`` over ``b``'s (valid elements only), both computed at
      once ("parallel");
    * attended summaries ``â = α_a^T S_a`` and ``b̂ = α_b^T S_b``, ``(B, d)``.

    ``U_m (k, d)`` and ``w_m (k,)`` belong to modality ``m`` and are shared by its pairs.
    With more than two modalities, modality ``a``'s output is ``f_a + mean_b â^{(b)}``
    over the present partners ``b`` (the residual ``f_a`` is this book's addition; the
    paper combines the summaries with an MLP); absent modalities give zeros. The fused
    vector concatenates the outputs: ``(B, M*d)``.  Needs the encoders' sequences
    (``uses_sequences = True``).

    Examples:
        >>> fuse = CoAttentionFusion(2, d=4, k=3)
        >>> seqs = [(torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)),
        ...         (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))]
        >>> feats, mask = torch.randn(2, 2, 4), torch.ones(2, 2, dtype=torch.bool)
        >>> tuple(fuse(feats, mask, seqs).shape)
        (2, 8)
        >>> a_hat, b_hat, alpha_a, alpha_b, C = fuse.co_attend(0, 1, *seqs[0], *seqs[1])
        >>> tuple(C.shape), tuple(alpha_a.shape), round(float(alpha_b.detach().sum(1)[0]), 4)
        ((2, 5, 3), (2, 5), 1.0)
    """

    uses_sequences = True

    def __init__(self, n_modalities: int, d: int, k: int | None = None):
        super().__init__()
        _check_sizes("CoAttentionFusion", n_modalities, d)
        k = d if k is None else check_int(k, "CoAttentionFusion", "k", minimum=1)
        self.n_modalities, self.d, self.k = n_modalities, d, k
        self.out_features = n_modalities * d
        self.pairs = [(a, b) for a in range(n_modalities) for b in range(a + 1, n_modalities)]
        self.affinity = nn.ParameterList(nn.Parameter(torch.randn(d, d) / d) for _ in self.pairs)
        self.U = nn.ModuleList(nn.Linear(d, k, bias=False) for _ in range(n_modalities))
        self.w = nn.ModuleList(nn.Linear(k, 1, bias=False) for _ in range(n_modalities))

    def co_attend(self, a: int, b: int, seq_a: torch.Tensor, valid_a: torch.Tensor,
                  seq_b: torch.Tensor, valid_b: torch.Tensor):
        """Parallel co-attention of modalities ``a < b``.

        Returns:
            ``(a_hat, b_hat, alpha_a, alpha_b, C)``: summaries ``(B, d)``, attention maps
            ``(B, T_a)`` and ``(B, T_b)`` (rows sum to 1 over valid elements) and the
            affinity ``(B, T_a, T_b)``.
        """
        W = self.affinity[self.pairs.index((a, b))]
        both = (valid_a.unsqueeze(2) & valid_b.unsqueeze(1)).to(seq_a.dtype)
        C = torch.tanh(seq_a @ W @ seq_b.transpose(1, 2)) * both  # (B, T_a, T_b)
        pa, pb = self.U[a](seq_a), self.U[b](seq_b)  # (B, T, k)
        h_a = torch.tanh(pa + C @ pb)
        h_b = torch.tanh(pb + C.transpose(1, 2) @ pa)
        alpha_a = masked_softmax(self.w[a](h_a).squeeze(-1), valid_a, dim=1)
        alpha_b = masked_softmax(self.w[b](h_b).squeeze(-1), valid_b, dim=1)
        a_hat = (alpha_a.unsqueeze(1) @ seq_a).squeeze(1)
        b_hat = (alpha_b.unsqueeze(1) @ seq_b).squeeze(1)
        return a_hat, b_hat, alpha_a, alpha_b, C

    def forward(self, feats: torch.Tensor, mask: torch.Tensor,
                seqs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        _check_fusion_args("CoAttentionFusion", feats, mask, seqs)
        if feats.shape[1] != self.n_modalities:
            raise ValueError(f"CoAttentionFusion: feats must have {self.n_modalities} modalities, "
                             f"got shape {tuple(feats.shape)}")
        maskf = mask.to(feats.dtype)
        ctx = torch.zeros_like(feats)
        for a, b in self.pairs:
            (sa, va), (sb, vb) = seqs[a], seqs[b]
            a_hat, b_hat, *_ = self.co_attend(a, b, sa, va & mask[:, a:a + 1], sb, vb & mask[:, b:b + 1])
            both = (maskf[:, a] * maskf[:, b]).unsqueeze(1)  # the pair counts only if both are present
            ctx[:, a] = ctx[:, a] + a_hat * both
            ctx[:, b] = ctx[:, b] + b_hat * both
        partners = (maskf.sum(1, keepdim=True) - 1).clamp_min(1).unsqueeze(-1)  # present partners per modality
        return ((feats + ctx / partners) * maskf.unsqueeze(-1)).flatten(1)


def _check_sizes(where: str, n_modalities, d) -> None:
    check_int(n_modalities, where, "n_modalities", minimum=1)
    check_int(d, where, "d", minimum=1)


def _check_fusion_args(where: str, feats, mask, seqs=None) -> None:
    """Shapes of a fusion module's inputs: ``feats (B, M, d)`` float, ``mask (B, M)`` bool."""
    check_tensor(feats, where, "feats", ndim=3, floating=True)
    check_tensor(mask, where, "mask", ndim=2)
    if mask.dtype != torch.bool:
        raise TypeError(f"{where}: mask must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(feats.shape[:2]):
        raise ValueError(f"{where}: mask must have shape (B, M) = {tuple(feats.shape[:2])} to match feats, "
                         f"got {tuple(mask.shape)}")
    if seqs is not None and (not isinstance(seqs, (list, tuple)) or len(seqs) != feats.shape[1]):
        raise ValueError(f"{where}: seqs must be a list of {feats.shape[1]} (sequence, valid) pairs, "
                         f"got {type(seqs).__name__}")


FEATURE_FUSIONS = {"concat": ConcatFusion, "mean": MeanFusion, "weighted": WeightedFusion,
                   "attention": AttentionFusion, "tensor": TensorFusion, "lowrank": LowRankFusion,
                   "coattention": CoAttentionFusion, "crossattention": CrossAttentionFusion}


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def _batch_size_of(inputs, modalities, where: str) -> int:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"{where}: inputs must be a dict {{modality: tensor}}, got {_given(inputs)}")
    sizes = {}
    for m in modalities:
        x = inputs.get(m)
        if x is None:
            continue
        _check_modality_tensor(x, m, where)
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
        raise TypeError(f"{where}: mask must be a bool torch.Tensor, got {_given(mask)}")
    if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{where}: mask must be a bool (or 0/1) tensor, got other values")
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
        raise TypeError(f"make_model: modalities must be a sequence of names, got {modalities!r}")
    modalities = tuple(modalities)
    bad = [m for m in modalities if not isinstance(m, str) or m not in MODALITIES]
    if not modalities or bad or len(set(modalities)) != len(modalities):
        raise ValueError(f"make_model: modalities must be distinct names from {MODALITIES}, got {modalities}")
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
        check_model(fusion, "FusionClassifier", "fusion")
        d = check_int(d, "FusionClassifier", "d", minimum=1)
        n_classes = check_int(n_classes, "FusionClassifier", "n_classes", minimum=2)
        self.modalities = _check_modalities(modalities)
        self.d = d
        self.encoders = nn.ModuleDict({m: make_encoder(m, d) for m in self.modalities})
        self.fusion = fusion
        self.head = nn.Sequential(nn.Linear(fusion.out_features, d), nn.ReLU(), nn.Linear(d, n_classes))

    def freeze_encoders(self) -> "FusionClassifier":
        """Freeze every encoder: no gradients, and kept in eval mode (batch-norm statistics
        fixed) even while the rest of the model trains.  Returns the model."""
        self.encoders.requires_grad_(False)
        self._frozen_encoders = True
        self.encoders.eval()
        return self

    def train(self, mode: bool = True) -> "FusionClassifier":
        super().train(mode)
        if getattr(self, "_frozen_encoders", False):
            self.encoders.eval()
        return self

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
        hidden = check_int(hidden, "EarlyFusionClassifier", "hidden", minimum=1)
        n_classes = check_int(n_classes, "EarlyFusionClassifier", "n_classes", minimum=2)
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
            if m == "tokens" and x.shape[1] != MAX_LEN:
                raise ValueError(f"EarlyFusionClassifier: inputs['tokens'] must have shape (B, {MAX_LEN}), "
                                 f"got {tuple(x.shape)}")
            x = F.one_hot(x.long(), len(VOCAB)).float() if m == "tokens" else x.float()
            parts.append(x.flatten(1) * mask[:, j:j + 1].to(dev))
        return self.mlp(torch.cat(parts, dim=1))


def make_model(fusion: str = "concat", modalities: Sequence[str] = MODALITIES, d: int = 32,
               n_classes: int = 10, encoders: Mapping[str, nn.Module] | None = None,
               freeze_encoders: bool = False, **fusion_kwargs) -> nn.Module:
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
        encoders: optional ``{modality: trained encoder}`` for every modality of a
            feature-level model; copies are loaded (the originals are never modified).
        freeze_encoders: keep those encoders fixed (:meth:`FusionClassifier.freeze_encoders`):
            only the fusion module and the head train.
        fusion_kwargs: passed to the fusion module (``p`` for tensor, ``rank`` for
            lowrank, ``hidden`` for attention and early).

    Returns:
        An ``nn.Module`` with ``forward(inputs, mask=None) -> (B, n_classes)`` logits and a
        ``modalities`` attribute.

    Raises:
        TypeError: ``fusion`` is not a string; ``d`` or ``n_classes`` not an int; ``freeze_encoders`` not a bool.
        ValueError: unknown fusion or modality name; ``d < 1``; ``n_classes < 2``; ``encoders`` not
            matching the modalities; ``freeze_encoders`` without ``encoders``.
    """
    if not isinstance(fusion, str):
        raise TypeError(f"make_model: fusion must be a string, got {_given(fusion)}")
    if fusion not in FUSIONS:
        raise ValueError(f"make_model: unknown fusion {fusion!r}: expected one of {', '.join(FUSIONS)} "
                         "(decision-level fusion: LateFusion(members, rule))")
    modalities = _check_modalities(modalities)
    d = check_int(d, "make_model", "d", minimum=1)
    n_classes = check_int(n_classes, "make_model", "n_classes", minimum=2)
    if not isinstance(freeze_encoders, bool):
        raise TypeError(f"make_model: freeze_encoders must be True or False, got {_given(freeze_encoders)}")
    if fusion == "early":
        if encoders is not None or freeze_encoders:
            raise ValueError("make_model: early fusion has no encoders; encoders= and freeze_encoders= do not apply")
        return EarlyFusionClassifier(modalities, n_classes=n_classes, **fusion_kwargs)
    module = FEATURE_FUSIONS[fusion](len(modalities), d, **fusion_kwargs)
    model = FusionClassifier(modalities, module, d=d, n_classes=n_classes)
    if encoders is not None:
        if not isinstance(encoders, Mapping) or set(encoders) != set(modalities):
            got = sorted(encoders) if isinstance(encoders, Mapping) else _given(encoders)
            raise ValueError(f"make_model: encoders must map exactly the modalities {list(modalities)} to "
                             f"encoders, got {got}")
        for m in modalities:
            check_model(encoders[m], "make_model", f"encoders[{m!r}]")
            try:
                model.encoders[m].load_state_dict(encoders[m].state_dict())
            except RuntimeError as err:
                raise ValueError(f"make_model: encoders[{m!r}] does not match a {m} encoder of size d={d}: "
                                 f"{str(err).splitlines()[0]}") from None
    if freeze_encoders:
        if encoders is None:
            raise ValueError("make_model: freeze_encoders=True needs trained encoders= (freezing random "
                             "encoders is rarely what you want)")
        model.freeze_encoders()
    return model


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
        TypeError: ``members`` is not a list of ``nn.Module``; ``n_classes`` not an int.
        ValueError: no member, unknown rule, ``n_classes < 2``, a member using more than
            one modality, or two members for the same modality.
    """

    RULES = ("mean", "vote", "stack")

    def __init__(self, members: Sequence[nn.Module], rule: str = "mean", n_classes: int = 10):
        super().__init__()
        check_choice(rule, "LateFusion", "rule", self.RULES)
        n_classes = check_int(n_classes, "LateFusion", "n_classes", minimum=2)
        if isinstance(members, (nn.Module, str)) or not isinstance(members, Iterable):
            raise TypeError(f"LateFusion: members must be a list of unimodal models, got {_given(members)}")
        members = list(members)
        if not members:
            raise ValueError("LateFusion: members must hold at least one unimodal model, got an empty list")
        for i, m in enumerate(members):
            check_model(m, "LateFusion", f"members[{i}]")
        mods = [tuple(getattr(m, "modalities", ())) for m in members]
        if any(len(t) != 1 for t in mods) or len({t[0] for t in mods}) != len(mods):
            raise ValueError(f"LateFusion: members must be unimodal models with distinct modalities, got {mods}")
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
