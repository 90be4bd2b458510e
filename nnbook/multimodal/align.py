"""Contrastive alignment of two modalities (CLIP-style InfoNCE) and retrieval recall@k."""
from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import _given, check_int, check_positive, check_tensor
from .fusion import _check_modalities, check_inputs
from .encoders import make_encoder


# ---------------------------------------------------------------------------
# Contrastive alignment
# ---------------------------------------------------------------------------
def info_nce(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor | float = 10.0) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss of a batch of paired embeddings.

    Sample ``i`` of ``za`` and sample ``i`` of ``zb`` form the positive pair; the other
    ``B-1`` samples of the batch are the negatives (van den Oord et al., 2018,
    "Representation Learning with Contrastive Predictive Coding"; Radford et al., 2021,
    "Learning Transferable Visual Models From Natural Language Supervision").

    ``loss = (CE(s·A Bᵀ, I) + CE(s·B Aᵀ, I)) / 2`` with L2-normalized rows and scale
    ``s = 1/temperature``.

    Args:
        za, zb: ``(B, e)`` float embeddings (normalized here).
        scale: inverse temperature (a tensor, so it can be learned, or a float).

    Raises:
        TypeError: ``za``/``zb`` are not floating-point tensors; ``scale`` is not a number
            or one-element float tensor.
        ValueError: shapes differ or are not 2-D; NaN or Inf in the embeddings; ``scale <= 0``
            or not finite.

    Examples:
        >>> za = torch.eye(3)
        >>> round(float(info_nce(za, za, scale=10.0)), 4)   # perfectly matched pairs: small loss
        0.0001
        >>> info_nce(za, za, scale=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: info_nce: scale must be in (0.0, inf], got -1.0
    """
    check_tensor(za, "info_nce", "za", ndim=2, floating=True, finite=True)
    check_tensor(zb, "info_nce", "zb", ndim=2, floating=True, finite=True)
    if za.shape != zb.shape:
        raise ValueError(f"info_nce: za and zb must have the same shape (B, e), got {tuple(za.shape)} and {tuple(zb.shape)}")
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1 or not scale.is_floating_point():
            raise TypeError(f"info_nce: scale must be a positive number or a one-element float tensor, got {_given(scale)}")
        if not bool(torch.isfinite(scale.detach()).all()) or float(scale.detach()) <= 0:
            raise ValueError(f"info_nce: scale (inverse temperature) must be finite and > 0, got {float(scale.detach())}")
    else:
        scale = check_positive(scale, "info_nce", "scale")
    za, zb = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = scale * za @ zb.T
    target = torch.arange(len(za), device=za.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ContrastiveAligner(nn.Module):
    """Two encoders and linear projections into a shared, L2-normalized embedding space.

    ``forward(inputs, mask=None) -> (za, zb)``, each ``(B, embed)`` with unit rows.  The
    inverse temperature is learned as ``exp(log_scale)``, started at ``1/temperature``
    and clamped to at most 100, as in CLIP.  ``encoders`` (optional) starts from trained
    encoders, which are copied, never modified.  Train with
    ``train(aligner, part, loss_fn=contrastive_loss)``.

    Raises:
        ValueError: ``temperature`` not finite and > 0; ``d`` or ``embed`` < 1; the two
            modalities equal or unknown; ``encoders`` not given for exactly ``(a, b)``.
    """

    def __init__(self, a: str = "image", b: str = "signal", d: int = 32, embed: int = 32, temperature: float = 0.1,
                 encoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        temperature = check_positive(temperature, "ContrastiveAligner", "temperature")
        d = check_int(d, "ContrastiveAligner", "d", minimum=1)
        embed = check_int(embed, "ContrastiveAligner", "embed", minimum=1)
        self.modalities = _check_modalities((a, b))
        if len(self.modalities) != 2:
            raise ValueError("ContrastiveAligner aligns exactly two different modalities")
        if encoders is None:
            self.encoders = nn.ModuleDict({m: make_encoder(m, d) for m in self.modalities})
        else:
            if set(encoders) != set(self.modalities):
                raise ValueError(f"encoders must be given for exactly {self.modalities}, got {sorted(encoders)}")
            self.encoders = nn.ModuleDict({m: copy.deepcopy(encoders[m]) for m in self.modalities})
        self.proj = nn.ModuleDict({m: nn.Linear(d, embed) for m in self.modalities})
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(N, embed)`` of one modality's inputs."""
        if modality not in self.modalities:
            raise ValueError(f"ContrastiveAligner.embed: modality must be one of {self.modalities}, got {modality!r}")
        check_inputs({modality: x}, (modality,), None, "ContrastiveAligner.embed")
        return F.normalize(self.proj[modality](self.encoders[modality](x)), dim=1)

    def forward(self, inputs, mask=None):
        check_inputs(inputs, self.modalities, None, "ContrastiveAligner")
        dev = self.log_scale.device
        return tuple(self.embed(m, inputs[m].to(dev)) for m in self.modalities)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)


def contrastive_loss(model: ContrastiveAligner, inputs, y, mask):
    """``loss_fn`` for :func:`train`: InfoNCE of the aligner's two embeddings (labels unused)."""
    za, zb = model(inputs)
    return info_nce(za, zb, model.scale), None


def recall_at_k(queries: torch.Tensor, candidates: torch.Tensor, ks: Sequence[int] = (1, 5),
                query_labels: torch.Tensor | None = None,
                candidate_labels: torch.Tensor | None = None) -> dict[int, float]:
    """Retrieval recall@k by cosine similarity.

    Two definitions of a hit:

    * *instance match* (no labels): query ``i``'s only correct candidate is candidate ``i``
      (needs as many candidates as queries); chance recall@1 is ``1/N``;
    * *class match* (both label tensors given): any candidate with the query's label is
      correct; chance recall@1 is the fraction of candidates that share the query's label.

    Args:
        queries: ``(Q, e)``; candidates: ``(N, e)``.
        ks: the cut-offs, each in ``1..N``.

    Returns:
        ``{k: fraction of queries with a correct candidate among the k most similar}``.

    Raises:
        TypeError: embeddings not floating-point tensors, labels not integer tensors,
            ``ks`` not a sequence of ints.
        ValueError: mismatched shapes, NaN or Inf in the embeddings, a bad ``k``, or only
            one of the label tensors given.

    Examples:
        >>> z = torch.eye(4)
        >>> recall_at_k(z, z, ks=(1,))
        {1: 1.0}
    """
    check_tensor(queries, "recall_at_k", "queries", ndim=2, floating=True, finite=True)
    check_tensor(candidates, "recall_at_k", "candidates", ndim=2, floating=True, finite=True)
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"recall_at_k: queries (Q, e) and candidates (N, e) must share e, got {tuple(queries.shape)} "
                         f"and {tuple(candidates.shape)}")
    if (query_labels is None) != (candidate_labels is None):
        raise ValueError("recall_at_k: give both query_labels and candidate_labels (class match) or neither (instance match)")
    if query_labels is not None:
        for name, lab, n in (("query_labels", query_labels, len(queries)), ("candidate_labels", candidate_labels, len(candidates))):
            check_tensor(lab, "recall_at_k", name, ndim=1)
            if lab.is_floating_point() or lab.dtype == torch.bool:
                raise TypeError(f"recall_at_k: {name} must be an integer tensor, got dtype {lab.dtype}")
            if len(lab) != n:
                raise ValueError(f"recall_at_k: {name} must have one label per row ({n}), got {len(lab)}")
    if isinstance(ks, (int, str)) or not isinstance(ks, Sequence) or not ks:
        raise TypeError(f"recall_at_k: ks must be a non-empty sequence of ints, got {_given(ks)}")
    ks = [check_int(k, "recall_at_k", "k") for k in ks]
    N = len(candidates)
    if any(not 1 <= k <= N for k in ks):
        raise ValueError(f"recall_at_k: every k must be in 1..{N}, got {list(ks)}")
    sim = F.normalize(queries, dim=1) @ F.normalize(candidates, dim=1).T
    top = sim.topk(max(ks), dim=1).indices  # (Q, kmax)
    if query_labels is None:
        if len(queries) != N:
            raise ValueError(f"recall_at_k: instance match needs as many queries as candidates, got {len(queries)} and {N}")
        hit = top == torch.arange(N, device=top.device).unsqueeze(1)
    else:
        hit = candidate_labels.to(top.device)[top] == query_labels.to(top.device).unsqueeze(1)
    return {k: float(hit[:, :k].any(1).float().mean()) for k in ks}


# ---------------------------------------------------------------------------
