"""Search strategies behind one ask/tell interface, and the loop that runs them on the table.

Every strategy is a :class:`Strategy`: ``ask()`` proposes an architecture,
``tell(arch, score)`` returns its validation accuracy (``None`` when a
budget-allocation strategy stopped it early).  :func:`run_search` spends a
budget of *full-training equivalents* on the benchmark: a newly trained
architecture costs 1, an epoch of a stopped one costs ``1/epochs``, and
looking up an architecture already paid for is free (a real search would
reuse its result too).

The families (Elsken, Metzen & Hutter, 2019, "Neural architecture search: a survey"):

* ``random`` — uniform sampling (Li & Talwalkar, 2019: a strong baseline);
* ``tpe``, ``gp`` — Bayesian optimization with Optuna's tree-structured Parzen
  estimator (Bergstra et al., 2011) and its Gaussian-process sampler;
* ``evolution`` — regularized ("aging") evolution (Real et al., 2019);
* ``reinforce`` — a policy-gradient controller with a moving-average baseline
  (Williams, 1992; Zoph & Le, 2017);
* ``sh``, ``hyperband`` — budget allocation with Optuna's successive-halving and
  Hyperband pruners (Jamieson & Talwalkar, 2016; Li et al., 2018) on random proposals.
"""
from __future__ import annotations

import math
import random as _random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_int, check_positive
from .benchmark import RECIPE
from .space import SPACE, Arch, decode, encode, mutate, sample, validate_arch

__all__ = ["Strategy", "RandomSearch", "RegularizedEvolution", "Reinforce", "OptunaStrategy", "PrunedOptuna",
           "STRATEGIES", "make_strategy", "run_search", "SearchResult"]


class Strategy:
    """The interface every search strategy implements.

    Subclasses define :meth:`ask` and :meth:`tell`; a budget-allocation strategy
    also overrides :meth:`evaluate` to stop a training run early.
    """

    name = "strategy"

    def ask(self) -> Arch:  # pragma: no cover - abstract
        """Propose the next architecture to evaluate."""
        raise NotImplementedError

    def tell(self, arch: Arch, score: float | None) -> None:  # pragma: no cover - abstract
        """Receive the validation accuracy of ``arch`` (``None``: stopped early)."""
        raise NotImplementedError

    def evaluate(self, arch: Arch, curve: list[float]) -> tuple[float | None, int]:
        """Decide how long to train ``arch`` given its per-epoch validation curve.

        Returns ``(final score or None when stopped, epochs trained)``; by default train fully.
        """
        return curve[-1], len(curve)


class RandomSearch(Strategy):
    """Uniform random sampling of the space.

    Examples:
        >>> s = RandomSearch(seed=0)
        >>> a = s.ask(); s.tell(a, 0.5)
        >>> isinstance(a, Arch)
        True
    """

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = _random.Random(seed)

    def ask(self) -> Arch:
        return sample(self.rng)

    def tell(self, arch, score) -> None:
        pass


class RegularizedEvolution(Strategy):
    """Regularized evolution (Real, Aggarwal, Huang & Le, 2019, "Regularized evolution for
    image classifier architecture search", AAAI).

    Fill a population with ``population`` random architectures; then repeatedly pick
    ``sample_size`` members at random, mutate the best of them (:func:`nnbook.nas.mutate`),
    add the child and remove the *oldest* member (aging), not the worst.

    Examples:
        >>> s = RegularizedEvolution(population=4, sample_size=2, seed=0)
        >>> for i in range(6):
        ...     a = s.ask(); s.tell(a, i / 10)
        >>> len(s.population)
        4
    """

    name = "evolution"

    def __init__(self, population: int = 12, sample_size: int = 3, seed: int = 0):
        self.size = check_int(population, "RegularizedEvolution", "population", minimum=2)
        self.sample_size = check_int(sample_size, "RegularizedEvolution", "sample_size", minimum=1,
                                     maximum=self.size)
        self.rng = _random.Random(seed)
        self.population: deque = deque()

    def ask(self) -> Arch:
        if len(self.population) < self.size:
            return sample(self.rng)
        contenders = self.rng.sample(list(self.population), self.sample_size)
        parent = max(contenders, key=lambda p: p[1])[0]
        return mutate(parent, self.rng)

    def tell(self, arch, score) -> None:
        if score is None:
            return
        self.population.append((arch, float(score)))
        if len(self.population) > self.size:
            self.population.popleft()


class Reinforce(Strategy):
    """A REINFORCE controller (Williams, 1992) in the spirit of Zoph & Le (2017, ICLR).

    Zoph & Le's controller is an RNN emitting one token per decision; the space here has
    six independent decisions, so the policy is one softmax per decision (a factorized
    controller).  After each reward ``r`` (validation accuracy in points) the logits
    move along ``(r - b) * grad log pi(arch)`` where ``b`` is an exponential moving
    average of past rewards (the baseline that reduces the gradient's variance).

    Args:
        lr: step size of the logits per point of advantage.
        baseline_decay: weight of the old baseline in the moving average, in ``[0, 1)``.

    Examples:
        >>> s = Reinforce(seed=0)
        >>> a = s.ask(); s.tell(a, 0.8); s.tell(s.ask(), 0.6)
        >>> [round(float(p.sum()), 6) for p in s.probs()]
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    name = "reinforce"

    def __init__(self, lr: float = 0.05, baseline_decay: float = 0.8, seed: int = 0):
        self.lr = check_positive(lr, "Reinforce", "lr")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"Reinforce: baseline_decay must be in [0, 1), got {baseline_decay}")
        self.decay = baseline_decay
        self.logits = [np.zeros(len(v)) for v in SPACE.values()]
        self.rng = np.random.default_rng(seed)
        self.baseline: float | None = None

    def probs(self) -> list[np.ndarray]:
        """The policy: one probability vector per decision."""
        out = []
        for z in self.logits:
            e = np.exp(z - z.max())
            out.append(e / e.sum())
        return out

    def ask(self) -> Arch:
        return decode([int(self.rng.choice(len(p), p=p)) for p in self.probs()])

    def tell(self, arch, score) -> None:
        if score is None:
            return
        r = 100.0 * float(score)
        if self.baseline is None:
            self.baseline = r
        adv = r - self.baseline
        for z, p, i in zip(self.logits, self.probs(), encode(arch)):
            grad = -p
            grad[i] += 1.0  # d log softmax(z)[i] / dz
            z += self.lr * adv * grad
        self.baseline = self.decay * self.baseline + (1 - self.decay) * r


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _suggest(trial) -> Arch:
    return Arch(**{k: trial.suggest_categorical(k, list(v)) for k, v in SPACE.items()})


class OptunaStrategy(Strategy):
    """Any Optuna sampler driven through Optuna's ask-and-tell interface.

    Args:
        sampler: an ``optuna.samplers.BaseSampler`` (TPE, GP, random, ...).
        name: the label of the strategy.
    """

    def __init__(self, sampler, name: str = "optuna"):
        optuna = _optuna()
        self.name = name
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self._pending: dict[Arch, list] = {}

    def ask(self) -> Arch:
        trial = self.study.ask()
        arch = _suggest(trial)
        self._pending.setdefault(arch, []).append(trial)
        return arch

    def tell(self, arch, score) -> None:
        trial = self._pending[arch].pop()
        if score is None:
            self.study.tell(trial, state=_optuna().trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, float(score))


class PrunedOptuna(OptunaStrategy):
    """Budget allocation: random proposals whose training Optuna's pruner may stop early.

    After every epoch the validation accuracy is reported to the trial; successive
    halving (``"sh"``) keeps the top ``1/reduction_factor`` of the runs at each rung
    (1, 3, 9 epochs) and Hyperband (``"hyperband"``) runs several such brackets
    with different minimum budgets.
    """

    def __init__(self, kind: str, seed: int = 0, epochs: int = RECIPE["epochs"], reduction_factor: int = 3):
        optuna = _optuna()
        if kind == "sh":
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=reduction_factor)
        elif kind == "hyperband":
            pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                    reduction_factor=reduction_factor)
        else:
            raise ValueError(f"PrunedOptuna: kind must be 'sh' or 'hyperband', got {kind!r}")
        self.name = kind
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                         pruner=pruner)
        self._pending = {}

    def evaluate(self, arch, curve):
        trial = self._pending[arch][-1]
        for epoch, v in enumerate(curve):
            trial.report(float(v), epoch + 1)
            if epoch + 1 < len(curve) and trial.should_prune():
                return None, epoch + 1
        return curve[-1], len(curve)


def _gp_sampler(seed: int):
    optuna = _optuna()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deterministic_objective is marked experimental
        s = optuna.samplers.GPSampler(seed=seed, n_startup_trials=15, deterministic_objective=True)
    # Cost: every GP trial refits the Gaussian process and optimizes the acquisition
    # function, about 0.5 s of CPU here, so 15 random start-up trials (half the chapter's
    # budget of 30) and fewer candidate points than Optuna's default (2048 quasi-random
    # points, 10 local searches) keep ten seeded runs at about 20 s of CPU. The whole
    # space has only 216 points.  Private attributes: when a future Optuna renames them,
    # the sampler simply keeps its defaults (slower, same kind of result).
    if hasattr(s, "_n_preliminary_samples"):
        s._n_preliminary_samples = 64
    if hasattr(s, "_n_local_search"):
        s._n_local_search = 2
    return s


#: name -> factory(seed) of every strategy the chapter compares.
STRATEGIES = {
    "random": lambda seed: RandomSearch(seed=seed),
    "tpe": lambda seed: OptunaStrategy(_optuna().samplers.TPESampler(seed=seed, n_startup_trials=10), "tpe"),
    "gp": lambda seed: OptunaStrategy(_gp_sampler(seed), "gp"),
    "evolution": lambda seed: RegularizedEvolution(seed=seed),
    "reinforce": lambda seed: Reinforce(seed=seed),
    "sh": lambda seed: PrunedOptuna("sh", seed=seed),
    "hyperband": lambda seed: PrunedOptuna("hyperband", seed=seed),
}


def make_strategy(name: str, seed: int = 0) -> Strategy:
    """A fresh strategy by name (see :data:`STRATEGIES`).

    Raises:
        ValueError: unknown name.

    Examples:
        >>> make_strategy("evolution", seed=1).name
        'evolution'
        >>> make_strategy("gan")
        Traceback (most recent call last):
        ...
        ValueError: make_strategy: name must be one of ['random', 'tpe', 'gp', 'evolution', 'reinforce', 'sh', 'hyperband'], got 'gan'
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"make_strategy: name must be one of {list(STRATEGIES)}, got {name!r}")
    seed = check_int(seed, "make_strategy", "seed", minimum=0)
    return STRATEGIES[name](seed)


@dataclass
class SearchResult:
    """What :func:`run_search` returns.

    Attributes:
        name: the strategy's name.
        budget: the budget in full-training equivalents.
        incumbents: ``incumbents[b - 1]`` is the architecture with the best validation
            accuracy among those fully trained after spending ``b`` (``None`` before the first).
        regret: test-accuracy regret in points of each incumbent (NaN before the first),
            see :meth:`nnbook.nas.NASBench.regret`.
        n_trained: distinct architectures trained (fully or partly).
        history: ``(architecture, score or None, cost so far)`` per tell.
    """

    name: str
    budget: int
    incumbents: list
    regret: np.ndarray
    n_trained: int
    history: list = field(default_factory=list)

    @property
    def final_regret(self) -> float:
        return float(self.regret[-1])

    def evals_to_within(self, points: float) -> float:
        """Budget spent until the regret first drops to ``<= points`` (NaN when never)."""
        hit = np.flatnonzero(self.regret <= points)
        return float(hit[0] + 1) if len(hit) else float("nan")


def run_search(strategy, bench, budget: int, seed: int = 0, max_asks: int | None = None) -> SearchResult:
    """Run a strategy on the tabular benchmark for ``budget`` full-training equivalents.

    Args:
        strategy: a :class:`Strategy` or a name of :data:`STRATEGIES` (built with ``seed``).
        bench: a :class:`nnbook.nas.NASBench`.
        budget: full trainings to spend, ``>= 1``.
        seed: seed of a strategy given by name.
        max_asks: stop after this many proposals even if budget is left (a converged
            controller proposes only architectures it has already paid for); ``10 * budget``.

    Returns:
        A :class:`SearchResult`.

    Raises:
        ValueError: ``budget < 1``; unknown strategy name.
        TypeError: ``strategy`` is neither a name nor a :class:`Strategy`; ``budget`` not an int.

    Examples:
        >>> from nnbook.nas import load_bench
        >>> r = run_search("random", load_bench(), budget=5, seed=0)
        >>> len(r.regret), r.n_trained
        (5, 5)
    """
    from .benchmark import NASBench

    budget = check_int(budget, "run_search", "budget", minimum=1)
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, seed)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"run_search: strategy must be a name or an nnbook.nas.Strategy, got {type(strategy).__name__}")
    if not isinstance(bench, NASBench):
        raise TypeError(f"run_search: bench must be an nnbook.nas.NASBench, got {type(bench).__name__}")
    max_asks = 10 * budget if max_asks is None else check_int(max_asks, "run_search", "max_asks", minimum=1)
    paid: dict[Arch, int] = {}
    E = bench.epochs
    spent = 0.0
    best, best_score = None, -math.inf
    incumbents: list = [None] * budget
    history = []
    for _ in range(max_asks):
        if spent >= budget - 1e-9:
            break
        arch = validate_arch(strategy.ask(), "run_search")
        curve = bench.curve(arch)
        score, epochs = strategy.evaluate(arch, curve)
        extra = max(0, epochs - paid.get(arch, 0))
        if spent + extra / E > budget + 1e-9:  # not enough budget left to train it this far
            epochs = paid.get(arch, 0) + int(round((budget - spent) * E))
            extra = epochs - paid.get(arch, 0)
            score = curve[-1] if epochs >= E else None
        paid[arch] = max(paid.get(arch, 0), epochs)
        spent += extra / E
        if score is not None and score > best_score:
            best, best_score = arch, float(score)
        strategy.tell(arch, score)
        history.append((arch, score, spent))
        # the incumbent holds from the first whole budget at or after the cost spent so far
        for b in range(max(1, int(math.ceil(spent - 1e-9))), budget + 1):
            incumbents[b - 1] = best
    regret = np.array([bench.regret(a) if a is not None else np.nan for a in incumbents])
    return SearchResult(strategy.name, budget, incumbents, regret, len(paid), history)
