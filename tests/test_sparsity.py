"""Tests of nnbook.sparsity (chapter 4b): N:M masks and bytes, allocation, BatchNorm recalibration,
the CSR crossover helpers and structured pruning of residual networks."""
import pytest
import torch
from torch import nn

from nnbook import prune as P
from nnbook import sparsity as S
from nnbook.measure import flops
from nnbook.models import residual_mlp

torch.set_num_threads(1)


# --- N:M masks ---------------------------------------------------------------------------------
def test_nm_mask_keeps_the_n_largest_of_each_group():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, generator=g)
    mask = S.nm_mask(w, 2, 4)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    groups, kept = w.abs().reshape(-1, 4), mask.reshape(-1, 4)
    assert (kept.sum(1) == 2).all()
    # every kept magnitude is at least every dropped one in its group
    low_kept = torch.where(kept, groups, torch.full_like(groups, float("inf"))).min(1).values
    high_dropped = torch.where(~kept, groups, torch.full_like(groups, -1.0)).max(1).values
    assert (low_kept >= high_dropped).all()


def test_nm_mask_other_patterns_and_conv_layout():
    w = torch.randn(6, 4, 3, 3)  # input width 36 = 4 * 3 * 3
    mask = S.nm_mask(w, 1, 4)
    assert mask.shape == w.shape and int(mask.sum()) == 6 * 36 // 4
    assert (mask.reshape(6, -1).reshape(-1, 4).sum(1) == 1).all()
    assert S.nm_mask(torch.randn(2, 8), 4, 8).sum() == 8


def test_nm_mask_ties_go_to_the_first_position():
    assert S.nm_mask(torch.ones(1, 4)).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("n, m", [(4, 4), (5, 4), (2, 2)])
def test_nm_n_not_below_m_raises(n, m):
    with pytest.raises(ValueError, match=r"nm_mask: .*n must be smaller than m; got n=\d, m=\d"):
        S.nm_mask(torch.randn(4, 8), n, m)
    with pytest.raises(ValueError, match="nm_bytes"):
        S.nm_bytes((4, 8), n, m)


def test_nm_width_not_multiple_of_m_raises():
    with pytest.raises(ValueError, match="nm_mask: the input width must be a multiple of m=4.*got width 10"):
        S.nm_mask(torch.randn(4, 10))
    with pytest.raises(ValueError, match="nm_masks: layer '0'"):
        S.nm_masks(nn.Sequential(nn.Linear(6, 4)))
    with pytest.raises(ValueError, match="nm_bytes: the input width"):
        S.nm_bytes((4, 6))


def test_nm_bad_types():
    with pytest.raises(TypeError, match="nm_mask: weight must be a torch.Tensor"):
        S.nm_mask([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match="nm_mask: n must be an int"):
        S.nm_mask(torch.randn(2, 4), 2.0, 4)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        S.nm_mask(torch.randn(8))
    with pytest.raises(ValueError, match="nm_bytes: shape"):
        S.nm_bytes((8,))


def test_nm_masks_make_every_layer_two_four_and_fine_tune_keeps_it():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    masks = S.nm_masks(model)
    pruned = P.apply_masks(model, masks)
    assert all(S.is_nm_sparse(l.weight) for l in P.prunable_layers(pruned).values())
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    tuned, _ = P.fine_tune(model, masks, [(x, y)], epochs=2, device="cpu")
    assert all(S.is_nm_sparse(l.weight) for l in P.prunable_layers(tuned).values())
    assert not S.is_nm_sparse(model[0].weight)  # the original is untouched


@pytest.mark.parametrize("dtype, bits", [(torch.float16, 16), (torch.bfloat16, 16)])
def test_nm_bytes_match_pytorch_cutlass_layout(dtype, bits):
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass

    w = torch.randn(64, 128)
    w = (w * S.nm_mask(w)).to(dtype)
    packed, meta = sparse_semi_structured_from_dense_cutlass(w)
    size = S.nm_bytes((64, 128), value_bits=bits)
    assert packed.numel() * packed.element_size() == size.values
    assert meta.numel() * meta.element_size() == size.metadata
    assert size.total * 32 == size.dense * 18


def test_nm_bytes_formula():
    s = S.nm_bytes((100, 300), 2, 4, value_bits=32)
    assert (s.values, s.metadata, s.dense) == (60_000, 3_750, 120_000)
    s48 = S.nm_bytes((10, 16), 4, 8, value_bits=16)  # 80 kept values, 3-bit indices
    assert (s48.values, s48.metadata) == (160, 30)
    assert S.nm_bytes(torch.Size([8, 2, 2, 2]), 1, 4, value_bits=8).values == 16


# --- sensitivity-driven allocation ---------------------------------------------------------------
def test_allocate_sparsity_meets_the_target_and_protects_the_sensitive_layer():
    levels = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
    scan = {"small": [1.0, 0.9, 0.5, 0.3, 0.2, 0.1], "big": [1.0, 1.0, 1.0, 0.99, 0.97, 0.8]}
    sizes = {"small": 100, "big": 10_000}
    alloc = S.allocate_sparsity(scan, levels, sizes, target=0.9, reference=1.0)
    removed = sum(alloc[n] * sizes[n] for n in sizes)
    assert abs(removed - 0.9 * 10_100) <= 1
    assert alloc["small"] < 0.9 < alloc["big"]


def test_allocate_sparsity_ignores_a_noisy_recovery_after_the_first_drop():
    levels = [0.0, 0.5, 0.9]
    scan = {"noisy": [1.0, 0.2, 0.95], "big": [1.0, 0.97, 0.9]}  # "noisy" scores well again at 0.9 by chance
    alloc = S.allocate_sparsity(scan, levels, {"noisy": 100, "big": 1000}, target=0.4, reference=1.0)
    assert alloc["noisy"] == 0.0 and abs(alloc["big"] - 0.44) < 1e-9


def test_allocate_sparsity_errors():
    scan, sizes = {"a": [1.0, 0.5]}, {"a": 10}
    with pytest.raises(ValueError, match="same layers"):
        S.allocate_sparsity(scan, [0.0, 0.5], {"b": 10}, 0.3, 1.0)
    with pytest.raises(ValueError, match="increasing"):
        S.allocate_sparsity(scan, [0.5, 0.0], sizes, 0.3, 1.0)
    with pytest.raises(ValueError, match="above the largest scanned level"):
        S.allocate_sparsity(scan, [0.0, 0.5], sizes, 0.8, 1.0)
    with pytest.raises(ValueError, match="2 levels"):
        S.allocate_sparsity({"a": [1.0]}, [0.0, 0.5], sizes, 0.3, 1.0)
    with pytest.raises(TypeError, match="dicts"):
        S.allocate_sparsity([1.0], [0.0], sizes, 0.0, 1.0)


def test_layer_masks_give_each_layer_its_sparsity():
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    masks = S.layer_masks(model, {"0": 0.9, "2": 0.2})
    assert int((~masks["0"]).sum()) == 180 and int((~masks["2"]).sum()) == 10
    with pytest.raises(TypeError, match="layer_masks"):
        S.layer_masks(model, 0.5)


# --- BatchNorm recalibration ---------------------------------------------------------------------
def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(4 * 16, 3)).eval()


def test_recalibrate_batchnorm_exact_statistics_and_nothing_else_changes():
    model = _bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xs = [torch.randn(8, 1, 4, 4) * 3 + 2 for _ in range(3)]
    r = S.recalibrate_batchnorm(model, [(x, torch.zeros(8)) for x in xs])
    feats = torch.cat([model[0](x) for x in xs]).detach()
    assert torch.allclose(r[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert not r.training and r[1].momentum == model[1].momentum
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), r.parameters()))
    only_first = S.recalibrate_batchnorm(model, [xs[0], xs[1]], max_batches=1)  # bare tensors work too
    assert torch.allclose(only_first[1].running_mean, model[0](xs[0]).detach().mean((0, 2, 3)), atol=1e-5)


def test_recalibrate_batchnorm_recovers_after_channel_pruning():
    from nnbook.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN((8, 16, 16)).eval()
    x = torch.randn(64, 1, 8, 8)
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(x)
    model.eval()
    pruned = P.prune_channels(model, 0.5)
    r = S.recalibrate_batchnorm(pruned, [(x, None)])
    bn = r.features[4]
    h = r.features[:4](x)
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-4)


def test_recalibrate_batchnorm_errors():
    with pytest.raises(ValueError, match="recalibrate_batchnorm: the calibration loader yielded no batch"):
        S.recalibrate_batchnorm(_bn_model(), [])
    with pytest.raises(ValueError, match="no BatchNorm"):
        S.recalibrate_batchnorm(nn.Linear(2, 2), [torch.zeros(1, 2)])
    with pytest.raises(TypeError, match="recalibrate_batchnorm: model"):
        S.recalibrate_batchnorm("model", [])
    with pytest.raises(ValueError, match="max_batches"):
        S.recalibrate_batchnorm(_bn_model(), [torch.zeros(1, 1, 4, 4)], max_batches=0)


# --- CSR versus dense --------------------------------------------------------------------------
def test_crossover_sparsity():
    assert S.crossover_sparsity([0.5, 0.9, 0.95, 0.99], [3.0, 0.9, 1.1, 0.2]) == 0.99
    assert S.crossover_sparsity([0.5, 0.9], [0.5, 0.4]) == 0.5
    assert S.crossover_sparsity([0.5, 0.9], [2.0, 1.0]) is None
    with pytest.raises(ValueError, match="as many ratios"):
        S.crossover_sparsity([0.5, 0.9], [1.0])
    with pytest.raises(ValueError, match="increasing"):
        S.crossover_sparsity([0.9, 0.5], [1.0, 1.0])


def test_csr_dense_timings_rows_and_errors():
    rows = S.csr_dense_timings([16, 32], [0.5, 0.99], batch=2, repeats=3)
    assert [(r["size"], r["sparsity"]) for r in rows] == [(16, 0.5), (16, 0.99), (32, 0.5), (32, 0.99)]
    assert all(r["dense_ms"] > 0 and r["csr_ms"] > 0 and r["ratio"] == r["csr_ms"] / r["dense_ms"] for r in rows)
    with pytest.raises(ValueError, match="csr_dense_timings"):
        S.csr_dense_timings([16], [1.0])
    with pytest.raises(ValueError, match="batch"):
        S.csr_dense_timings([16], [0.5], batch=0)


# --- residual networks ---------------------------------------------------------------------------
def test_prune_residual_hidden_keeps_the_stream_and_the_function_at_zero():
    torch.manual_seed(0)
    model = residual_mlp(64, 16, blocks=2).eval()
    x = torch.randn(5, 64)
    same = S.prune_residual_hidden(model, 0.0)
    assert torch.allclose(same(x), model(x))
    small = S.prune_residual_hidden(model, 0.75)
    assert small[1].out_features == 16 and small[3].body[0].out_features == 4 and small[4].body[2].in_features == 4
    assert small(x).shape == (5, 10) and flops(small, x[:1]) < flops(model, x[:1])
    with pytest.raises(ValueError, match="no Residual block"):
        S.prune_residual_hidden(nn.Sequential(nn.Linear(4, 4)), 0.5)
    with pytest.raises(ValueError, match="amount"):
        S.prune_residual_hidden(model, 1.0)


def test_depgraph_prune_narrows_the_stream_consistently():
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = residual_mlp(64, 16, blocks=2).eval()
    x = torch.randn(5, 64)
    small = S.depgraph_prune(model, x[:1], 0.5)
    assert small[1].out_features == 8  # the residual stream lost half of its width
    assert all(b.body[2].out_features == 8 and b.body[0].in_features == 8 for b in (small[3], small[4]))
    assert small[-1].out_features == 10 and small(x).shape == (5, 10)
    assert model[1].out_features == 16  # the original is untouched
    with pytest.raises(ValueError, match="no layer 'nope'"):
        S.depgraph_prune(model, x[:1], 0.5, ignored_layers=["nope"])


def test_match_flops_meets_the_target():
    torch.manual_seed(0)
    model = residual_mlp(64, 32, blocks=2).eval()
    x = torch.randn(1, 64)
    f0 = flops(model, x)
    amount, small = S.match_flops(lambda a: S.prune_residual_hidden(model, a), lambda m: flops(m, x), 0.6 * f0)
    assert 0 < amount < 1 and 0.5 * f0 <= flops(small, x) <= 0.6 * f0
    with pytest.raises(ValueError, match="match_flops: even amount"):
        S.match_flops(lambda a: S.prune_residual_hidden(model, a), lambda m: flops(m, x), 0.05 * f0)
