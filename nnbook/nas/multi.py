"""Multi-objective search (NSGA-II, hypervolume) and a study shared by many worker processes.

* :func:`pareto_front` / :func:`hypervolume_2d` measure a set of (error, cost) points;
  :func:`nsga2_search` runs Optuna's NSGA-II sampler (Deb et al., 2002) on the table
  for accuracy against parameters (or FLOPs, or latency).
* :func:`open_storage` and :func:`run_workers` run one Optuna study from several
  processes that share one storage (a database URL): on one machine SQLite; on
  many machines the same code with a PostgreSQL or MySQL URL.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os

import numpy as np

from .._checks import check_int
from .space import SPACE, Arch

__all__ = ["pareto_front", "hypervolume_2d", "nsga2_search", "open_storage", "run_workers", "table_objective"]

_COSTS = ("params", "flops", "latency_ms")


def pareto_front(points) -> np.ndarray:
    """Indices of the non-dominated points when every coordinate is minimized.

    Args:
        points: array-like ``(n, 2)`` of objective values (e.g. error and log-parameters).

    Returns:
        Sorted indices (int array) of the points no other point dominates
        (at least as good in both, better in one); duplicates are all kept.

    Examples:
        >>> pareto_front([[0.1, 5], [0.2, 1], [0.3, 6], [0.1, 5]]).tolist()
        [0, 1, 3]
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pareto_front: points must have shape (n, 2), got {p.shape}")
    keep = []
    for i in range(len(p)):
        dominated = np.any(np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


def hypervolume_2d(points, ref) -> float:
    """Area dominated by a set of 2-D points (both minimized) and bounded by ``ref``.

    The hypervolume indicator (Zitzler & Thiele, 1998): larger is better; a front that
    recovers the true one has the true front's hypervolume.  Points not strictly
    better than ``ref`` in both coordinates add nothing.

    Examples:
        >>> hypervolume_2d([[1, 3], [2, 2], [3, 1]], ref=[4, 4])
        6.0
    """
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    r = np.asarray(ref, dtype=float)
    p = p[np.all(p < r, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    area, best_y = 0.0, r[1]
    for x, y in p:
        if y < best_y:
            area += (r[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def _objectives(bench, archs, cost: str) -> np.ndarray:
    """(validation error, log10 cost) per architecture: the two minimized objectives."""
    return np.array([[1.0 - bench.val_acc(a), math.log10(bench.query(a)[cost])] for a in archs])


def nsga2_search(bench, budget: int, seed: int = 0, cost: str = "params", population: int = 16):
    """Multi-objective search with Optuna's NSGA-II sampler on the table.

    Minimizes validation error and ``log10(cost)``; each distinct architecture counts
    against ``budget`` once (repeats are looked up for free, as in :func:`run_search`).

    Args:
        bench: a :class:`nnbook.nas.NASBench`.
        budget: distinct architectures to evaluate, ``>= 1``.
        seed: the sampler's seed.
        cost: ``"params"``, ``"flops"`` or ``"latency_ms"``.
        population: NSGA-II's population size, ``>= 2``.

    Returns:
        The list of distinct architectures evaluated, in order.

    Raises:
        ValueError: ``budget < 1``; unknown ``cost``.

    Examples:
        >>> from nnbook.nas import load_bench
        >>> len(nsga2_search(load_bench(), budget=5, seed=0))
        5
    """
    import optuna

    from .strategies import _suggest

    budget = check_int(budget, "nsga2_search", "budget", minimum=1)
    if cost not in _COSTS:
        raise ValueError(f"nsga2_search: cost must be one of {list(_COSTS)}, got {cost!r}")
    population = check_int(population, "nsga2_search", "population", minimum=2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))
    seen: list[Arch] = []
    for _ in range(50 * budget):
        if len(seen) >= budget:
            break
        trial = study.ask()
        arch = _suggest(trial)
        if arch not in seen:
            seen.append(arch)
        study.tell(trial, list(_objectives(bench, [arch], cost)[0]))
    return seen


# --------------------------------------------------------------------------- shared storage


def open_storage(url: str):
    """An Optuna storage for a database URL, checked to be reachable.

    Args:
        url: an SQLAlchemy URL: ``"sqlite:////tmp/study.db"`` on one machine,
            ``"postgresql://user@host:5432/db"`` or ``"mysql+pymysql://..."`` for many.

    Returns:
        ``optuna.storages.RDBStorage`` (SQLite gets a 60 s lock timeout, so
        concurrent writers wait instead of failing).

    Raises:
        TypeError: ``url`` is not a string.
        ValueError: the URL is malformed, its driver is missing, or the database cannot
            be reached (the message says what was expected and what went wrong).
    """
    import optuna

    if not isinstance(url, str):
        raise TypeError(f"open_storage: url must be a database URL string such as 'sqlite:///study.db', "
                        f"got {type(url).__name__}")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=None)
    except Exception as exc:  # SQLAlchemy's ArgumentError, OperationalError, a missing driver, ...
        raise ValueError(f"open_storage: could not open the storage {url!r}; expected a reachable database URL "
                         f"such as 'sqlite:////tmp/study.db' or 'postgresql://user@host:5432/db' "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def table_objective(trial) -> float:
    """The objective of the shared-study demo: a look-up of the architecture in the table.

    Records the worker's process id as the trial's user attribute ``"pid"``.
    """
    from .benchmark import load_bench
    from .strategies import _suggest

    trial.set_user_attr("pid", os.getpid())
    return load_bench().val_acc(_suggest(trial))


def _worker(url: str, study_name: str, n_trials: int, seed: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url),
                              sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    study.optimize(table_objective, n_trials=n_trials)


def run_workers(url: str, study_name: str, n_workers: int = 3, trials_per_worker: int = 20, seed: int = 0):
    """Create a study in the storage at ``url`` and optimize it from ``n_workers`` processes.

    Every worker opens the same storage, loads the study by name and runs
    ``trials_per_worker`` trials of :func:`table_objective` with its own TPE sampler
    (seeded ``seed + worker``); the database hands out trial numbers, so no two
    workers write the same trial.  On several machines, the same call with a
    PostgreSQL URL is all that changes.

    Args:
        url: a database URL reachable from every worker (see :func:`open_storage`).
        study_name: name of a new study (an existing one is an error).
        n_workers: processes, ``>= 1``.
        trials_per_worker: trials each process runs, ``>= 1``.
        seed: base seed of the workers' samplers.

    Returns:
        The ``optuna.Study`` (loaded from the storage after all workers finished).

    Raises:
        ValueError: unreachable storage; ``n_workers`` or ``trials_per_worker`` < 1;
            the study exists already; a worker failed.
    """
    import optuna

    n_workers = check_int(n_workers, "run_workers", "n_workers", minimum=1)
    trials_per_worker = check_int(trials_per_worker, "run_workers", "trials_per_worker", minimum=1)
    storage = open_storage(url)
    try:
        optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError as exc:
        raise ValueError(f"run_workers: a study named {study_name!r} exists already in {url!r}; "
                         "expected a new name") from exc
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_worker, args=(url, study_name, trials_per_worker, seed + w))
             for w in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise ValueError(f"run_workers: {len(bad)} worker(s) failed with exit codes {bad}")
    return optuna.load_study(study_name=study_name, storage=open_storage(url))


_ = SPACE  # the space the objectives suggest from (imported for readers following the links)
