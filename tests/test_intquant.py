"""Unit tests of nnbook.intquant: integer arithmetic, fixed-point requantization, ONNX Runtime parity, LSQ."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnbook import intquant as IQ

torch.set_num_threads(1)


# ------------------------------------------------------------ reference arithmetic
def _srdhm(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul on Python ints (the C++ definition, line by line)."""
    if a == b == -(2 ** 31):
        return 2 ** 31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    x = ab + nudge
    return int(x / 2 ** 31) if abs(x) < 2 ** 52 else (abs(x) // 2 ** 31) * (1 if x >= 0 else -1)


def _rdbp(x: int, exponent: int) -> int:
    """gemmlowp's RoundingDivideByPOT on Python ints."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


# ---------------------------------------------------------------- quantize_multiplier
@pytest.mark.parametrize("m", [0.75, 0.5, 0.4999999, 1e-3, 3.3e-5, 0.999999999, 2.0 ** -20])
def test_quantize_multiplier_range_and_precision(m):
    m0, n = IQ.quantize_multiplier(m)
    assert isinstance(m0, int) and isinstance(n, int)
    assert 2 ** 30 <= m0 < 2 ** 31 and n >= 31
    assert abs(m0 * 2.0 ** -n - m) / m <= 2.0 ** -31


def test_quantize_multiplier_exact_powers():
    assert IQ.quantize_multiplier(0.5) == (2 ** 30, 31)
    assert IQ.quantize_multiplier(0.25) == (2 ** 30, 32)
    assert IQ.quantize_multiplier(torch.tensor(0.75)) == (3 * 2 ** 29, 31)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), 1e-30])
def test_quantize_multiplier_bad_values(bad):
    with pytest.raises(ValueError, match="quantize_multiplier"):
        IQ.quantize_multiplier(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5]])
def test_quantize_multiplier_bad_types(bad):
    with pytest.raises(TypeError, match="quantize_multiplier"):
        IQ.quantize_multiplier(bad)


# ------------------------------------------------------------------------ requantize
def test_requantize_matches_gemmlowp_reference():
    gen = torch.Generator().manual_seed(0)
    acc = torch.randint(-(2 ** 24), 2 ** 24, (2000,), generator=gen)
    acc[:4] = torch.tensor([0, 1, -1, 2 ** 31 - 1])
    for m in (0.00123, 0.4, 0.9, 1e-6):
        m0, n = IQ.quantize_multiplier(m)
        got = IQ.requantize(acc.reshape(1, -1), m0, n, zero_point=0, bits=8, signed=True, axis=0).flatten()
        want = [max(-128, min(127, _rdbp(_srdhm(int(a), m0), n - 31))) for a in acc.tolist()]
        assert got.tolist() == want


def test_requantize_within_one_of_exact_and_mostly_equal():
    gen = torch.Generator().manual_seed(1)
    acc = torch.randint(-200_000, 200_000, (4, 3, 50), generator=gen)
    ms = [1.1e-3, 7.7e-4, 2.5e-3]
    pairs = [IQ.quantize_multiplier(m) for m in ms]
    m0 = torch.tensor([p[0] for p in pairs])
    n = torch.tensor([p[1] for p in pairs])
    got = IQ.requantize(acc, m0, n, zero_point=128, axis=1)
    exact = torch.clamp(torch.round(acc.double() * torch.tensor(ms, dtype=torch.float64).view(1, 3, 1)) + 128, 0, 255)
    assert got.dtype == torch.int32 and got.shape == acc.shape
    assert int((got - exact).abs().max()) <= 1
    assert float((got != exact).float().mean()) < 0.02


def test_requantize_saturates_and_respects_grid():
    m0, n = IQ.quantize_multiplier(0.5)
    out = IQ.requantize(torch.tensor([[10_000, -10_000, 3]]), m0, n, zero_point=0, bits=4, signed=True, axis=0)
    assert out.flatten().tolist() == [7, -8, 2]      # 1.5 rounds away from zero
    out = IQ.requantize(torch.tensor([[10_000, -10_000]]), m0, n, zero_point=3, bits=2, signed=False, axis=0)
    assert out.flatten().tolist() == [3, 0]


def test_requantize_bad_input():
    m0, n = IQ.quantize_multiplier(0.01)
    acc = torch.tensor([[1, 2]])
    with pytest.raises(TypeError, match="requantize"):
        IQ.requantize(acc.float(), m0, n, 0)
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        IQ.requantize(acc, m0, n, 0, bits=9)
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        IQ.requantize(acc, m0, n, 0, bits=1)
    with pytest.raises(ValueError, match="m0"):
        IQ.requantize(acc, 2 ** 29, n, 0)
    with pytest.raises(ValueError, match="n must be"):
        IQ.requantize(acc, m0, 30, 0)
    with pytest.raises(ValueError, match="zero_point"):
        IQ.requantize(acc, m0, n, 300)
    with pytest.raises(ValueError, match="overflows int32"):
        IQ.requantize(torch.tensor([[2 ** 31]]), m0, n, 0)
    with pytest.raises(ValueError, match="vector of length 2"):
        IQ.requantize(acc, torch.tensor([m0, m0, m0]), n, 0)
    with pytest.raises(TypeError, match="m0"):
        IQ.requantize(acc, float(m0), n, 0)


# ------------------------------------------------------------------ int32 accumulation
def test_int_linear_cross_terms_equal_direct_sum():
    gen = torch.Generator().manual_seed(2)
    qx = torch.randint(0, 256, (7, 33), generator=gen, dtype=torch.int32).to(torch.uint8)
    qw = torch.randint(-127, 128, (5, 33), generator=gen).to(torch.int8)
    zw = torch.randint(-10, 10, (5,), generator=gen)
    bias = torch.randint(-1000, 1000, (5,), generator=gen, dtype=torch.int32)
    acc = IQ.int_linear(qx, qw, zx=77, zw=zw, bias=bias)
    direct = (qx.long() - 77) @ (qw.long() - zw[:, None]).T + bias.long()
    assert torch.equal(acc, direct)


def test_int_linear_bad_input():
    q = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="same K"):
        IQ.int_linear(q, torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="same K"):
        IQ.int_linear(q[0], q)
    with pytest.raises(TypeError, match="integer tensor"):
        IQ.int_linear(q.float(), q)
    with pytest.raises(TypeError, match="qx must be a torch.Tensor"):
        IQ.int_linear([[1, 2, 3]], q)
    with pytest.raises(ValueError, match="zw must be"):
        IQ.int_linear(q, q, zw=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="bias must be"):
        IQ.int_linear(q, q, bias=torch.zeros(5, dtype=torch.int32))
    with pytest.raises(TypeError, match="zx"):
        IQ.int_linear(q, q, zx=1.5)
    with pytest.raises(ValueError, match="overflows int32"):
        IQ.int_linear(torch.full((1, 3), 2 ** 20), torch.full((1, 3), 2 ** 20))


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1), (2, 0)])
def test_int_conv2d_matches_float_conv_of_centered_codes(stride, padding):
    gen = torch.Generator().manual_seed(3)
    qx = torch.randint(0, 256, (2, 3, 7, 6), generator=gen)
    qw = torch.randint(-127, 128, (4, 3, 3, 3), generator=gen)
    bias = torch.randint(-500, 500, (4,), generator=gen)
    acc = IQ.int_conv2d(qx, qw, zx=90, zw=0, bias=bias, stride=stride, padding=padding)
    # padding with the zero point is padding the centered codes (qx - zx) with 0
    ref = F.conv2d((qx - 90).double(), qw.double(), bias.double(), stride=stride, padding=padding)
    assert acc.shape == ref.shape and torch.equal(acc, ref.round().long())


def test_int_conv2d_bad_input():
    qx, qw = torch.zeros(1, 3, 4, 4, dtype=torch.int64), torch.zeros(2, 3, 3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="same C_in"):
        IQ.int_conv2d(qx, torch.zeros(2, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        IQ.int_conv2d(qx, qw, stride=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        IQ.int_conv2d(qx, qw, padding=-1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        IQ.int_conv2d(qx[..., :2, :2], qw)
    with pytest.raises(TypeError, match="stride must be an int"):
        IQ.int_conv2d(qx, qw, stride=1.0)


# ------------------------------------------------------------- Int8Layer and ORT parity
def _check_parity(layer, x, y_float):
    q = IQ.Int8Layer(layer, (float(x.min()), float(x.max())), (float(y_float.min()), float(y_float.max())))
    qx = q.quantize_input(x)
    ours, ort = q(qx), IQ.ort_reference(q, qx)
    assert ours.shape == ort.shape == y_float.shape
    assert int((ours - ort).abs().max()) <= 1
    assert float((ours != ort).float().mean()) < 0.01
    # and the integer layer computes the float layer up to quantization error
    err = (q.dequantize_output(ours) - y_float).abs().max()
    assert float(err) < 0.1 * float(y_float.abs().max()), err
    return q


def test_int8_conv_matches_onnxruntime_with_nonzero_input_zero_point():
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    x = torch.rand(16, 6, 8, 8) * 3 - 1                 # range [-1, 2]: zero point far from 0
    with torch.no_grad():
        q = _check_parity(conv, x, conv(x))
    assert 50 <= q.x_zero_point <= 120


def test_int8_strided_conv_and_linear_match_onnxruntime():
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
    lin = nn.Linear(40, 12)
    with torch.no_grad():
        x = torch.rand(8, 4, 9, 9)
        _check_parity(conv, x, conv(x))
        x = torch.randn(64, 40)
        q = _check_parity(lin, x, lin(x))
    assert q.kind == "linear" and q.qw.dtype == torch.int8 and q.bias_q.dtype == torch.int32


def test_int8_layer_bad_input():
    with pytest.raises(TypeError, match="Int8Layer"):
        IQ.Int8Layer(nn.Conv1d(2, 2, 3), (0, 1), (0, 1))
    with pytest.raises(ValueError, match="groups=1"):
        IQ.Int8Layer(nn.Conv2d(4, 4, 3, groups=2), (0, 1), (0, 1))
    with pytest.raises(ValueError, match="lo <= hi"):
        IQ.Int8Layer(nn.Linear(2, 2), (1, 0), (0, 1))
    with pytest.raises(TypeError, match="pair"):
        IQ.Int8Layer(nn.Linear(2, 2), 1.0, (0, 1))
    with pytest.raises(ValueError, match="widen y_range"):
        IQ.Int8Layer(nn.Linear(2, 2), (0, 100), (0, 1e-6))
    q = IQ.Int8Layer(nn.Linear(4, 2), (0, 1), (-1, 1))
    with pytest.raises(TypeError, match="Int8Layer"):
        IQ.ort_reference(nn.Linear(4, 2), torch.zeros(1, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        IQ.ort_reference(q, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="2-D with 4 channels"):
        IQ.ort_reference(q, torch.zeros(1, 5, dtype=torch.uint8))
    with pytest.raises(TypeError, match="floating-point"):
        q.quantize_input(torch.zeros(1, 4, dtype=torch.int64))


# ---------------------------------------------------------------------------- LSQ
def test_grad_scale():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = IQ.grad_scale(x, 0.25)
    assert y.tolist() == [1.0, -2.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.25, 0.25]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lsq_quantizer_grid_and_init(bits):
    q = IQ.LSQQuantizer(bits, signed=True)
    w = torch.randn(500)
    out = q(w)
    s = float(q.step.detach())
    assert abs(s - 2 * float(w.abs().mean()) / math.sqrt(2 ** (bits - 1) - 1)) < 1e-6
    codes = out.detach() / s
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    codes = codes.round()
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    u = IQ.LSQQuantizer(bits, signed=False, per_example=True)
    codes = (u(torch.rand(8, 10) * 5).detach() / float(u.step.detach())).round()
    assert codes.min() >= 0 and codes.max() <= 2 ** bits - 1


def test_lsq_gradients_follow_the_paper():
    q = IQ.LSQQuantizer(3, signed=True)                  # Q_N = 4, Q_P = 3
    v = torch.tensor([0.26, -1.7, 2.2, 5.0, -9.0], requires_grad=True)
    q(v.detach())
    with torch.no_grad():
        q.step.fill_(0.5)
    q(v).sum().backward()
    r = v.detach() / 0.5
    inside = (r > -4) & (r < 3)
    want_s = torch.where(inside, r.round() - r, torch.where(r >= 3, torch.tensor(3.0), torch.tensor(-4.0))).sum()
    assert abs(float(q.step.grad) - float(want_s) / math.sqrt(5 * 3)) < 1e-5
    assert v.grad.tolist() == inside.float().tolist()    # the STE: 1 inside, 0 where clipped


def test_lsq_bad_input():
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        IQ.LSQQuantizer(9)
    with pytest.raises(TypeError, match="signed"):
        IQ.LSQQuantizer(4, signed="yes")
    with pytest.raises(ValueError, match="cannot initialize"):
        IQ.LSQQuantizer(4, signed=False)(torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point"):
        IQ.LSQQuantizer(4)(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="LSQLayer"):
        IQ.LSQLayer(nn.ReLU(), 4, 4)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_lsq_model_structure_copy_and_training_step():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(16, 1, 6, 6)
    q = IQ.lsq_model(model, 3, 4, init_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the input model is untouched
    layers = [m for m in q.modules() if isinstance(m, IQ.LSQLayer)]
    assert len(layers) == 2 and all(bool(m.w_quant.initialized) and bool(m.x_quant.initialized) for m in layers)
    assert isinstance(q[1], nn.Identity)                  # BatchNorm folded
    q.train()
    steps = [float(m.x_quant.step.detach()) for m in layers]
    loss = F.cross_entropy(q(x), torch.randint(0, 3, (16,)))
    loss.backward()
    assert all(m.w_quant.step.grad is not None and m.x_quant.step.grad is not None for m in layers)
    with torch.no_grad():                                 # one plain SGD step (torch.optim's first call is slow to import)
        for p in q.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert [float(m.x_quant.step.detach()) for m in layers] != steps
    # 36 + 12 weights at 3 bits (ceil per tensor: 14 + 5 bytes), 4 + 3 biases, 4 steps
    assert IQ.lsq_size_bytes(q) == 14 + 5 + 4 * 7 + 4 * 4
    skipped = IQ.lsq_model(model, 3, None, skip=["5"])
    assert isinstance(skipped[5], nn.Linear) and skipped[0].x_quant is None


def test_lsq_model_bad_input():
    model = _tiny()
    with pytest.raises(TypeError, match="lsq_model"):
        IQ.lsq_model("model", 4)
    with pytest.raises(ValueError, match="w_bits must be in 2..8"):
        IQ.lsq_model(model, 1)
    with pytest.raises(ValueError, match="act_bits must be in 2..8"):
        IQ.lsq_model(model, 4, 16)
    with pytest.raises(ValueError, match="not Linear/Conv2d"):
        IQ.lsq_model(model, 4, skip=["nope"])
    with pytest.raises(TypeError, match="string"):
        IQ.lsq_model(model, 4, skip="5")
    with pytest.raises(ValueError, match="no Linear/Conv2d"):
        IQ.lsq_model(nn.Sequential(nn.ReLU()), 4)
    with pytest.raises(TypeError, match="lsq_size_bytes"):
        IQ.lsq_size_bytes(3)
