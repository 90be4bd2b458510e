"""Neural architecture search (chapter 3): space, tabular benchmark, strategies, one-shot, multi-objective.

* :mod:`nnbook.nas.space` — the search space of small 1-D CNNs for MNIST-1D
  (:class:`Arch`, :func:`sample`, :func:`mutate`, :func:`encode`, :func:`build`);
* :mod:`nnbook.nas.benchmark` — the tabular benchmark every architecture was trained
  into (:func:`load_bench`, :func:`train_arch`, :func:`rank_correlation`);
* :mod:`nnbook.nas.strategies` — random search, TPE, GP, regularized evolution,
  REINFORCE, successive halving and Hyperband behind one ask/tell interface, run by
  :func:`run_search`;
* :mod:`nnbook.nas.oneshot` — a weight-sharing supernet (:func:`train_supernet`);
* :mod:`nnbook.nas.multi` — NSGA-II, Pareto fronts, hypervolume, and one Optuna study
  shared by several worker processes (:func:`run_workers`).
"""
from .benchmark import BENCH_PATH, RECIPE, NASBench, load_bench, rank_correlation, train_arch
from .multi import hypervolume_2d, nsga2_search, open_storage, pareto_front, run_workers, table_objective
from .oneshot import SuperNet, supernet_scores, train_supernet
from .space import (SPACE, Arch, Net1D, all_archs, build, decode, encode, mutate, sample, space_size,
                    validate_arch)
from .strategies import (STRATEGIES, OptunaStrategy, PrunedOptuna, RandomSearch, RegularizedEvolution, Reinforce,
                         SearchResult, Strategy, make_strategy, run_search)

__all__ = [
    "Arch", "BENCH_PATH", "NASBench", "Net1D", "OptunaStrategy", "PrunedOptuna", "RECIPE", "RandomSearch",
    "RegularizedEvolution", "Reinforce", "SPACE", "STRATEGIES", "SearchResult", "Strategy", "SuperNet",
    "all_archs", "build", "decode", "encode", "hypervolume_2d", "load_bench", "make_strategy", "mutate",
    "nsga2_search", "open_storage", "pareto_front", "rank_correlation", "run_search", "run_workers", "sample",
    "space_size", "supernet_scores", "table_objective", "train_arch", "train_supernet", "validate_arch",
]
