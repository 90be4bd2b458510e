"""A variational autoencoder (Kingma & Welling, 2014, "Auto-Encoding Variational Bayes").

Not a dynamic network: a VAE runs the same computation for every input. It is a
*generative latent-variable model*: a decoder ``p(x | z)`` turns a latent code ``z ~ N(0, I)``
into data, and an encoder ``q(z | x) = N(mu(x), diag(exp(logvar(x))))`` approximates the
posterior. Training maximizes the evidence lower bound (ELBO), a lower bound of ``log p(x)``:

``ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || N(0, I))``

estimated with one sample ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` (the
*reparameterization trick*, which lets gradients flow through the sampling).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int


class VAE(nn.Module):
    """An MLP VAE for images in ``[0, 1]`` with a Bernoulli decoder (logits out).

    Args:
        in_features: pixels per image (64 for 8x8 digits).
        hidden: hidden units of encoder and decoder.
        latent: size of ``z`` (2 lets us draw the latent space).

    ``forward(x)`` returns ``(logits, mu, logvar)`` with shapes ``(batch, in_features)`` and
    ``(batch, latent)`` twice; ``decode(z)`` returns pixel probabilities.

    Examples:
        >>> vae = VAE(64, 32, 2)
        >>> [tuple(t.shape) for t in vae(torch.rand(5, 1, 8, 8))]
        [(5, 64), (5, 2), (5, 2)]
    """

    def __init__(self, in_features: int = 64, hidden: int = 128, latent: int = 2):
        super().__init__()
        for name, v in (("in_features", in_features), ("hidden", hidden), ("latent", latent)):
            check_int(v, "VAE", name, minimum=1)
        self.latent = latent
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.to_mu = nn.Linear(hidden, latent)
        self.to_logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, in_features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``(batch, in_features)`` for latent codes ``z (batch, latent)``."""
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterization
        return self.decoder(z), mu, logvar


def elbo_terms(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction log-likelihood and KL term, in nats (one-sample estimate).

    ``log p(x | z)`` is the Bernoulli log-likelihood of the pixel intensities (``-BCE`` summed
    over pixels); ``KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``. ELBO = recon - KL.

    Returns:
        ``(recon, kl)``, two float tensors ``(batch,)``.
    """
    logits, mu, logvar = model(x)
    target = x.flatten(1)
    recon = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return recon, kl


def vae_step(model: VAE, batch):
    """``step`` for :func:`nnbook.train.fit`: the loss is ``-ELBO`` per image in nats; labels are ignored.

    Returns ``(-mean ELBO, None, None)``: a VAE has no accuracy to count.
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    recon, kl = elbo_terms(model, x)
    return -(recon - kl).mean(), None, None
