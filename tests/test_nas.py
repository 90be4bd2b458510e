"""Unit tests of nnbook.nas: space, table, strategies, supernet, Pareto tools, storage errors."""
import math
import random

import numpy as np
import pytest
import torch

import nnbook.nas as nas
from nnbook.nas import Arch

torch.set_num_threads(1)

A = Arch(3, 16, 5, "max", "relu", True)


@pytest.fixture(scope="module")
def bench():
    return nas.load_bench()


def test_space_is_enumerated_exactly():
    archs = nas.all_archs()
    assert nas.space_size() == len(archs) == len(set(archs)) == 3 * 3 * 3 * 2 * 2 * 2
    assert all(nas.decode(nas.encode(a)) == a for a in archs)


def test_sample_and_mutate_stay_in_space():
    rng = random.Random(0)
    space = set(nas.all_archs())
    seen = {nas.sample(rng) for _ in range(400)}
    assert seen <= space and len(seen) > 150  # uniform sampling reaches most of the 216
    for _ in range(50):
        a = nas.sample(rng)
        b = nas.mutate(a, rng)
        assert b in space and sum(x != y for x, y in zip(nas.encode(a), nas.encode(b))) == 1


@pytest.mark.parametrize("bad, exc", [
    ({"depth": 5, "channels": 8, "kernel": 3, "pool": "max", "act": "relu", "skip": False}, ValueError),
    ({"depth": 2, "channels": 8, "kernel": 3, "pool": "avg", "act": "relu", "skip": False}, ValueError),
    ({"depth": 2, "channels": 8, "kernel": 3, "pool": "max", "act": "relu"}, ValueError),
    ({"depth": 2, "channels": 8, "kernel": 3, "pool": "max", "act": "relu", "skip": 1}, ValueError),
    ((2, 8, 3, "max", "relu", False), TypeError),
])
def test_outside_the_space_is_refused(bad, exc):
    with pytest.raises(exc, match="validate_arch|build"):
        nas.validate_arch(bad)
    with pytest.raises(exc, match="build"):
        nas.build(bad)


def test_build_shapes_and_pooling_shrinks_params():
    x = torch.randn(4, 40)
    for a in nas.all_archs()[::17]:
        assert nas.build(a)(x).shape == (4, 10)
    p_none = sum(p.numel() for p in nas.build(Arch(3, 16, 5, "none", "relu", False)).parameters())
    p_max = sum(p.numel() for p in nas.build(Arch(3, 16, 5, "max", "relu", False)).parameters())
    assert p_max < p_none


def test_bench_covers_the_space(bench):
    assert len(bench) == nas.space_size() and set(bench.archs) == set(nas.all_archs())
    r = bench.query(A)
    assert 0 <= r["val_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and r["params"] > 0
    assert len(bench.curve(A)) == bench.epochs and bench.val_acc(A, epoch=bench.epochs) == bench.val_acc(A)
    assert r["params"] == sum(p.numel() for p in nas.build(A).parameters())
    assert bench.regret(bench.best("val_acc")) == 0.0
    with pytest.raises(ValueError, match="epoch"):
        bench.val_acc(A, epoch=0)


@pytest.mark.parametrize("name", list(nas.STRATEGIES))
def test_every_strategy_spends_the_budget(bench, name):
    r = nas.run_search(name, bench, budget=12, seed=3)
    assert len(r.regret) == 12 and r.n_trained >= 1
    assert r.history[-1][2] <= 12 + 1e-9
    # the incumbent never gets worse on validation
    vals = [bench.val_acc(a) for a in r.incumbents if a is not None]
    assert vals == sorted(vals)
    if name not in ("sh", "hyperband", "reinforce"):
        assert r.n_trained == 12


def test_same_seed_same_search(bench):
    for name in ("random", "evolution", "reinforce", "tpe"):
        a = nas.run_search(name, bench, budget=15, seed=7)
        b = nas.run_search(name, bench, budget=15, seed=7)
        assert a.incumbents == b.incumbents, name


def test_exhaustive_budget_reaches_zero_regret(bench):
    r = nas.run_search("random", bench, budget=nas.space_size(), seed=0, max_asks=100_000)
    assert r.final_regret == 0.0 and r.n_trained == nas.space_size()


def test_reinforce_learns_a_preference():
    s = nas.Reinforce(lr=0.05, seed=0)
    for _ in range(300):
        a = s.ask()
        s.tell(a, 0.9 if a.pool == "max" else 0.5)
    p_pool = s.probs()[list(nas.SPACE).index("pool")]
    assert p_pool[nas.SPACE["pool"].index("max")] > 0.9, p_pool


def test_evolution_ages_out_the_oldest():
    s = nas.RegularizedEvolution(population=3, sample_size=2, seed=0)
    archs = nas.all_archs()[:5]
    for i, a in enumerate(archs):
        s.tell(a, 1.0 - i / 10)  # the best is told first, and must still age out
    assert [p[0] for p in s.population] == archs[2:]


@pytest.mark.parametrize("call, exc, match", [
    (lambda b: nas.run_search("random", b, budget=0), ValueError, "budget must be >= 1"),
    (lambda b: nas.run_search("random", b, budget=2.5), TypeError, "budget must be an int"),
    (lambda b: nas.run_search("darts-gan", b, budget=3), ValueError, "name must be one of"),
    (lambda b: nas.run_search(42, b, budget=3), TypeError, "strategy must be"),
    (lambda b: nas.nsga2_search(b, budget=0), ValueError, "budget"),
    (lambda b: nas.nsga2_search(b, budget=3, cost="watts"), ValueError, "cost must be one of"),
])
def test_bad_search_arguments(bench, call, exc, match):
    with pytest.raises(exc, match=match):
        call(bench)


def test_rank_correlation():
    tau, rho = nas.rank_correlation([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert tau == pytest.approx(-1) and rho == pytest.approx(-1)
    with pytest.raises(ValueError, match="rank_correlation"):
        nas.rank_correlation([1, 2], [1, 2])


def test_pareto_and_hypervolume():
    pts = np.array([[0.1, 3.0], [0.2, 2.0], [0.3, 1.0], [0.3, 3.0]])
    assert nas.pareto_front(pts).tolist() == [0, 1, 2]
    hv = nas.hypervolume_2d(pts, ref=[1.0, 4.0])
    assert hv == pytest.approx(0.9 * 1 + 0.8 * 1 + 0.7 * 1)
    assert nas.hypervolume_2d(pts[:1], ref=[1.0, 4.0]) < hv
    assert nas.hypervolume_2d([[2.0, 2.0]], ref=[1.0, 4.0]) == 0.0


def test_nsga2_counts_distinct_archs(bench):
    archs = nas.nsga2_search(bench, budget=20, seed=1)
    assert len(archs) == len(set(archs)) == 20


def test_supernet_shares_weights_and_scores():
    net = nas.SuperNet()
    x, y = torch.randn(32, 40), torch.randint(0, 10, (32,))
    small, big = Arch(2, 8, 3, "none", "relu", False), Arch(4, 16, 7, "max", "tanh", True)
    loss = torch.nn.functional.cross_entropy(net(x, small), y)
    loss.backward()
    g = net.weights[0].grad
    assert g[:8, :, 2:5].abs().sum() > 0 and g[8:].abs().sum() == 0 and g[:, :, :2].abs().sum() == 0
    scores = nas.supernet_scores(net.eval(), [small, big], x, y)
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    with pytest.raises(TypeError, match="supernet_scores"):
        nas.supernet_scores(torch.nn.Linear(2, 2), [small], x, y)


def test_unreachable_storage_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="open_storage: could not open the storage"):
        nas.open_storage("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="could not open"):
        nas.open_storage("not-a-url")
    with pytest.raises(TypeError, match="url must be"):
        nas.open_storage(5)
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        nas.run_workers(f"sqlite:///{tmp_path}/s.db", "x", n_workers=0)


def test_workers_share_a_sqlite_study(tmp_path):
    study = nas.run_workers(f"sqlite:///{tmp_path}/study.db", "t", n_workers=2, trials_per_worker=8, seed=1)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(16))
    assert len({t.user_attrs["pid"] for t in trials}) == 2


def test_train_arch_runs_the_recipe():
    from dataclasses import replace

    from nnbook.data import Split

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 40, generator=g), torch.randint(0, 10, (300,), generator=g)
    split = Split(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], 10, "mnist1d")
    model, hist = nas.train_arch(Arch(2, 8, 3, "max", "relu", False), split, epochs=2)
    assert hist.epochs == 2 and 0 <= hist.val_acc[0] <= 1
    with pytest.raises(ValueError, match="validation part"):
        nas.train_arch(A, replace(split, x_val=None, y_val=None), epochs=1)
    with pytest.raises(ValueError, match="outside the search space"):
        nas.train_arch({**A.as_dict(), "kernel": 4}, split, epochs=1)
    assert not math.isnan(hist.train_loss[0])
