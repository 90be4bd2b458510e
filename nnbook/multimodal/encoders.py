"""One small encoder per modality, each ending in the same feature size ``d``.

Each encoder maps its modality to a sequence of ``d``-dimensional features (with a
validity mask) and to a pooled vector; attention-based fusion uses the sequences.
"""
from __future__ import annotations


import torch
from torch import nn

from .._checks import _given, check_int, check_tensor
from .data import MODALITIES, PAD, VOCAB


#: The shape of one sample of each modality (tokens: any length >= 1; early fusion needs 5).
SAMPLE_SHAPES = {"image": (1, 8, 8), "signal": (40,), "tokens": None}


def _check_modality_tensor(x, m: str, where: str) -> None:
    """Type, shape, dtype and values of one modality's batch (clear errors instead of torch's)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: inputs[{m!r}] must be a torch.Tensor, got {_given(x)}")
    if m == "tokens":
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"{where}: inputs['tokens'] must have shape (B, L) with L >= 1, got {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{where}: inputs['tokens'] must be an integer tensor of character indices, "
                            f"got dtype {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= len(VOCAB)):
            raise ValueError(f"{where}: inputs['tokens'] must hold indices in [0, {len(VOCAB)}), got values in "
                             f"[{int(x.min())}, {int(x.max())}]")
        return
    want = SAMPLE_SHAPES.get(m)
    if want is not None and tuple(x.shape[1:]) != want:
        raise ValueError(f"{where}: inputs[{m!r}] must have shape (B, {', '.join(map(str, want))}), "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: inputs[{m!r}] must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: inputs[{m!r}] must hold only finite values, got NaN or Inf")




# ---------------------------------------------------------------------------
# Encoders: each maps its modality to a sequence of d-dimensional features and a pooled vector
# ---------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, valid: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``valid`` is True.

    Args:
        x: ``(B, T, d)`` (or any shape with ``valid`` broadcastable after adding a last dim).
        valid: bool ``(B, T)``.

    Returns:
        ``(B, d)``; rows with no valid position give zeros.

    Raises:
        TypeError: ``x`` is not a floating-point tensor or ``valid`` not a bool tensor.
        ValueError: ``valid`` does not match the leading dimensions of ``x``.

    Examples:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [9.0]]]), torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    check_tensor(x, "masked_mean", "x", floating=True, nonempty=False)
    check_tensor(valid, "masked_mean", "valid", nonempty=False)
    if valid.dtype != torch.bool:
        raise TypeError(f"masked_mean: valid must be a bool tensor, got dtype {valid.dtype}")
    if x.dim() != valid.dim() + 1 or tuple(x.shape[:valid.dim()]) != tuple(valid.shape):
        raise ValueError(f"masked_mean: valid must match the leading dimensions of x, got {tuple(valid.shape)} "
                         f"for x of shape {tuple(x.shape)}")
    w = valid.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim) / w.sum(dim).clamp_min(1.0)


class ImageEncoder(nn.Module):
    """Small CNN for ``(B, 1, 8, 8)`` images.

    ``conv 3×3 (1→width) → BN → ReLU → max-pool 2 → conv 3×3 (width→d) → BN → ReLU``
    gives a 4×4 map: :meth:`sequence` returns its 16 region features ``(B, 16, d)``;
    :meth:`forward` flattens them (keeping *where* each stroke is) through
    ``Linear(16·d → d) → ReLU``, giving ``(B, d)``.
    """

    def __init__(self, d: int = 32, width: int = 16):
        super().__init__()
        self.d = d
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(2),
                                  nn.Conv2d(width, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU())
        self.fc = nn.Linear(16 * d, d)

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_modality_tensor(x, "image", "ImageEncoder")
        h = self.conv(x).flatten(2).transpose(1, 2)  # (B, 16, d)
        return h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.fc(seq.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(x))


class SignalEncoder(nn.Module):
    """Small 1-D CNN for ``(B, 40)`` signals.

    Two blocks ``conv k=5 → BN → ReLU → max-pool 2`` (channels 1→width→d) give 10 time
    steps: :meth:`sequence` returns them, ``(B, 10, d)``; :meth:`forward` flattens them
    through ``Linear(10·d → d) → ReLU``, giving ``(B, d)``.
    """

    def __init__(self, d: int = 32, width: int = 16):
        super().__init__()
        self.d = d
        self.conv = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.MaxPool1d(2),
                                  nn.Conv1d(width, d, 5, padding=2), nn.BatchNorm1d(d), nn.ReLU(),
                                  nn.MaxPool1d(2))
        self.fc = nn.Linear(10 * d, d)

    def sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_modality_tensor(x, "signal", "SignalEncoder")
        h = self.conv(x.unsqueeze(1)).transpose(1, 2)  # (B, 10, d)
        return h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.fc(seq.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(x))


class TokenEncoder(nn.Module):
    """Character embedding + LSTM for ``(B, L)`` int64 token sequences, right-padded with 0.

    :meth:`sequence` gives the LSTM outputs ``(B, L, d)`` and the non-padding mask;
    :meth:`forward` the output at each sequence's last real character, ``(B, d)``.
    """

    def __init__(self, d: int = 32, embed: int = 16, vocab: int = len(VOCAB)):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
        self.lstm = nn.LSTM(embed, d, batch_first=True)

    def sequence(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_modality_tensor(tokens, "tokens", "TokenEncoder")
        out, _ = self.lstm(self.embed(tokens))
        return out, tokens != PAD

    def pool(self, seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        last = (valid.sum(1) - 1).clamp_min(0)  # index of the last real character
        return seq[torch.arange(len(seq), device=seq.device), last]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.sequence(tokens))


ENCODERS = {"image": ImageEncoder, "signal": SignalEncoder, "tokens": TokenEncoder}


def make_encoder(modality: str, d: int = 32) -> nn.Module:
    """The encoder of one modality with feature size ``d``.

    Raises:
        TypeError: ``d`` is not an int.
        ValueError: unknown modality name, or ``d < 1``.
    """
    if modality not in ENCODERS:
        raise ValueError(f"make_encoder: unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    d = check_int(d, "make_encoder", "d", minimum=1)
    return ENCODERS[modality](d)


# ---------------------------------------------------------------------------
