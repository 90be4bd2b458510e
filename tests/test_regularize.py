"""Unit tests of nnbook.regularize: penalties, weight decay, DropConnect, early stopping, max-norm, augmentation."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnbook import regularize as R
from nnbook.models import mlp
from nnbook.train import History, evaluate, fit

torch.set_num_threads(1)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ----------------------------------------------------------------- penalties

def test_penalized_parameters_skip_biases_and_norm(net):
    params = R.penalized_parameters(net)
    assert [tuple(p.shape) for p in params] == [(8, 6), (3, 8)]
    assert len(R.penalized_parameters(net, include_bias=True)) == len(list(net.parameters()))


def test_l2_penalty_is_half_squared_norm(net):
    expected = 0.5 * 0.3 * (net[0].weight.pow(2).sum() + net[3].weight.pow(2).sum())
    assert torch.allclose(R.l2_penalty(net, 0.3), expected)
    everything = 0.5 * 0.3 * sum(p.pow(2).sum() for p in net.parameters())
    assert torch.allclose(R.l2_penalty(net, 0.3, include_bias=True), everything)


def test_l2_gradient_is_lambda_theta(net):
    R.l2_penalty(net, 0.25).backward()
    assert torch.allclose(net[0].weight.grad, 0.25 * net[0].weight.detach())
    assert net[0].bias.grad is None  # biases are not penalized


def test_l1_penalty_value_and_gradient(net):
    pen = R.l1_penalty(net, 0.1)
    assert torch.allclose(pen, 0.1 * (net[0].weight.abs().sum() + net[3].weight.abs().sum()))
    pen.backward()
    assert torch.allclose(net[3].weight.grad, 0.1 * net[3].weight.detach().sign())


def test_zero_lambda_and_model_without_weights():
    assert float(R.l2_penalty(nn.ReLU(), 1.0)) == 0.0
    assert float(R.l1_penalty(nn.Linear(3, 2), 0.0).detach()) == 0.0


@pytest.mark.parametrize("fn", [R.l1_penalty, R.l2_penalty])
def test_penalties_reject_bad_lambda(fn, net):
    with pytest.raises(ValueError, match=r"^(l1|l2)_penalty: lam"):
        fn(net, -0.1)
    with pytest.raises(TypeError, match="lam"):
        fn(net, "0.1")
    with pytest.raises(ValueError):
        fn(net, float("nan"))
    with pytest.raises(TypeError, match="model"):
        fn("not a model", 0.1)


def test_penalized_loss_adds_terms_and_label_smoothing(net):
    net.eval()
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    logits = net(x)
    loss = R.penalized_loss(net, l1=0.01, l2=0.02, label_smoothing=0.1)(logits, y)
    expected = (F.cross_entropy(logits, y, label_smoothing=0.1) + R.l1_penalty(net, 0.01)
                + R.l2_penalty(net, 0.02))
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="^penalized_loss: l2"):
        R.penalized_loss(net, l2=-1.0)
    with pytest.raises(ValueError, match="^penalized_loss: label_smoothing"):
        R.penalized_loss(net, label_smoothing=1.0)


def test_param_groups_and_errors(net):
    decay, rest = R.param_groups(net, 0.5)
    assert decay["weight_decay"] == 0.5 and rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="^param_groups: weight_decay"):
        R.param_groups(net, -1.0)


def _train(make_opt, loss_fn=None, steps=10):
    torch.manual_seed(1)
    model = mlp(6, (8,), 3)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(steps)]
    fit(model, batches, epochs=1, optimizer=make_opt(model), loss_fn=loss_fn and loss_fn(model),
        device="cpu", progress=False)
    return _flat(model)


def test_sgd_penalty_equals_weight_decay_but_adam_differs_from_adamw():
    lam = 0.1
    a = _train(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), lambda m: R.penalized_loss(m, l2=lam))
    b = _train(lambda m: torch.optim.SGD(R.param_groups(m, lam), lr=0.1))
    assert torch.allclose(a, b, atol=1e-6)
    c = _train(lambda m: torch.optim.Adam(m.parameters(), lr=0.01), lambda m: R.penalized_loss(m, l2=lam))
    d = _train(lambda m: torch.optim.AdamW(R.param_groups(m, lam), lr=0.01))
    assert (c - d).abs().max() > 1e-3


def test_near_zero_fraction():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.5], [0.005, 1.0]]))
    assert R.near_zero_fraction(layer, 0.01) == 0.5
    assert R.near_zero_fraction(layer, 0.0) == 0.25
    with pytest.raises(ValueError, match="^near_zero_fraction"):
        R.near_zero_fraction(nn.ReLU())
    with pytest.raises(ValueError, match="^near_zero_fraction: tol"):
        R.near_zero_fraction(layer, -1.0)


# ----------------------------------------------------------------- DropConnect

def test_dropconnect_eval_is_linear_and_train_is_random():
    torch.manual_seed(0)
    layer = R.DropConnect(5, 4, p=0.5)
    x = torch.randn(3, 5)
    assert torch.allclose(layer.eval()(x), F.linear(x, layer.weight, layer.bias))
    layer.train()
    a, b = layer(x), layer(x)
    assert a.shape == (3, 4) and not torch.allclose(a, b)


def test_dropconnect_masks_weights_per_example():
    torch.manual_seed(0)
    layer = R.DropConnect(1, 200, p=0.5, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    out = layer.train()(torch.ones(2, 1))
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # each weight dropped or kept and scaled by 1/(1-p)
    assert not torch.equal(out[0], out[1])  # a separate mask for every example
    assert 0.3 < float((out == 0).float().mean()) < 0.7


def test_dropconnect_gradients_flow_and_p_zero_is_linear():
    layer = R.DropConnect(4, 2, p=0.3)
    layer(torch.randn(8, 4)).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
    zero = R.DropConnect(4, 2, p=0.0).train()
    x = torch.randn(3, 4)
    assert torch.allclose(zero(x), F.linear(x, zero.weight, zero.bias))


def test_dropconnect_from_linear_copies_weights():
    lin = nn.Linear(3, 2)
    dc = R.DropConnect.from_linear(lin, 0.25)
    assert torch.equal(dc.weight, lin.weight) and torch.equal(dc.bias, lin.bias) and dc.p == 0.25
    with pytest.raises(TypeError, match="^DropConnect.from_linear"):
        R.DropConnect.from_linear(nn.Conv1d(1, 1, 3))


def test_dropconnect_bad_input():
    with pytest.raises(ValueError, match="^DropConnect: p"):
        R.DropConnect(3, 2, p=1.0)
    with pytest.raises(ValueError, match="^DropConnect: p"):
        R.DropConnect(3, 2, p=-0.1)
    with pytest.raises(ValueError, match="^DropConnect: in_features"):
        R.DropConnect(0, 2)
    layer = R.DropConnect(3, 2)
    with pytest.raises(ValueError, match="^DropConnect: input must be 2-D"):
        layer(torch.randn(4, 3, 1))
    with pytest.raises(ValueError, match="^DropConnect: input must have 3 features"):
        layer(torch.randn(4, 5))
    with pytest.raises(TypeError, match="^DropConnect: input"):
        layer(torch.ones(4, 3, dtype=torch.int64))


# ----------------------------------------------------------------- early stopping

def _history(vals, key="val_acc"):
    h = History()
    for v in vals:
        h.train_loss.append(0.0)
        getattr(h, key).append(v)
    return h


def test_early_stopping_patience_and_restore():
    model = nn.Linear(2, 1)
    stop = R.EarlyStopping(patience=2)
    scores = [0.5, 0.7, 0.6, 0.65]
    h = History()
    decisions = []
    for epoch, s in enumerate(scores):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # a different state at every epoch
        h.val_acc.append(s)
        decisions.append(stop(epoch, model, h))
    assert decisions == [False, False, False, True]
    assert stop.best_epoch == 1 and stop.best_score == 0.7 and stop.stopped_epoch == 3
    assert torch.all(model.weight == 1.0)  # restored to the state of epoch 1


def test_early_stopping_val_loss_lower_is_better_and_no_restore():
    model = nn.Linear(2, 1)
    stop = R.EarlyStopping(patience=1, monitor="val_loss", restore_best=False)
    h = History()
    out = []
    for epoch, v in enumerate([1.0, 0.8, 0.9]):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        h.val_loss.append(v)
        out.append(stop(epoch, model, h))
    assert out == [False, False, True] and stop.best_epoch == 1
    assert torch.all(model.weight == 2.0)  # not restored
    stop.restore(model)
    assert torch.all(model.weight == 1.0)


def test_early_stopping_with_fit_restores_best_validation_score():
    torch.manual_seed(0)
    x, y = torch.randn(200, 6), torch.randint(0, 3, (200,))
    xv, yv = torch.randn(100, 6), torch.randint(0, 3, (100,))  # random labels: validation gets worse
    model = mlp(6, (64,), 3)
    stop = R.EarlyStopping(patience=3)
    h = fit(model, [(x, y)], [(xv, yv)], epochs=200, lr=0.05, callbacks=[stop], device="cpu", progress=False)
    assert h.stopped_early and h.epochs < 200
    assert evaluate(model, [(xv, yv)])[1] == stop.best_score == max(h.val_acc)


def test_early_stopping_bad_input():
    with pytest.raises(ValueError, match="^EarlyStopping: patience"):
        R.EarlyStopping(patience=0)
    with pytest.raises(TypeError, match="^EarlyStopping: patience"):
        R.EarlyStopping(patience=2.5)
    with pytest.raises(ValueError, match="^EarlyStopping: monitor"):
        R.EarlyStopping(monitor="train_acc")
    with pytest.raises(ValueError, match="^EarlyStopping: min_delta"):
        R.EarlyStopping(min_delta=-1.0)
    with pytest.raises(ValueError, match="no val_acc"):
        R.EarlyStopping()(0, nn.Linear(1, 1), History())
    with pytest.raises(RuntimeError, match="^EarlyStopping.restore"):
        R.EarlyStopping().restore(nn.Linear(1, 1))


def test_early_stopping_min_delta():
    stop = R.EarlyStopping(patience=1, min_delta=0.05)
    h = History()
    out = []
    for epoch, v in enumerate([0.5, 0.52, 0.53]):
        h.val_acc.append(v)
        out.append(stop(epoch, nn.Linear(1, 1), h))
    assert out == [False, True, True]  # 0.52 and 0.53 are not 0.05 better than 0.5
    assert stop.best_epoch == 0


# ----------------------------------------------------------------- max-norm

def test_max_norm_clips_rows_only_when_needed():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
    R.max_norm_(nn.Sequential(layer), 2.0)
    norms = layer.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="^max_norm_: max_value"):
        R.max_norm_(layer, 0.0)
    with pytest.raises(ValueError, match="^max_norm: max_value"):
        R.max_norm(-1.0)


def test_max_norm_as_after_step_hook():
    torch.manual_seed(0)
    model = mlp(4, (16,), 2)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    fit(model, [(x, y)], epochs=20, lr=0.5, after_step=R.max_norm(0.5), device="cpu", progress=False)
    for w in R.penalized_parameters(model):
        assert float(w.detach().norm(dim=1).max()) <= 0.5 + 1e-5


# ----------------------------------------------------------------- augmentation

def test_shift_and_noise_shifts_whole_signals():
    x = torch.arange(10.0).repeat(50, 1)
    out = R.shift_and_noise(x, max_shift=2, noise=0.0, generator=torch.Generator().manual_seed(0))
    shifts = (x[:, 5] - out[:, 5])
    assert set(shifts.tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0} and len(set(shifts.tolist())) > 1
    for row, s in zip(out, shifts):  # each row is the original moved by s samples, edge repeated
        assert torch.equal(row, (torch.arange(10.0) - s).clamp(0, 9))


def test_shift_and_noise_noise_level_and_errors():
    x = torch.zeros(100, 40)
    out = R.shift_and_noise(x, max_shift=0, noise=0.5, generator=torch.Generator().manual_seed(0))
    assert 0.45 < float(out.std()) < 0.55
    with pytest.raises(ValueError, match="^shift_and_noise: x must be 2-D"):
        R.shift_and_noise(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="^shift_and_noise: max_shift"):
        R.shift_and_noise(x, max_shift=40)
    with pytest.raises(ValueError, match="^shift_and_noise: noise"):
        R.shift_and_noise(x, noise=-1.0)


def test_digits_augmentation_per_image():
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 8, 8)
    x[:, :, 2:6, 3:5] = 1.0
    out = R.augment_images(x, R.digits_augmentation(degrees=20, max_shift=2))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1  # independent draws per image
    same = R.augment_images(x, R.digits_augmentation(degrees=0, max_shift=0))
    assert torch.allclose(same, x)
    with pytest.raises(ValueError, match="^augment_images: x must be 4-D"):
        R.augment_images(torch.zeros(8, 8), lambda t: t)
    with pytest.raises(ValueError, match="^digits_augmentation: degrees"):
        R.digits_augmentation(degrees=-1)


def test_augmented_step_only_in_training_mode():
    seen = []

    def augment(x):
        seen.append(True)
        return x + 1.0

    step = R.augmented_step(augment)
    model = nn.Linear(3, 2)
    batch = (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
    model.train()
    loss, logits, y = step(model, batch)
    assert torch.allclose(logits, model(torch.ones(4, 3))) and len(seen) == 1
    model.eval()
    _, logits, _ = step(model, batch)
    assert torch.allclose(logits, model(torch.zeros(4, 3))) and len(seen) == 1
    with pytest.raises(TypeError, match="^augmented_step"):
        R.augmented_step("no")


# ----------------------------------------------------------------- recurrent dropout

def test_recurrent_dropout_modes():
    torch.manual_seed(0)
    x = torch.randn(5, 40)
    models = {m: R.RecurrentDropoutClassifier(8, 0.5, m, input_size=4) for m in ("none", "naive", "variational")}
    for mode, model in models.items():
        assert model(x).shape == (5, 10)
        model.eval()
        assert torch.equal(model(x), model(x))  # no dropout at evaluation
    models["none"].train()
    assert torch.equal(models["none"](x), models["none"](x))
    models["variational"].train()
    assert not torch.equal(models["variational"](x), models["variational"](x))


def test_variational_mask_is_reused_across_steps(monkeypatch):
    model = R.RecurrentDropoutClassifier(6, 0.5, "variational").train()
    calls = []
    real = model._mask
    monkeypatch.setattr(model, "_mask", lambda h: calls.append(1) or real(h))
    model(torch.randn(2, 10))
    assert len(calls) == 1
    naive = R.RecurrentDropoutClassifier(6, 0.5, "naive").train()
    calls_n = []
    real_n = naive._mask
    monkeypatch.setattr(naive, "_mask", lambda h: calls_n.append(1) or real_n(h))
    naive(torch.randn(2, 10))
    assert len(calls_n) == 10  # a fresh mask at each of the 10 steps


def test_recurrent_dropout_bad_input():
    with pytest.raises(ValueError, match="^RecurrentDropoutClassifier: p"):
        R.RecurrentDropoutClassifier(p=1.5)
    with pytest.raises(ValueError, match="^RecurrentDropoutClassifier: mode"):
        R.RecurrentDropoutClassifier(mode="sometimes")
    model = R.RecurrentDropoutClassifier(4, input_size=4)
    with pytest.raises(ValueError, match="not a multiple"):
        model(torch.randn(2, 10))
    with pytest.raises(ValueError, match="features per step"):
        model(torch.randn(2, 10, 3))


def test_recurrent_dropout_none_equals_grucell():
    """With no dropout the written-out step computes exactly what nn.GRUCell computes."""
    torch.manual_seed(0)
    model = R.RecurrentDropoutClassifier(6, 0.5, "none", input_size=4).train()
    x = torch.randn(3, 5, 4)
    h = torch.zeros(3, 6)
    for t in range(5):
        h = model.cell(x[:, t], h)
    assert torch.allclose(model(x), model.head(h), atol=1e-6)


def test_recurrent_dropout_leaves_the_carry_path_unmasked():
    """An all-zero mask removes only the recurrent products, never the carried state."""
    torch.manual_seed(0)
    model = R.RecurrentDropoutClassifier(4, 0.5, "variational", input_size=2).train()
    model._mask = lambda h: torch.zeros_like(h)
    x = torch.randn(2, 3, 2)
    c = model.cell
    h = torch.zeros(2, 4)
    for t in range(3):
        gi = torch.nn.functional.linear(x[:, t], c.weight_ih, c.bias_ih).chunk(3, 1)
        r, z = torch.sigmoid(gi[0] + c.bias_hh[:4]), torch.sigmoid(gi[1] + c.bias_hh[4:8])
        n = torch.tanh(gi[2] + r * c.bias_hh[8:])
        h = (1 - z) * n + z * h
    assert torch.allclose(model(x), model.head(h), atol=1e-6)
