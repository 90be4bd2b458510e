"""Dynamic networks: computation that adapts to each input (chapter 7).

A *dynamic* network decides, per input, how much of itself to run (Han et al., 2021,
"Dynamic Neural Networks: A Survey").  This package holds the building blocks chapter 7
measures, one module per topic:

* :mod:`nnbook.dynamic.early_exit` — multi-exit networks (BranchyNet, Teerapittayanon
  et al., 2016): :class:`MultiExitNet`, :func:`multi_exit_mlp`, :func:`joint_exit_loss`,
  :func:`confidence`, :func:`exit_flops`, :func:`early_exit_predict` (batch 1, per sample),
  :func:`route_batch` (batched routing), :func:`choose_threshold`.
* :mod:`nnbook.dynamic.moe` — sparsely-gated mixture of experts with top-k gating
  (Shazeer et al., 2017): :class:`MoE`, :class:`MoEClassifier`, :func:`balance_loss`,
  :func:`expert_load`, :func:`moe_step`.
* :mod:`nnbook.dynamic.depth` — stochastic depth (Huang et al., 2016) and dropping residual
  blocks at inference: :class:`StochasticDepthMLP`.
* :mod:`nnbook.dynamic.plasticity` — differentiable plasticity (Miconi et al., 2018):
  :class:`PlasticRNN`, :class:`GRUTwin`, :func:`pattern_episodes`, :class:`EpisodeStream`,
  :func:`recall_error`, :func:`episode_step`.
* :mod:`nnbook.dynamic.vae` — a variational autoencoder (Kingma & Welling, 2014), which is
  *not* a dynamic network but a generative latent-variable model; it lives here because the
  chapter places it correctly: :class:`VAE`, :func:`elbo_terms`, :func:`vae_step`.
"""
from .depth import StochasticDepthMLP
from .early_exit import (MultiExitNet, choose_threshold, confidence, early_exit_predict, exit_flops,
                         joint_exit_loss, multi_exit_mlp, multi_exit_step, route_batch)
from .moe import MoE, MoEClassifier, balance_loss, expert_load, moe_step
from .plasticity import EpisodeStream, GRUTwin, PlasticRNN, episode_step, pattern_episodes, recall_error
from .vae import VAE, elbo_terms, vae_step

__all__ = [
    "EpisodeStream", "GRUTwin", "MoE", "MoEClassifier", "MultiExitNet", "PlasticRNN", "StochasticDepthMLP",
    "VAE", "balance_loss", "choose_threshold", "confidence", "early_exit_predict", "elbo_terms",
    "episode_step", "exit_flops", "expert_load", "joint_exit_loss", "moe_step", "multi_exit_mlp",
    "multi_exit_step", "pattern_episodes", "recall_error", "route_batch", "vae_step",
]
