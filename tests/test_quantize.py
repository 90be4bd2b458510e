"""Unit tests of nnbook.quantize: grids, round trips, STE, model transforms, SVD, ONNX int8."""
import copy
import math
import os

import pytest
import torch
from torch import nn

from nnbook import quantize as Q


def _tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def _trained_bn(model):
    """Give the BatchNorm layers non-trivial statistics and affine parameters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


# ------------------------------------------------------------------ grids
@pytest.mark.parametrize("bits", range(2, 17))
def test_qrange(bits):
    assert Q.qrange(bits, True) == (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    assert Q.qrange(bits, False) == (0, 2 ** bits - 1)


@pytest.mark.parametrize("bits", [0, 1, 17, 32, -3])
def test_bad_bits_raise(bits):
    x = torch.randn(10)
    for fn in (lambda: Q.qrange(bits), lambda: Q.qparams(x, bits), lambda: Q.fake_quantize(x, bits),
               lambda: Q.quantize_pow2(x, bits), lambda: Q.quantize(x, 1.0, 0.0, bits)):
        with pytest.raises(ValueError, match="bits must be in 2..16"):
            fn()
    with pytest.raises(TypeError):
        Q.qrange(8.0)
    with pytest.raises(TypeError):
        Q.qrange(True)


def test_non_tensor_and_bad_axis_raise():
    with pytest.raises(TypeError, match="torch.Tensor"):
        Q.qparams([1.0, 2.0])
    with pytest.raises(TypeError, match="floating-point"):
        Q.qparams(torch.arange(5))
    with pytest.raises(ValueError, match="empty"):
        Q.qparams(torch.empty(0))
    with pytest.raises(ValueError, match="axis"):
        Q.qparams(torch.randn(3, 4), axis=2)
    with pytest.raises(ValueError, match="lo <= hi"):
        Q.qparams(torch.randn(3), lo=1.0, hi=-1.0)
    with pytest.raises(ValueError, match="both lo and hi"):
        Q.qparams(torch.randn(3), lo=1.0)
    with pytest.raises(TypeError):
        Q.dequantize([1, 2], 1.0, 0)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8, 12, 16])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_round_trip_error_at_most_half_a_step(bits, symmetric, axis):
    torch.manual_seed(bits)
    x = torch.randn(5, 7) * torch.linspace(0.1, 3, 7) + 0.3
    scale, zp = Q.qparams(x, bits, symmetric, axis)
    q = Q.quantize(x, scale, zp, bits, symmetric, axis)
    qmin, qmax = Q.qrange(bits, symmetric)
    assert q.dtype == torch.int32 and int(q.min()) >= qmin and int(q.max()) <= qmax
    assert torch.equal(zp, torch.round(zp))  # integer zero points
    x_hat = Q.dequantize(q, scale, zp, axis)
    step = scale if axis is None else scale.reshape([-1 if d == axis else 1 for d in range(2)])
    assert bool(((x_hat - x).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())
    # fake quantization is exactly quantize-then-dequantize
    assert torch.allclose(Q.fake_quantize(x, bits, symmetric, axis), x_hat, atol=1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exact_and_outside_values_clamp(symmetric):
    x = torch.tensor([0.2, 0.5, 1.0, 3.0])  # all positive: range widened to contain 0
    scale, zp = Q.qparams(x, 4, symmetric)
    assert float(Q.dequantize(Q.quantize(torch.zeros(1), scale, zp, 4, symmetric), scale, zp)) == 0.0
    qmin, qmax = Q.qrange(4, symmetric)
    big = torch.tensor([100.0, -100.0])
    q = Q.quantize(big, scale, zp, 4, symmetric)
    assert q.tolist() == [qmax, qmin]
    hi, lo = (qmax - zp) * scale, (qmin - zp) * scale
    assert torch.allclose(Q.dequantize(q, scale, zp), torch.stack([hi, lo]))


def test_known_values_and_storage_dtype():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    scale, zp = Q.qparams(x, 8, True)
    assert math.isclose(float(scale), 1 / 127, rel_tol=1e-6) and float(zp) == 0
    q = Q.quantize(x, scale, zp, 8, True, storage=True)
    assert q.dtype == torch.int8 and q.tolist() == [-127, 0, 64, 127]
    scale, zp = Q.qparams(torch.tensor([-1.0, 3.0]), 8, False)
    assert math.isclose(float(scale), 4 / 255, rel_tol=1e-6) and float(zp) == 64
    assert Q.quantize(torch.tensor([-1.0, 3.0]), scale, zp, 8, False, storage=True).dtype == torch.uint8
    s, z = Q.qparams(torch.zeros(3), 8, False)  # degenerate range
    assert float(s) == 1.0 and float(z) == 0.0


def test_per_channel_never_worse_than_per_tensor():
    torch.manual_seed(1)
    w = torch.randn(8, 16) * torch.logspace(-2, 0, 8)[:, None]  # channels of very different ranges
    err_t = (Q.fake_quantize(w, 4, True, None) - w).pow(2).mean()
    err_c = (Q.fake_quantize(w, 4, True, 0) - w).pow(2).mean()
    assert err_c < err_t


# -------------------------------------------------------------- STE / pow2
def test_round_ste_gradient_is_identity_and_matches_detach_trick():
    x = torch.linspace(-2, 2, 11, requires_grad=True)
    Q.round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(Q.round_ste(x), x + (torch.round(x) - x).detach())


def test_fake_quantize_gradient_is_clipped_outside_range():
    x = torch.tensor([-5.0, -0.3, 0.0, 0.4, 5.0], requires_grad=True)
    y = Q.fake_quantize(x, 4, True, scale=torch.tensor(0.1), zero_point=torch.tensor(0.0))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pow2_levels(bits):
    torch.manual_seed(bits)
    x = torch.randn(200) * 0.3
    y = Q.quantize_pow2(x, bits)
    nz = y[y != 0].abs()
    exps = torch.log2(nz)
    assert torch.equal(exps, torch.round(exps))                     # only powers of two
    assert len(torch.unique(exps)) <= 2 ** (bits - 1) - 1           # and no more than the code allows
    assert torch.equal(torch.sign(y[y != 0]), torch.sign(x[y != 0]))
    e_max = math.floor(math.log2(4 * float(x.abs().max()) / 3))
    assert float(nz.max()) == 2.0 ** e_max
    # nearest level in the linear domain (among the allowed levels)
    e_min = e_max - (2 ** (bits - 1) - 2)
    levels = torch.tensor([0.0] + [2.0 ** e for e in range(e_min, e_max + 1)])
    best = levels[(x.abs()[:, None] - levels).abs().argmin(1)]
    assert torch.allclose(y.abs(), best)


def test_pow2_per_channel_shape():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([0.01, 0.1, 1.0, 10.0])[:, None, None, None]
    y = Q.quantize_pow2(w, 4, axis=0)
    assert y.shape == w.shape
    assert [float(y[c].abs().max()) for c in range(4)] == [2.0 ** math.floor(math.log2(4 * float(w[c].abs().max()) / 3)) for c in range(4)]


# ------------------------------------------------------------ model level
def test_fold_batchnorm_is_exact_and_leaves_input_unchanged():
    model = _trained_bn(_tiny_cnn())
    before = _state(model)
    folded = Q.fold_batchnorm(model)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert _same_state(model, before)


def test_quantize_model_structure_and_8bit_fidelity():
    model = _trained_bn(_tiny_cnn())
    before = _state(model)
    q = Q.quantize_model(model, 8, per_channel=True)
    assert sum(isinstance(m, Q.QuantLayer) for m in q.modules()) == 3
    assert _same_state(model, before)
    x = torch.randn(20, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), atol=0.05)
    q2 = Q.quantize_model(model, 4, skip=["8"])
    assert isinstance(q2[8], nn.Linear)


def test_quantize_model_bad_input_leaves_model_unchanged():
    model = _trained_bn(_tiny_cnn())
    before = _state(model)
    with pytest.raises(ValueError):
        Q.quantize_model(model, 1)
    with pytest.raises(ValueError):
        Q.quantize_model(model, 17)
    with pytest.raises(ValueError):
        Q.quantize_model(model, 8, act_bits=0)
    with pytest.raises(ValueError, match="scheme"):
        Q.quantize_model(model, 8, scheme="log")
    with pytest.raises(ValueError, match="skip"):
        Q.quantize_model(model, 8, skip=["1"])
    with pytest.raises(TypeError):
        Q.quantize_model("model", 8)
    with pytest.raises(TypeError, match="collection"):
        Q.quantize_model(model, 8, skip="8")
    with pytest.raises(ValueError, match="no Linear"):
        Q.quantize_model(nn.Sequential(nn.ReLU()), 8)
    with pytest.raises(TypeError, match="expected one of"):
        Q.QuantLayer(nn.LSTM(3, 3))
    assert _same_state(model, before)
    assert all(not isinstance(m, Q.QuantLayer) for m in model.modules())


def test_calibrate_minmax_and_percentile_with_hooks():
    model = _trained_bn(_tiny_cnn())
    q = Q.quantize_model(model, 8, act_bits=8)
    x = torch.rand(32, 1, 8, 8)
    with pytest.raises(RuntimeError, match="calibrate"):
        q(x)
    r_mm = Q.calibrate(q, x, "minmax")
    assert r_mm["0"] == (float(x.min()), float(x.max()))
    assert all(not m._forward_pre_hooks for m in q.modules())  # hooks removed
    assert r_mm["3"][0] >= 0.0  # post-ReLU input of the second conv
    r_pc = Q.calibrate(q, [(x[:16], None), (x[16:], None)], "percentile", 99.0)
    assert all(r_pc[k][1] <= r_mm[k][1] + 1e-6 and r_pc[k][0] >= r_mm[k][0] - 1e-6 for k in r_mm)
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), atol=0.1)
    with pytest.raises(ValueError, match="method"):
        Q.calibrate(q, x, "kl")
    with pytest.raises(ValueError, match="QuantLayer"):
        Q.calibrate(model, x)
    with pytest.raises(TypeError):
        Q.calibrate(q, [[1, 2, 3]])


def test_qat_gradients_reach_float_weights():
    model = _trained_bn(_tiny_cnn())
    q = Q.quantize_model(model, 3, act_bits=4)
    Q.calibrate(q, torch.rand(16, 1, 8, 8))
    q.train()
    loss = nn.functional.cross_entropy(q(torch.rand(8, 1, 8, 8)), torch.randint(0, 3, (8,)))
    loss.backward()
    grads = [m.layer.weight.grad for m in q.modules() if isinstance(m, Q.QuantLayer)]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_quantized_size_bytes():
    lin = nn.Sequential(nn.Linear(100, 10))
    assert Q.quantized_size_bytes(lin) == 4 * (100 * 10 + 10)
    q8 = Q.quantize_model(lin, 8, symmetric=True, per_channel=True)
    assert Q.quantized_size_bytes(q8) == 1000 + 10 * 4 + 10 * 4
    q4 = Q.quantize_model(lin, 4, symmetric=False, per_channel=False)
    assert Q.quantized_size_bytes(q4) == 500 + 1 * (4 + 1) + 10 * 4
    qp = Q.quantize_model(lin, 3, scheme="pow2", per_channel=True)
    assert Q.quantized_size_bytes(qp) == 375 + 10 + 10 * 4
    qa = Q.quantize_model(lin, 8, per_channel=False, act_bits=8)
    assert Q.quantized_size_bytes(qa) == 1000 + 4 + 10 * 4 + 8


# ------------------------------------------------------------ low rank
def test_factorize_linear_full_rank_exact_and_params():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    x = torch.randn(4, 12)
    full = Q.factorize_linear(lin, 7)
    with torch.no_grad():
        assert torch.allclose(full(x), lin(x), atol=1e-5)
    low = Q.factorize_linear(lin, 3)
    assert sum(p.numel() for p in low.parameters()) == 3 * (12 + 7) + 7
    # Eckart–Young: the rank-3 error equals the discarded singular values
    s = torch.linalg.svdvals(lin.weight.detach())
    w3 = low[1].weight @ low[0].weight
    assert math.isclose(float((w3 - lin.weight).detach().norm()), float(s[3:].norm()), rel_tol=1e-4)


def test_factorize_conv2d_full_rank_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    fact = Q.factorize_conv2d(conv, 5)
    with torch.no_grad():
        assert torch.allclose(fact(x), conv(x), atol=1e-5)
    assert sum(p.numel() for p in Q.factorize_conv2d(conv, 2).parameters()) == 2 * (27 + 5) + 5


def test_low_rank_model_and_errors_leave_model_unchanged():
    model = _trained_bn(_tiny_cnn())
    before = _state(model)
    new = Q.low_rank(model, {"3": 2, "8": 1})
    n_old = sum(p.numel() for p in model.parameters())
    n_new = sum(p.numel() for p in new.parameters())
    assert n_old - n_new == (6 * 36 + 6) - (2 * (36 + 6) + 6) + (3 * 6 + 3) - (1 * (6 + 3) + 3)
    assert new(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    for bad, err in [({"3": 0}, ValueError), ({"3": 7}, ValueError), ({"8": 4}, ValueError),
                     ({"1": 2}, TypeError), ({"nope": 2}, ValueError), ({"3": 2.0}, TypeError), ([], TypeError)]:
        with pytest.raises(err):
            Q.low_rank(model, bad)
    with pytest.raises(TypeError):
        Q.factorize_conv2d(nn.Conv1d(2, 2, 3), 1)
    with pytest.raises(ValueError, match="groups"):
        Q.factorize_conv2d(nn.Conv2d(4, 4, 3, groups=2), 1)
    with pytest.raises(TypeError):
        Q.factorize_linear(nn.Conv2d(2, 2, 1), 1)
    assert _same_state(model, before)
    assert isinstance(model[3], nn.Conv2d)


# ------------------------------------------------------------ ONNX Runtime
def test_onnx_int8_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    model = _trained_bn(_tiny_cnn())
    before = _state(model)
    x = torch.rand(40, 1, 8, 8)
    fbytes = Q.export_onnx(model, x[:1], tmp_path / "f.onnx")
    ibytes = Q.quantize_onnx(tmp_path / "f.onnx", tmp_path / "q.onnx", x, per_channel=True)
    assert fbytes == (tmp_path / "f.onnx").stat().st_size and ibytes > 0
    f, q = Q.OnnxModel(tmp_path / "f.onnx"), Q.OnnxModel(tmp_path / "q.onnx", threads=1)
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(f(x), ref, atol=1e-4)            # dynamic batch axis: 40 rows
    assert f(x[:3]).shape == (3, 3)
    assert (q(x) - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    tb = Q.onnx_tensor_bytes(tmp_path / "q.onnx")
    assert tb["int8"] >= 4 * 9 + 6 * 36 + 3 * 6 and tb["total"] < Q.onnx_tensor_bytes(tmp_path / "f.onnx")["total"]
    assert _same_state(model, before)
    with pytest.raises(TypeError):
        f([1, 2])
    with pytest.raises(FileNotFoundError):
        Q.OnnxModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError):
        Q.quantize_onnx(tmp_path / "f.onnx", tmp_path / "q2.onnx", x, batch_size=0)


def test_cpu_int8_features_keys():
    feats = Q.cpu_int8_features()
    assert set(feats) == {"avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}
    assert all(isinstance(v, bool) for v in feats.values())


# ------------------------------------------------ STE vs PyTorch's fake-quant (issue 16)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_ste_gradient_matches_torch_fake_quantize_per_channel(bits, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(32, 64, requires_grad=True)
    scale, zp = Q.qparams(w, bits, symmetric, axis=0)
    Q.fake_quantize(w, bits, symmetric, axis=0).sum().backward()
    ref_w = w.detach().clone().requires_grad_()
    qmin, qmax = Q.qrange(bits, symmetric)
    ref = torch.fake_quantize_per_channel_affine(ref_w, scale, zp.to(torch.int32), 0, qmin, qmax)
    ref.sum().backward()
    assert torch.allclose(Q.fake_quantize(w.detach(), bits, symmetric, axis=0), ref.detach(), atol=1e-6)
    # min-max ranges cover every weight: the gradient is 1 everywhere, the end codes included
    assert torch.equal(w.grad, ref_w.grad) and bool((w.grad == 1).all())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_ste_gradient_matches_torch_per_tensor_with_saturation(bits, symmetric):
    torch.manual_seed(0)
    x = (torch.randn(2000) * 2).requires_grad_()
    qmin, qmax = Q.qrange(bits, symmetric)
    scale, zp = 0.5 / (2 ** (bits - 2)), (0 if symmetric else (qmax + 1) // 2)  # a range that clips the tails
    Q.fake_quantize(x, bits, symmetric, scale=scale, zero_point=zp).sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(ref_x, scale, zp, qmin, qmax).sum().backward()
    assert torch.equal(x.grad, ref_x.grad)
    codes = torch.round(x.detach() / scale) + zp
    at_ends = (codes == qmin) | (codes == qmax)
    assert at_ends.any() and bool((x.grad[at_ends] == 1).all())       # values rounding to the end codes pass
    outside = (codes < qmin) | (codes > qmax)
    assert outside.any() and bool((x.grad[outside] == 0).all())        # saturated values do not


def test_quantlayer_qat_gradient_reaches_every_weight_at_2_bits():
    torch.manual_seed(0)
    layer = Q.QuantLayer(nn.Linear(64, 32), w_bits=2, symmetric=True, per_channel=True)
    layer(torch.randn(8, 64)).pow(2).sum().backward()
    assert float((layer.layer.weight.grad == 0).float().mean()) == 0.0   # the old STE zeroed 50 % of them


def test_count_params_trainable_only():
    from nnbook.measure import count_params

    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    assert count_params(m, trainable_only=True) == count_params(m) == 23
    m[0].requires_grad_(False)
    assert count_params(m, trainable_only=True) == 8
    import torch.nn.utils.prune as tprune

    tprune.l1_unstructured(m[1], "weight", amount=0.5)
    assert count_params(m, trainable_only=True) == 8 and count_params(m, nonzero=True, trainable_only=True) == 5


# ------------------------------------------- ONNX: a dynamic batch axis for every book model
def _book_models():
    from nnbook import models as M

    return {
        "mlp": (lambda: M.mlp(64, (16,)), (64,)),
        "softmax_regression": (lambda: M.softmax_regression(), (40,)),
        "DigitsCNN": (lambda: M.DigitsCNN((4, 8, 8)), (1, 8, 8)),
        "residual_mlp": (lambda: M.residual_mlp(64, 16, 2), (64,)),
        "ConvNet1d": (lambda: M.ConvNet1d(8), (40,)),
        "RecurrentClassifier-gru": (lambda: M.RecurrentClassifier("gru", 8), (40,)),
        "RecurrentClassifier-lstm": (lambda: M.RecurrentClassifier("lstm", 8), (40,)),
        "RecurrentClassifier-rnn": (lambda: M.RecurrentClassifier("rnn", 8), (40,)),
        "MessagePassingGNN": (lambda: M.MessagePassingGNN(8, rounds=1), (40,)),
        "TransformerClassifier": (lambda: M.TransformerClassifier(16, 2), (40,)),
    }


# The models that had bugs (fixed batch, failing quantization) always run; the rest (tens of seconds each,
# the recurrent ones most) run when NNBOOK_SLOW_TESTS=1, as in CI.
_ALWAYS = ("DigitsCNN", "TransformerClassifier", "MessagePassingGNN")
_SLOW = pytest.mark.skipif(os.environ.get("NNBOOK_SLOW_TESTS") != "1", reason="slow: set NNBOOK_SLOW_TESTS=1")


@pytest.mark.parametrize("name", [n if n in _ALWAYS else pytest.param(n, marks=_SLOW) for n in _book_models()])
def test_export_and_quantize_onnx_keep_a_dynamic_batch(name, tmp_path):
    make, shape = _book_models()[name]
    torch.manual_seed(0)
    model = make().eval()
    f32, i8 = tmp_path / "f.onnx", tmp_path / "i.onnx"
    Q.export_onnx(model, torch.randn(1, *shape), f32)
    Q.quantize_onnx(f32, i8, torch.randn(16, *shape))
    runs = {"float32": Q.OnnxModel(f32, threads=1), "int8": Q.OnnxModel(i8, threads=1)}
    for batch in (1, 3, 64):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            ref = model(x)
        assert runs["float32"](x).shape == ref.shape and torch.allclose(runs["float32"](x), ref, atol=1e-4)
        assert runs["int8"](x).shape == ref.shape


def test_export_onnx_refuses_a_model_that_fixes_the_batch(tmp_path):
    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x.reshape(len(x), 4))   # len(x) becomes a constant in torch.export

    with pytest.raises(ValueError, match="export_onnx: the exported graph has a fixed batch size"):
        Q.export_onnx(FixedBatch(), torch.randn(3, 4), tmp_path / "m.onnx")
