"""Unit tests of nnbook's core: utils, data, cache, train, measure, plot, models."""
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.utils.prune  # noqa: F401  (a submodule torch does not import by itself)
from torch import nn

import nnbook
from nnbook import cache, data, measure, models, plot, train


# --- utils ---------------------------------------------------------------
def test_device_defaults_and_override(monkeypatch):
    assert nnbook.device().type in ("cpu", "cuda", "mps")
    assert nnbook.device("cpu") == torch.device("cpu")
    monkeypatch.setenv("NNBOOK_DEVICE", "cpu")
    assert nnbook.device() == torch.device("cpu")


def test_device_bad_input():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        nnbook.device("tpu")
    with pytest.raises(TypeError, match="got int"):
        nnbook.device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            nnbook.device("cuda")


def test_seed_everything_reproducible(monkeypatch):
    assert nnbook.seed_everything(5) == 5
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    nnbook.seed_everything(5)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    monkeypatch.setenv("NNBOOK_SEED", "7")
    assert nnbook.seed_everything(0) == 7
    monkeypatch.setenv("NNBOOK_SEED", "x")
    with pytest.raises(ValueError, match="NNBOOK_SEED"):
        nnbook.seed_everything(0)


def test_seed_everything_bad_input():
    with pytest.raises(TypeError):
        nnbook.seed_everything(1.5)
    with pytest.raises(ValueError, match=">= 0"):
        nnbook.seed_everything(-1)


def test_check_version():
    assert nnbook.check_version(nnbook.__version__) is True
    with pytest.warns(UserWarning, match="executed with nnbook 0.0.0"):
        assert nnbook.check_version("0.0.0") is False
    with pytest.raises(TypeError):
        nnbook.check_version(1)


def test_show_source(capsys):
    nnbook.show_source(nnbook.seed_everything)
    assert "def seed_everything" in capsys.readouterr().out
    with pytest.raises(TypeError, match="show_source"):
        nnbook.show_source(len)


# --- cache ----------------------------------------------------------------
def test_cache_builds_once_and_rebuilds_on_new_config():
    calls = []

    def build():
        calls.append(1)
        return {"t": torch.arange(3)}

    a = cache.cached("thing", {"k": 1}, build)
    b = cache.cached("thing", {"k": 1}, build)
    assert torch.equal(a["t"], b["t"]) and len(calls) == 1
    cache.cached("thing", {"k": 2}, build)
    assert len(calls) == 2


def test_cache_corrupt_entry_is_rebuilt():
    build = lambda: 42  # noqa: E731
    path = cache.entry_path("thing", {"k": 1}, build)
    path.write_bytes(b"not a torch file")
    assert cache.cached("thing", {"k": 1}, build) == 42
    assert torch.load(path, weights_only=False) == 42


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    target = tmp_path / "x.pt"
    cache.atomic_save({"ok": 1}, target)
    with pytest.raises(RuntimeError):
        cache.atomic_save({"bad": Boom()}, target)
    assert torch.load(target) == {"ok": 1}  # the old file survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary left behind


def test_cache_bad_input():
    with pytest.raises(ValueError):
        cache.cached("a/b", {}, lambda: 1)
    with pytest.raises(TypeError):
        cache.cached("a", {}, 3)
    with pytest.raises(TypeError, match="JSON"):
        cache.config_key({"x": object()})


# --- data -----------------------------------------------------------------
def test_load_digits_shapes_and_fixed_split():
    s = data.load_digits()
    assert s.x_train.shape == (1347, 1, 8, 8) and s.x_test.shape == (450, 1, 8, 8)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert 0.0 <= float(s.x_train.min()) and float(s.x_train.max()) <= 1.0
    assert torch.equal(s.x_test, data.load_digits(val_size=0.2, seed=3).x_test)
    v = data.load_digits(val_size=0.2)
    assert len(v.x_train) + len(v.x_val) == 1347
    assert s.input_shape == (1, 8, 8) and "digits" in repr(s)


def test_load_mnist1d_generated_and_cached():
    s = data.load_mnist1d()
    assert s.x_train.shape == (4000, 40) and s.x_test.shape == (1000, 40)
    assert set(s.y_train.unique().tolist()) == set(range(10))
    files = list(cache.cache_dir().glob("mnist1d-*.pt"))
    assert len(files) == 1
    assert torch.equal(data.load_mnist1d().x_train, s.x_train)


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.2"])
def test_val_size_validated(bad):
    with pytest.raises((ValueError, TypeError)):
        data.load_digits(val_size=bad)


def test_loaders():
    s = data.load_digits(val_size=0.1)
    tr, va, te = data.loaders(s, batch_size=32)
    x, y = next(iter(tr))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert va is not None and sum(len(b[1]) for b in te) == 450
    with pytest.raises(ValueError, match="batch_size"):
        data.loaders(s, batch_size=0)
    with pytest.raises(TypeError):
        data.loaders((s.x_train, s.y_train))


# --- train ----------------------------------------------------------------
def _tiny():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=16)


def test_fit_learns_and_records_history():
    loader = _tiny()
    model = nn.Linear(4, 2)
    h = train.fit(model, loader, loader, epochs=30, lr=0.05, device="cpu", progress=False, n_classes=2)
    assert h.epochs == 30 and len(h.val_acc) == 30 and len(h.epoch_time_s) == 30
    assert h.train_loss[-1] < h.train_loss[0]
    assert train.evaluate(model, loader)[1] >= 0.9
    assert train.predict(model, torch.randn(5, 4)).shape == (5, 2)


def test_fit_after_step_and_scheduler():
    loader = _tiny()
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)

    def zero_first(m):
        with torch.no_grad():
            m.weight[:, 0] = 0

    train.fit(model, loader, epochs=2, optimizer=opt, scheduler=sched, after_step=zero_first, progress=False)
    assert torch.all(model.weight[:, 0] == 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_fit_bad_input():
    loader = _tiny()
    with pytest.raises(ValueError, match="fit: epochs must be >= 1, got 0"):
        train.fit(nn.Linear(4, 2), loader, epochs=0, progress=False)
    with pytest.raises(ValueError, match="outputs 3 scores .* n_classes=2"):
        train.fit(nn.Linear(4, 3), loader, epochs=1, n_classes=2, progress=False)
    with pytest.raises(TypeError, match="pair of torch.Tensor"):
        train.fit(nn.Linear(4, 2), [(np.zeros((2, 4)), np.zeros(2))], epochs=1, progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        train.fit(lambda x: x, loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match="shape \\(batch, n_classes\\)"):
        train.evaluate(nn.Flatten(0), loader)
    with pytest.raises(TypeError):
        train.predict(nn.Linear(4, 2), [[1, 2, 3, 4]])


# --- measure --------------------------------------------------------------
def test_count_params_and_sparsity():
    m = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    assert measure.count_params(m) == 10 * 5 + 5 + 5 * 2 + 2
    with torch.no_grad():
        m[0].weight[:2] = 0
    assert measure.count_params(m, nonzero=True) == measure.count_params(m) - 20
    assert measure.sparsity(m) == pytest.approx(20 / 60)
    assert measure.sparsity(torch.tensor([0.0, 1.0])) == 0.5
    with pytest.raises(ValueError):
        measure.sparsity(nn.ReLU())
    with pytest.raises(TypeError):
        measure.count_params("model")


def test_count_params_honours_torch_prune_masks():
    m = nn.Linear(10, 10, bias=False)
    torch.nn.utils.prune.l1_unstructured(m, "weight", amount=0.5)
    assert measure.count_params(m) == 100
    assert measure.count_params(m, nonzero=True) == 50
    assert measure.sparsity(m) == pytest.approx(0.5)


def test_flops_match_closed_form():
    lin = nn.Linear(64, 10)
    assert measure.flops(lin, torch.zeros(1, 64)) == 2 * 64 * 10
    conv = nn.Conv2d(1, 8, 3, padding=1)
    assert measure.flops(conv, torch.zeros(1, 1, 8, 8)) == 2 * 8 * 8 * 8 * 9
    with pytest.raises(TypeError):
        measure.flops(lin, [0.0] * 64)


def test_model_size_bytes_tracks_tensor_bytes():
    small, big = nn.Linear(10, 10), nn.Linear(100, 100)
    s, b = measure.model_size_bytes(small), measure.model_size_bytes(big)
    assert b - s == pytest.approx((100 * 100 + 100 - 110) * 4, rel=0.05)
    assert measure.model_size_bytes(big.state_dict()) == b
    with pytest.raises(TypeError):
        measure.model_size_bytes([1, 2])


def test_latency_reports_ordered_percentiles():
    r = measure.latency(nn.Linear(8, 8), torch.zeros(1, 8), warmup=1, repeats=10)
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms and r.repeats == 10
    assert "ms" in str(r)
    assert measure.latency(lambda x: x * 2, torch.zeros(3), repeats=3).median_ms >= 0
    with pytest.raises(ValueError):
        measure.latency(nn.Linear(8, 8), torch.zeros(1, 8), repeats=1)
    with pytest.raises(TypeError):
        measure.latency(3, torch.zeros(1))


# --- plot -----------------------------------------------------------------
def test_plots_and_pareto_front():
    h = train.History([1.0, 0.5], [0.5, 0.8], [1.1, 0.6], [0.4, 0.7], [0.1, 0.1])
    fig, axes = plot.learning_curves({"a": h})
    assert len(axes) == 2 and axes[0].get_xlabel() == "epoch"
    assert plot.pareto_front([1, 2, 3, 4], [0.5, 0.4, 0.8, 0.7]) == [0, 2]
    fig, ax = plot.cost_accuracy([1, 10], [0.5, 0.9], ["a", "b"], xlabel="FLOPs", front=True)
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError):
        plot.learning_curves(h, metrics=("f1",))
    with pytest.raises(ValueError):
        plot.cost_accuracy([1], [0.5, 0.6])


# --- models ---------------------------------------------------------------
def test_reference_models_shapes_and_validation():
    assert models.mlp(64, (32,))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert models.mlp(40, ())(torch.zeros(3, 40)).shape == (3, 10)
    assert models.DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="sizes must be positive"):
        models.mlp(0)
    with pytest.raises(ValueError, match="three positive ints"):
        models.DigitsCNN(channels=(8, 8))


def test_pretrained_is_cached_and_unknown_name_rejected(monkeypatch):
    import nnbook.models as mm

    monkeypatch.setitem(mm._RECIPES, "digits_mlp", dict(mm._RECIPES["digits_mlp"], epochs=2))
    torch.manual_seed(123)
    m1, info = models.pretrained("digits_mlp", seed=1)
    after = torch.rand(1)
    torch.manual_seed(123)
    m2, _ = models.pretrained("digits_mlp", seed=1)
    assert torch.equal(torch.rand(1), after)  # the caller's random stream is untouched
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert 0.0 <= info["test_acc"] <= 1.0 and info["history"].epochs == 2
    with pytest.raises(ValueError, match="unknown baseline"):
        models.pretrained("resnet50")


def test_latency_ratio_shape_and_validation():
    ratio, a_ms, b_ms = measure.latency_ratio(nn.Linear(8, 8), nn.Linear(8, 8), torch.zeros(1, 8), rounds=3, repeats=3)
    assert ratio > 0 and a_ms > 0 and b_ms > 0  # values are machine-dependent: only their form is tested
    with pytest.raises(ValueError, match="rounds"):
        measure.latency_ratio(nn.Linear(8, 8), nn.Linear(8, 8), torch.zeros(1, 8), rounds=0)


def test_fit_step_hook_dict_batches_and_callbacks():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    batches = [({"a": x[:16], "b": x[:16]}, y[:16]), ({"a": x[16:], "b": x[16:]}, y[16:])]

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 2)

        def forward(self, inputs):
            return self.lin(torch.cat([inputs["a"], inputs["b"]], 1))

    def step(model, batch):
        inputs, target = batch
        logits = model(inputs)
        return nn.functional.cross_entropy(logits, target), logits, target

    seen = []
    h = train.fit(Two(), batches, batches, epochs=5, step=step, progress=False, device="cpu",
                  callbacks=[lambda e, m, hist: seen.append(e) or e == 2])
    assert h.epochs == 3 and seen == [0, 1, 2] and h.stopped_early
    assert len(h.val_acc) == 3 and 0 <= h.val_acc[-1] <= 1
    # a step that returns no logits: accuracy is NaN, loss is recorded
    h2 = train.fit(Two(), batches, epochs=1, progress=False, device="cpu",
                   step=lambda m, b: (m(b[0]).pow(2).mean(), None, None))
    assert np.isnan(h2.train_acc[0]) and h2.train_loss[0] > 0
    with pytest.raises(ValueError, match="not both"):
        train.fit(Two(), batches, step=step, loss_fn=nn.functional.cross_entropy, progress=False)


def test_fit_refuses_nan_loss_and_keeps_batchnorm_on_width_error():
    x = torch.full((8, 4), float("nan"))
    y = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match="loss became nan"):
        train.fit(nn.Linear(4, 2), [(x, y)], epochs=1, progress=False, device="cpu")
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="outputs 3 scores"):
        train.fit(model, [(torch.randn(8, 4), y)], epochs=1, n_classes=2, progress=False, device="cpu")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and model.training


def test_evaluate_and_predict_restore_mode_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            raise RuntimeError("boom")

    m = Boom().train()
    with pytest.raises(RuntimeError):
        train.evaluate(m, [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))])
    assert m.training
    with pytest.raises(RuntimeError):
        train.predict(m, torch.randn(2, 4))
    assert m.training


def test_predict_dict_inputs():
    class Two(nn.Module):
        def forward(self, inputs):
            return inputs["a"] + inputs["b"]

    out = train.predict(Two(), {"a": torch.ones(5, 2), "b": torch.ones(5, 2)}, batch_size=2)
    assert out.shape == (5, 2) and torch.all(out == 2)


def test_shared_checks_messages():
    from nnbook import _checks as C
    with pytest.raises(TypeError, match="f: k must be an int, got True"):
        C.check_int(True, "f", "k")
    with pytest.raises(ValueError, match="f: p must be in \\[0.0, 1.0\\), got 1.0"):
        C.check_fraction(1.0, "f", "p")
    with pytest.raises(ValueError, match="must be finite"):
        C.check_float(float("nan"), "f", "x")
    with pytest.raises(TypeError, match="f: flag must be True or False, got 'no'"):
        C.check_bool("no", "f", "flag")
    with pytest.raises(ValueError, match="f: x must hold only finite values"):
        C.check_tensor(torch.tensor([1.0, float("nan")]), "f", finite=True)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 3\\)"):
        C.check_labels(torch.tensor([0, 3]), "f", 3)
    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    C.set_submodule(m, "1.0", nn.Tanh())
    assert isinstance(m[1][0], nn.Tanh)
    with pytest.raises(ValueError, match="no submodule 'x'"):
        C.set_submodule(m, "x", nn.Tanh())
