"""One small encoder per modality, each ending in the same feature size ``d``.

Each encoder maps its modality to a sequence of ``d``-dimensional features (with a
validity mask) and to a pooled vector; attention-based fusion uses the sequences.
"""
from __future__ import annotations


import torch
from torch import nn

from .data import MODALITIES, PAD, VOCAB


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
    """
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
        ValueError: unknown modality name, or ``d < 1``.
    """
    if modality not in ENCODERS:
        raise ValueError(f"unknown modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"feature size d must be an int >= 1, got {d!r}")
    return ENCODERS[modality](d)


# ---------------------------------------------------------------------------
