"""Multimodal networks (chapter 8): data, encoders, fusion, alignment, invariance.

The package is laid out the way the chapter is, one module per concern, each
readable top to bottom:

* :mod:`.data` — the multimodal digits set (:func:`load_multimodal_digits`): every
  sample is an 8×8 image, a 40-step signal and a noisy spelling of the class word,
  paired *by class*, each corrupted on purpose (:class:`Corruption`); and a re-pairing
  whose label needs two modalities together (:func:`interaction_task`, "same digit?");
* :mod:`.encoders` — one small encoder per modality (:func:`make_encoder`);
* :mod:`.fusion` — early, feature-level and late fusion, and the models built from
  them (:func:`make_model`, :class:`LateFusion`); **a new fusion method goes here**;
* :mod:`.training` — :func:`train` (modality dropout), :func:`predict`, :func:`accuracy`,
  thin wrappers over the book's one loop :func:`nnbook.train.fit`;
* :mod:`.align` — contrastive (CLIP-style) alignment and recall@k;
* :mod:`.invariance` — gradient reversal and modality probes.

Conventions used throughout:

* A batch of inputs is a ``dict`` mapping a modality name (``"image"``, ``"signal"``,
  ``"tokens"``) to a tensor whose first dimension is the batch.
* A *presence mask* is a bool tensor of shape ``(batch, n_modalities)``, one column per
  modality of the model in the model's order: ``True`` where that modality is present.
  A modality may be left out of the inputs only when a mask says it is absent.
* Features are stacked into a tensor of shape ``(batch, n_modalities, d)``.

Every public name is re-exported here, so ``from nnbook import multimodal as mm``
then ``mm.make_model(...)`` works whatever module a name lives in.
"""
from .data import (CLASS_WORDS, FUSIONS, INTERACTION_TASKS, MAX_LEN, MODALITIES, PAD, VOCAB, Corruption,
                   MultimodalDigits, MultimodalPart, build_multimodal_digits, decode_tokens, encode_word,
                   interaction_part, interaction_task, load_multimodal_digits, noisy_spelling)
from .encoders import ENCODERS, SAMPLE_SHAPES, ImageEncoder, SignalEncoder, TokenEncoder, make_encoder, masked_mean
from .fusion import (FEATURE_FUSIONS, AttentionFusion, CoAttentionFusion, ConcatFusion, CrossAttentionFusion,
                     EarlyFusionClassifier,
                     FusionClassifier, LateFusion, LowRankFusion, MeanFusion, TensorFusion, WeightedFusion,
                     check_inputs, make_model, masked_softmax)
from .training import (Batches, accuracy, classification_loss, fit_stacking, masked_step, modality_dropout_mask,
                       predict, present, train)
from .align import ContrastiveAligner, contrastive_loss, info_nce, recall_at_k
from .invariance import (InvariantAdapter, dann_lambda, encode_features, grad_reverse, modality_probe_accuracy,
                         train_invariant)

__all__ = [
    "CLASS_WORDS", "FUSIONS", "INTERACTION_TASKS", "interaction_part", "interaction_task", "SAMPLE_SHAPES",
    "CrossAttentionFusion", "MAX_LEN", "MODALITIES", "PAD", "VOCAB", "Corruption", "MultimodalDigits",
    "MultimodalPart", "build_multimodal_digits", "decode_tokens", "encode_word", "load_multimodal_digits",
    "noisy_spelling", "ENCODERS", "ImageEncoder", "SignalEncoder", "TokenEncoder", "make_encoder", "masked_mean",
    "FEATURE_FUSIONS", "AttentionFusion", "CoAttentionFusion", "ConcatFusion", "EarlyFusionClassifier",
    "FusionClassifier", "LateFusion", "LowRankFusion", "MeanFusion", "TensorFusion", "WeightedFusion",
    "check_inputs", "make_model", "masked_softmax", "Batches", "accuracy", "classification_loss", "fit_stacking",
    "masked_step", "modality_dropout_mask", "predict", "present", "train", "ContrastiveAligner",
    "contrastive_loss", "info_nce", "recall_at_k", "InvariantAdapter", "dann_lambda", "encode_features",
    "grad_reverse", "modality_probe_accuracy", "train_invariant",
]
