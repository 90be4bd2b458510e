"""Tests of nnbook.weightonly: group-wise RTN, GPTQ, AWQ, byte accounting, input checks."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnbook import weightonly as W

torch.set_num_threads(1)


def _data(out_f=16, in_f=64, n=256, seed=0, uneven=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    mix = torch.randn(in_f, in_f, generator=g) / math.sqrt(in_f)      # correlated inputs, as in real layers
    x = torch.randn(n, in_f, generator=g) @ (torch.eye(in_f) + mix)
    if uneven:
        x = x * torch.linspace(0.05, 5.0, in_f)
    return w, x


def _err(w, w_hat, x, s=None):
    return W.output_error(w, w_hat, x, s)


# ---------------------------------------------------------------- round-to-nearest
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [8, 32, 64])
def test_rtn_error_at_most_half_a_step(bits, group_size):
    w, _ = _data()
    codes, scale, zero = W.quantize_groups(w, bits, group_size)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.float16 and zero.dtype == torch.uint8
    assert codes.shape == w.shape and scale.shape == zero.shape == (16, 64 // group_size)
    assert int(codes.max()) <= 2 ** bits - 1 and int(zero.max()) <= 2 ** bits - 1
    err = (W.dequantize_groups(codes, scale, zero) - w).abs().view(16, -1, group_size).amax(-1)
    assert bool((err <= scale.float() / 2 * (1 + 1e-4) + 1e-6).all())


def test_zero_is_exact_and_rtn_matches_parts():
    w = torch.tensor([[0.0, 0.3, -0.7, 0.0, 1.1, 0.0, -0.2, 0.5]])
    w_hat = W.rtn(w, bits=3, group_size=4)
    assert w_hat[0, 0] == 0 and w_hat[0, 3] == 0 and w_hat[0, 5] == 0
    assert torch.equal(w_hat, W.dequantize_groups(*W.quantize_groups(w, 3, 4)))


def test_smaller_groups_are_more_accurate():
    w, x = _data()
    errs = [_err(w, W.rtn(w, 3, g), x) for g in (64, 16, 4)]
    assert errs[0] > errs[1] > errs[2]


# ---------------------------------------------------------------- GPTQ
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_beats_rtn_on_calibration_and_held_out(bits):
    w, x = _data(n=512)
    x_cal, x_new = x[:256], x[256:]
    w_gptq = W.dequantize_groups(*W.gptq(w, x_cal, bits, 16))
    w_rtn = W.rtn(w, bits, 16)
    assert _err(w, w_gptq, x_cal) < 0.8 * _err(w, w_rtn, x_cal)
    assert _err(w, w_gptq, x_new) < _err(w, w_rtn, x_new)


def test_gptq_lazy_blocks_give_the_same_result():
    w, x = _data()
    a = W.dequantize_groups(*W.gptq(w, x, 3, 8, block_size=8))
    b = W.dequantize_groups(*W.gptq(w, x, 3, 8, block_size=64))
    c = W.dequantize_groups(*W.gptq(w, x, 3, 8, block_size=5))      # rounded up to a multiple of the group size
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_gptq_handles_dead_inputs_and_one_sample():
    w, x = _data()
    x[:, 3] = 0.0                                       # an input that is never active
    codes, scale, zero = W.gptq(w, x, 4, 16)
    w_hat = W.dequantize_groups(codes, scale, zero)
    assert torch.isfinite(w_hat).all()
    assert float(w_hat[:, 3].abs().max()) <= float(scale.float().max()) / 2 + 1e-6   # its weight goes to ~0
    out = W.gptq(w, x[:1], 4, 16)                       # a rank-1 Hessian: damping keeps it invertible
    assert torch.isfinite(W.dequantize_groups(*out)).all()


def test_gptq_at_8_bits_is_nearly_exact():
    w, x = _data()
    assert _err(w, W.dequantize_groups(*W.gptq(w, x, 8, 32)), x) < 1e-4


# ---------------------------------------------------------------- AWQ
def test_awq_scales_normalized_and_alpha_zero_is_rtn():
    w, x = _data(uneven=True)
    s = W.awq_scales(x, 0.5)
    assert s.shape == (64,) and bool((s > 0).all())
    assert abs(float(s.max() * s.min()) - 1.0) < 1e-4
    assert torch.equal(W.awq_scales(x, 0.0), torch.ones(64))
    codes, scale, zero, s0, alpha = W.awq(w, x, 3, 16, alphas=[0.0])
    assert alpha == 0.0 and torch.equal(W.dequantize_groups(codes, scale, zero), W.rtn(w, 3, 16))


def test_awq_never_loses_to_rtn_on_calibration_and_helps_uneven_inputs():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 64, generator=g)
    x = torch.randn(256, 64, generator=g) * torch.logspace(-1, 1, 64)[torch.randperm(64, generator=g)]  # uneven channels
    codes, scale, zero, s, alpha = W.awq(w, x, 3, 32)
    e_awq, e_rtn = _err(w, W.dequantize_groups(codes, scale, zero), x, s), _err(w, W.rtn(w, 3, 32), x)
    assert e_awq < 0.9 * e_rtn and alpha > 0
    codes, scale, zero, s, _ = W.awq(w, x, 3, 32, then_gptq=True)
    assert _err(w, W.dequantize_groups(codes, scale, zero), x, s) < e_awq


# ---------------------------------------------------------------- storage
@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_roundtrip_and_length(bits):
    codes = torch.randint(0, 2 ** bits, (7, 13), generator=torch.Generator().manual_seed(bits), dtype=torch.int64)
    packed = W.pack_codes(codes, bits)
    assert len(packed) == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(W.unpack_codes(packed, bits, codes.numel()).view(7, 13).long(), codes)


def test_weight_only_linear_forward_and_bytes():
    torch.manual_seed(0)
    lin = nn.Linear(64, 8)
    q = W.quantize_model_weight_only(lin, "rtn", bits=4, group_size=16)
    assert isinstance(q, W.WeightOnlyLinear) and isinstance(lin, nn.Linear)
    x = torch.randn(5, 64)
    assert torch.allclose(q(x), F.linear(x, q.dequantized_weight(), lin.bias), atol=1e-6)
    assert q.stored_bytes() == 64 * 8 // 2 + 2 * 32 + 32 // 2 + 4 * 8
    assert W.weight_only_bytes(nn.Sequential(q, nn.ReLU())) == q.stored_bytes()
    assert W.weight_only_bytes(lin.to(torch.bfloat16)) == 2 * (64 * 8 + 8)


def test_quantize_model_sequential_methods_and_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    before = [p.clone() for p in net.parameters()]
    x = torch.randn(128, 16)
    for method in W.METHODS:
        q = W.quantize_model_weight_only(net, method, 4, 16, x)
        assert not q.training and [type(m).__name__ for m in q][::2] == ["WeightOnlyLinear"] * 3
        assert torch.isfinite(q(x)).all()
        if method.startswith("awq"):
            assert q[0].input_scale is not None and q[0].alpha is not None
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))   # the original is untouched
    part = W.quantize_model_weight_only(net, "gptq", 4, 32, x, layers=["2", "4"])
    assert isinstance(part[0], nn.Linear) and isinstance(part[2], W.WeightOnlyLinear)


# ---------------------------------------------------------------- bad input
def test_bad_group_size_bits_and_calibration():
    w, x = _data()
    with pytest.raises(ValueError, match=r"group_size must divide the input width 64 .*got 48"):
        W.quantize_groups(w, 4, 48)
    with pytest.raises(ValueError, match=r"bits must be an int in 2\.\.8, got 1"):
        W.quantize_groups(w, 1, 16)
    with pytest.raises(ValueError, match=r"bits must be an int in 2\.\.8, got 9"):
        W.gptq(w, x, 9, 16)
    with pytest.raises(TypeError, match="bits must be an int"):
        W.quantize_groups(w, True, 16)
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        W.quantize_groups(w, 4, 0)
    for fn in (W.gptq, W.awq):
        with pytest.raises(ValueError, match=r"at least 1 sample, got an empty set of shape \(0, 64\)"):
            fn(w, x[:0], 4, 16)
        with pytest.raises(ValueError, match=r"calibration must have shape \(N, 64\), got \(10, 32\)"):
            fn(w, x[:10, :32], 4, 16)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        W.quantize_groups(w[0], 4, 16)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        W.rtn([[1.0, 2.0]], 4, 2)
    with pytest.raises(ValueError, match="damping must be in"):
        W.gptq(w, x, 4, 16, damping=0.0)
    with pytest.raises(ValueError, match="alphas must hold at least one"):
        W.awq(w, x, 4, 16, alphas=[])
    with pytest.raises(ValueError, match="alpha must be in"):
        W.awq_scales(x, 1.5)
    with pytest.raises(ValueError, match="codes must lie in 0..15, got values in 0..16"):
        W.pack_codes(torch.tensor([0, 16]), 4)


def test_bad_model_arguments():
    net = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"group_size must divide the input width 40 .*got 32 \(layer '0'\)"):
        W.quantize_model_weight_only(net, "rtn", 4, 32)
    with pytest.raises(ValueError, match="needs calibration inputs"):
        W.quantize_model_weight_only(net, "gptq", 4, 8)
    with pytest.raises(ValueError, match="at least 1 sample"):
        W.quantize_model_weight_only(net, "awq", 4, 8, torch.zeros(0, 40))
    with pytest.raises(ValueError, match=r"method must be one of \['rtn', 'gptq', 'awq', 'awq\+gptq'\], got 'hqq'"):
        W.quantize_model_weight_only(net, "hqq", 4, 8)
    with pytest.raises(ValueError, match="layers must name Linear layers"):
        W.quantize_model_weight_only(net, "rtn", 4, 8, layers=["1"])
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        W.quantize_model_weight_only("net", "rtn", 4, 8)
    with pytest.raises(ValueError, match="shape"):
        W.output_error(torch.ones(2, 4), torch.ones(2, 3), torch.ones(3, 4))
