"""nnbook: the helper package of *Optimizing Neural Network Architectures*.

The chapters import this package for everything they reuse: data loading
(:mod:`nnbook.data`), the training loop (:mod:`nnbook.train`), measurement of
size and speed (:mod:`nnbook.measure`), plotting (:mod:`nnbook.plot`), the
book's reference models (:mod:`nnbook.models`) and an atomic on-disk cache
(:mod:`nnbook.cache`), and the book's one way of stating a number,
:func:`nnbook.claim`, which lives with the rest of the book's records (results tables, the
reader of the stored notebooks and the shipped ledger chapter 11 studies) in
:mod:`nnbook.ledger`.  The techniques the book teaches have a module (or package)
each: :mod:`nnbook.nas` (chapter 3), :mod:`nnbook.prune` and :mod:`nnbook.sparsity`
(chapters 4 and 4b), :mod:`nnbook.quantize` (chapter 5), :mod:`nnbook.intquant`
(5b: integer-only arithmetic, LSQ), :mod:`nnbook.weightonly` (5c: group-wise int4,
GPTQ, AWQ), :mod:`nnbook.regularize` (chapter 6), :mod:`nnbook.dynamic` (chapter 7),
:mod:`nnbook.multimodal` (chapter 8), and for the case studies of chapter 9
:mod:`nnbook.distill` (knowledge distillation), :mod:`nnbook.charlm` (9b) and
:mod:`nnbook.streaming` (9c).
Shared input checks live in the private :mod:`nnbook._checks`.

The version below is stamped into every chapter's setup cell
(``tools/stamp_setup.py``) so that a notebook warns when it is run with a
different ``nnbook`` than the one it was executed with.
"""
__version__ = "0.2.0"

from .utils import check_version, current_seed, device, seed_everything, show_source  # noqa: E402
from .ledger import claim  # noqa: E402
from . import cache, data, ledger, measure, models, plot, train  # noqa: E402
from . import dynamic, multimodal, nas, prune, quantize, regularize  # noqa: E402
from . import charlm, distill, intquant, sparsity, streaming, weightonly  # noqa: E402

__all__ = [
    "__version__",
    "cache",
    "charlm",
    "check_version",
    "claim",
    "current_seed",
    "data",
    "device",
    "distill",
    "dynamic",
    "intquant",
    "ledger",
    "measure",
    "models",
    "multimodal",
    "nas",
    "plot",
    "prune",
    "quantize",
    "regularize",
    "seed_everything",
    "show_source",
    "sparsity",
    "streaming",
    "train",
    "weightonly",
]
