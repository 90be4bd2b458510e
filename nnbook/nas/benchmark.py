"""A tabular NAS benchmark (NAS-Bench style) of the chapter-3 search space.

``tools/build_nas_bench.py`` trained every architecture of :data:`nnbook.nas.SPACE`
once with one fixed recipe (:func:`train_arch`) and stored the results in
``nnbook/resources/nas_bench_mnist1d.json``.  :class:`NASBench` reads that file
and answers queries in microseconds, which is what makes it possible to compare
search strategies at equal budget over many seeds (Ying et al., 2019,
"NAS-Bench-101"; Dong & Yang, 2020, "NAS-Bench-201").
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int
from .space import Arch, all_archs, build, validate_arch

__all__ = ["NASBench", "load_bench", "train_arch", "BENCH_PATH", "RECIPE", "rank_correlation"]

BENCH_PATH = Path(__file__).resolve().parent.parent / "resources" / "nas_bench_mnist1d.json"

#: The training recipe of the table (the header of the data file repeats it).
RECIPE = {"epochs": 10, "lr": 3e-3, "batch_size": 128, "seed": 0, "val_size": 0.2}


def train_arch(arch, split, epochs: int = RECIPE["epochs"], seed: int = RECIPE["seed"]):
    """Train one architecture with the benchmark's recipe, through :func:`nnbook.train.fit`.

    Adam (lr 3e-3), batch 128, a cosine learning-rate schedule over ``epochs``,
    ``torch.manual_seed(seed)`` before the model is built, the loader shuffled with
    ``seed``.  Run with one thread to reproduce the table's numbers exactly on the
    machine that built it (other CPUs differ in the last bits, which training amplifies).

    Args:
        arch: an architecture of the space.
        split: an :class:`nnbook.data.Split` with a validation part
            (``load_mnist1d(val_size=0.2, seed=0)`` for the table).
        epochs: training epochs, ``>= 1``.
        seed: the seed of initialization and shuffling.

    Returns:
        ``(model, history)``: the trained :class:`nnbook.nas.Net1D` and the
        :class:`nnbook.train.History` (``history.val_acc`` has one fraction per epoch).

    Raises:
        TypeError, ValueError: ``arch`` is outside the space; ``epochs < 1``; the split has
            no validation part.
    """
    from ..data import Split, loaders
    from ..train import fit

    arch = validate_arch(arch, "train_arch")
    epochs = check_int(epochs, "train_arch", "epochs", minimum=1)
    if not isinstance(split, Split) or split.x_val is None:
        raise ValueError("train_arch: split must be an nnbook.data.Split with a validation part "
                         "(load_mnist1d(val_size=0.2, seed=0))")
    torch.manual_seed(seed)
    model = build(arch)
    train_loader, val_loader, _ = loaders(split, batch_size=RECIPE["batch_size"], seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    hist = fit(model, train_loader, val_loader, epochs=epochs, optimizer=opt, scheduler=sched,
               progress=False, device="cpu")
    return model, hist


class NASBench:
    """Look-ups into the tabular benchmark: one record per architecture of the space.

    Attributes:
        header: the data file's header (command, recipe, seed, versions, CPU time).
        epochs: number of training epochs of the recipe (the length of every
            validation curve).

    Every accuracy is a fraction in ``[0, 1]``; ``params`` counts scalars,
    ``flops`` counts FLOPs per sample (a multiply-accumulate = 2), ``latency_ms``
    is the median time of one sample on one CPU thread of the building machine.

    Examples:
        >>> bench = load_bench()
        >>> len(bench) == 216, bench.epochs
        (True, 10)
        >>> a = bench.archs[0]
        >>> 0.0 <= bench.val_acc(a) <= 1.0, len(bench.curve(a)) == bench.epochs
        (True, True)
    """

    def __init__(self, data: dict):
        if not isinstance(data, dict) or "records" not in data or "header" not in data:
            raise ValueError("NASBench: expected a dict with 'header' and 'records' (the data file's layout)")
        self.header = data["header"]
        self._rows: dict[Arch, dict] = {}
        for r in data["records"]:
            arch = validate_arch({k: r[k] for k in ("depth", "channels", "kernel", "pool", "act", "skip")},
                                 "NASBench")
            self._rows[arch] = r
        self.archs: list[Arch] = [a for a in all_archs() if a in self._rows]
        self.epochs = len(next(iter(self._rows.values()))["val_curve"])

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch) -> bool:
        return arch in self._rows

    def query(self, arch) -> dict:
        """The whole record of an architecture (a copy).

        Raises:
            TypeError, ValueError: ``arch`` is outside the space or not in the table.
        """
        arch = validate_arch(arch, "NASBench.query")
        if arch not in self._rows:
            raise ValueError(f"NASBench.query: {arch} is in the space but not in this table")
        return dict(self._rows[arch])

    def val_acc(self, arch, epoch: int | None = None) -> float:
        """Validation accuracy after training (or after ``epoch`` epochs, 1-based, of the same run)."""
        r = self.query(arch)
        if epoch is None:
            return float(r["val_acc"])
        epoch = check_int(epoch, "NASBench.val_acc", "epoch", minimum=1, maximum=self.epochs)
        return float(r["val_curve"][epoch - 1])

    def curve(self, arch) -> list[float]:
        """Validation accuracy after each epoch, ``epochs`` fractions."""
        return list(self.query(arch)["val_curve"])

    def test_acc(self, arch) -> float:
        """Test accuracy after training (report only; never select on it)."""
        return float(self.query(arch)["test_acc"])

    def to_frame(self):
        """All records as a pandas DataFrame (one row per architecture, ``arch`` as a string column)."""
        import pandas as pd

        rows = [{"arch": str(a), **{k: v for k, v in self._rows[a].items() if k != "val_curve"}} for a in self.archs]
        return pd.DataFrame(rows)

    def best(self, by: str = "val_acc") -> Arch:
        """The architecture an exhaustive search selects: the highest ``by`` (ties: first in space order)."""
        if by not in ("val_acc", "test_acc"):
            raise ValueError(f"NASBench.best: by must be 'val_acc' or 'test_acc', got {by!r}")
        return max(self.archs, key=lambda a: self._rows[a][by])

    def regret(self, arch) -> float:
        """Test-accuracy regret in points of a validation-selected ``arch``.

        ``100 * (test_acc(best by validation) - test_acc(arch))``: the test accuracy
        given up against what an exhaustive search over the table (selecting on
        validation) would deliver.  It is negative when ``arch`` happens to test better
        than the exhaustive choice: validation and test accuracy differ by noise.
        """
        return 100.0 * (self.test_acc(self.best("val_acc")) - self.test_acc(arch))


@lru_cache(maxsize=4)
def _load(path: str) -> NASBench:
    with open(path, encoding="utf-8") as fh:
        return NASBench(json.load(fh))


def load_bench(path: str | Path | None = None) -> NASBench:
    """Load the tabular benchmark shipped with the package (read once, then cached).

    Args:
        path: another file with the same layout (``{"header": ..., "records": [...]}``).

    Raises:
        FileNotFoundError: the file does not exist (run ``tools/build_nas_bench.py``).
        ValueError: the file's layout is wrong.

    Examples:
        >>> load_bench().header["recipe"]["epochs"]
        10
    """
    p = Path(path) if path is not None else BENCH_PATH
    if not p.exists():
        raise FileNotFoundError(f"load_bench: {p} does not exist; build it with python tools/build_nas_bench.py")
    return _load(str(p.resolve()))


def rank_correlation(a, b) -> tuple[float, float]:
    """Kendall's tau and Spearman's rho between two score vectors (scipy.stats).

    Args:
        a, b: sequences of equal length ``>= 3`` (for example a proxy score and the
            full-budget score of the same architectures).

    Returns:
        ``(tau, rho)``, each in ``[-1, 1]``.

    Raises:
        ValueError: lengths differ or fewer than 3 values.

    Examples:
        >>> rank_correlation([1, 2, 3, 4], [10, 20, 30, 40])
        (1.0, 1.0)
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"rank_correlation: expected two 1-D sequences of equal length >= 3, got shapes "
                         f"{a.shape} and {b.shape}")
    return float(stats.kendalltau(a, b)[0]), float(stats.spearmanr(a, b)[0])
