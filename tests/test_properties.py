"""Property-based tests (Hypothesis) of the maths of nnbook.quantize and nnbook.prune (issue 16).

Shapes, values, bit widths and grids are generated, not hand-picked; every property is compared with an
independent reference (PyTorch's fake-quant, scipy's CSR, exact counting) where one exists.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnbook import prune as P
from nnbook import quantize as Q

torch.set_num_threads(1)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
bits = st.integers(Q.MIN_BITS, Q.MAX_BITS)


@st.composite
def tensors(draw, min_dims=1):
    shape = draw(shapes.filter(lambda s: len(s) >= min_dims))
    arr = draw(arrays(np.float32, shape, elements=finite))
    return torch.from_numpy(arr)


@SETTINGS
@given(x=tensors(), b=bits, symmetric=st.booleans(), per_channel=st.booleans())
def test_round_trip_error_is_at_most_half_a_step(x, b, symmetric, per_channel):
    axis = 0 if per_channel else None
    scale, zp = Q.qparams(x, b, symmetric, axis)
    q = Q.quantize(x, scale, zp, b, symmetric, axis)
    qmin, qmax = Q.qrange(b, symmetric)
    assert q.dtype == torch.int32 and int(q.min()) >= qmin and int(q.max()) <= qmax
    x_hat = Q.dequantize(q, scale, zp, axis)
    s = Q._per_channel_view(scale, x, axis)
    tol = s / 2 * (1 + 1e-4) + 1e-6 * x.abs().max()          # float32 rounding of x / s
    assert bool(((x_hat - x).abs() <= tol).all())
    assert bool((x_hat[x == 0] == 0).all())                      # zero is exact
    fq = Q.fake_quantize(x, b, symmetric, axis)
    assert torch.allclose(fq, x_hat, atol=1e-6 * (1 + float(x.abs().max())))


@SETTINGS
@given(x=tensors(), b=st.integers(2, 8), symmetric=st.booleans(),
       scale=st.floats(1e-3, 10.0), zp_frac=st.floats(0.0, 1.0))
def test_ste_gradient_equals_torch_fake_quantize_per_tensor(x, b, symmetric, scale, zp_frac):
    qmin, qmax = Q.qrange(b, symmetric)
    zp = 0 if symmetric else int(round(qmin + zp_frac * (qmax - qmin)))
    scale = float(torch.tensor(scale, dtype=torch.float32))
    t = x / scale + zp
    # away from ties (x / scale exactly halfway) where x / s and PyTorch's x * (1 / s) may round differently
    assume(bool(((t - t.floor() - 0.5).abs() > 1e-3).all()))
    a = x.clone().requires_grad_()
    out = Q.fake_quantize(a, b, symmetric, scale=scale, zero_point=zp)
    out.sum().backward()
    r = x.clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(r, scale, zp, qmin, qmax)
    ref.sum().backward()
    assert torch.equal(a.grad, r.grad)
    assert torch.allclose(out.detach(), ref.detach(), atol=scale * 1e-4)


@SETTINGS
@given(x=tensors(min_dims=2), b=st.integers(2, 8), symmetric=st.booleans())
def test_ste_gradient_equals_torch_fake_quantize_per_channel(x, b, symmetric):
    scale, zp = Q.qparams(x, b, symmetric, axis=0)
    t = x / Q._per_channel_view(scale, x, 0) + Q._per_channel_view(zp, x, 0)
    assume(bool(((t - t.floor() - 0.5).abs() > 1e-3).all()))
    a = x.clone().requires_grad_()
    Q.fake_quantize(a, b, symmetric, axis=0).sum().backward()
    r = x.clone().requires_grad_()
    qmin, qmax = Q.qrange(b, symmetric)
    torch.fake_quantize_per_channel_affine(r, scale, zp.to(torch.int32), 0, qmin, qmax).sum().backward()
    assert torch.equal(a.grad, r.grad)
    assert bool((a.grad == 1).all())           # a min-max range covers every value: nothing saturates


@SETTINGS
@given(x=tensors(), b=st.integers(2, 10))
def test_pow2_levels(x, b):
    out = Q.quantize_pow2(x, b)
    nz = out[out != 0].abs()
    if nz.numel():
        e = torch.log2(nz)
        assert torch.equal(e, e.round())                                   # every level is a power of two
        assert int(e.max() - e.min()) <= 2 ** (b - 1) - 2                  # at most 2^(b-1) - 1 exponents
    assert bool((torch.sign(out) * torch.sign(x) >= 0).all())              # the sign is kept
    peak = float(x.abs().max())
    assert float(out.abs().max()) <= max(4 * peak / 3, 0.0) + 1e-12        # never far above the largest weight


@st.composite
def nets(draw):
    torch.manual_seed(draw(st.integers(0, 2 ** 16)))
    sizes = draw(st.lists(st.integers(1, 12), min_size=2, max_size=4))
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


@SETTINGS
@given(net=nets(), s1=st.floats(0.0, 0.95), s2=st.floats(0.0, 0.95), scope=st.sampled_from(["global", "layer"]))
def test_mask_properties(net, s1, s2, scope):
    lo, hi = sorted((s1, s2))
    m_lo, m_hi = P.magnitude_masks(net, lo, scope), P.magnitude_masks(net, hi, scope)
    n = {k: v.numel() for k, v in m_lo.items()}
    total = sum(n.values())
    if scope == "global":
        assert sum(int((~v).sum()) for v in m_hi.values()) == round(hi * total)     # exactly the requested count
    else:
        assert all(int((~m_hi[k]).sum()) == round(hi * n[k]) for k in n)
    assert all(m.dtype == torch.bool and m.shape == net.get_submodule(k).weight.shape for k, m in m_hi.items())
    pruned = P.apply_masks(net, m_hi)
    for k, m in m_hi.items():
        w, w0 = pruned.get_submodule(k).weight, net.get_submodule(k).weight
        assert bool((w[~m] == 0).all()) and torch.equal(w[m], w0[m])              # masks zero, never scale
    if scope == "global":
        kept = torch.cat([net.get_submodule(k).weight.detach().abs()[m] for k, m in m_hi.items()])
        gone = torch.cat([net.get_submodule(k).weight.detach().abs()[~m] for k, m in m_hi.items()])
        if kept.numel() and gone.numel():
            assert float(kept.min()) >= float(gone.max())                           # magnitude order
    # pruning the pruned model further only adds zeros (masks are nested)
    again = P.magnitude_masks(pruned, hi, scope)
    assert all(torch.equal(again[k], m_hi[k]) or bool((again[k] <= m_lo[k]).all()) for k in again)


@SETTINGS
@given(rows=st.integers(1, 40), cols=st.integers(1, 300), density=st.floats(0.0, 1.0), seed=st.integers(0, 1000),
       value_bits=st.sampled_from([4, 8, 16, 32]))
def test_csr_bytes_match_scipy(rows, cols, density, seed, value_bits):
    import scipy.sparse

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    ref = scipy.sparse.csr_matrix(w.numpy())
    size = P.csr_bytes(w, value_bits=value_bits, index_bytes=8)
    assert size.values == math.ceil(ref.nnz * value_bits / 8)
    assert size.col_indices == ref.indices.size * 8 and size.row_pointers == ref.indptr.size * 8
    small = P.csr_bytes(w, value_bits=value_bits)
    assert small.index_bytes == (1 if cols <= 256 else 2) and small.col_indices == ref.nnz * small.index_bytes
    assert small.row_pointers == ref.indptr.size * small.pointer_bytes
    assert int(ref.indptr.max()) < 2 ** (8 * small.pointer_bytes)


@SETTINGS
@given(b=st.integers(1, 16), data=st.data())
def test_pack_unpack_round_trip(b, data):
    labels = torch.tensor(data.draw(st.lists(st.integers(0, 2 ** b - 1), max_size=200)), dtype=torch.int64)
    packed = P.pack_indices(labels, b)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(labels.numel() * b / 8)
    assert torch.equal(P.unpack_indices(packed, b, labels.numel()), labels)


@SETTINGS
@given(x=tensors(), b=st.integers(2, 8), symmetric=st.booleans(),
       bad_scale=st.sampled_from([0.0, -1.0, float("nan"), float("inf")]))
def test_bad_scale_is_always_refused(x, b, symmetric, bad_scale):
    with pytest.raises(ValueError, match=r"^quantize: scale must be"):
        Q.quantize(x, bad_scale, 0, b, symmetric)
    with pytest.raises(ValueError, match=r"^fake_quantize: scale must be"):
        Q.fake_quantize(x, b, symmetric, scale=bad_scale, zero_point=0)


def test_subnormal_range_gets_a_normal_scale():
    """Found by Hypothesis: one subnormal value gave a subnormal scale, and x / scale saturated."""
    x = torch.tensor([[4.1619e-43]])
    for b in (2, 8):
        scale, zp = Q.qparams(x, b, symmetric=False, axis=0)
        assert float(scale) >= torch.finfo(torch.float32).eps
        a = x.clone().requires_grad_()
        Q.fake_quantize(a, b, False, axis=0).sum().backward()
        assert float(a.grad) == 1.0
