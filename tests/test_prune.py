"""Unit tests of nnbook.prune: masks, fine-tuning, channel and layer removal, lottery tickets, storage."""
import copy
import math
import warnings

import pytest
import torch
from torch import nn

import nnbook
from nnbook import prune as P
from nnbook.models import DigitsCNN, mlp


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _snapshot(model):
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    model = DigitsCNN(channels=(8, 12, 16)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so slicing them is tested
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture
def net():
    torch.manual_seed(0)
    return mlp(64, (32, 16), 10)


@pytest.fixture
def tiny_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]


# --- magnitude masks ------------------------------------------------------------------------
def test_prunable_layers(cnn):
    assert list(P.prunable_layers(cnn)) == ["features.0", "features.3", "features.7", "classifier"]
    with pytest.raises(TypeError, match="BatchNorm2d"):
        P.prunable_layers(cnn, ["features.1"])
    with pytest.raises(ValueError, match="no layer 'nope'"):
        P.prunable_layers(cnn, ["nope"])
    with pytest.raises(ValueError, match="no Linear or Conv"):
        P.prunable_layers(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("s", [0.0, 0.3, 0.9])
def test_layer_masks_hit_sparsity_in_every_layer(net, s):
    masks = P.magnitude_masks(net, s, scope="layer")
    for name, mask in masks.items():
        w = net.get_submodule(name).weight
        assert mask.dtype == torch.bool and mask.shape == w.shape
        assert int((~mask).sum()) == round(s * w.numel())
        if 0 < s:  # every kept weight is at least as large as every pruned one
            assert w[mask].abs().min() >= w[~mask].abs().max()


def test_global_masks_equal_torch_global_unstructured(cnn):
    for s in (0.5, 0.9, 0.97):
        ours, theirs = P.magnitude_masks(cnn, s, "global"), P.torch_global_masks(cnn, s)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    total = sum(m.numel() for m in ours.values())
    assert sum(int((~m).sum()) for m in ours.values()) == round(0.97 * total)


def test_masks_are_nested_when_pruning_again(net):
    pruned, m1 = P.magnitude_prune(net, 0.5)
    m2 = P.magnitude_masks(pruned, 0.8)
    assert all(not (m2[k] & ~m1[k]).any() for k in m1)  # nothing pruned comes back


def test_apply_masks_copies_and_zeroes(net):
    before = _snapshot(net)
    pruned, masks = P.magnitude_prune(net, 0.75, "layer")
    assert _same_state(before, net.state_dict())
    assert nnbook.measure.sparsity(pruned) == pytest.approx(0.75, abs=1e-3)
    for name, mask in masks.items():
        assert torch.all(pruned.get_submodule(name).weight[~mask] == 0)


@pytest.mark.parametrize("bad, exc", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                      ("0.5", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_sparsity_raises_and_leaves_model(cnn, bad, exc):
    before = _snapshot(cnn)
    with pytest.raises(exc, match="sparsity"):
        P.magnitude_prune(cnn, bad)
    with pytest.raises(exc):
        P.magnitude_masks(cnn, bad, "layer")
    assert _same_state(before, cnn.state_dict())


def test_other_bad_inputs(cnn):
    before = _snapshot(cnn)
    with pytest.raises(ValueError, match="scope"):
        P.magnitude_masks(cnn, 0.5, scope="row")
    with pytest.raises(TypeError, match="BatchNorm2d"):
        P.magnitude_prune(cnn, 0.5, layers=["features.1"])
    with pytest.raises(TypeError, match="nn.Module"):
        P.magnitude_masks("model", 0.5)
    with pytest.raises(ValueError, match="shape"):
        P.apply_masks(cnn, {"classifier": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="masks must be a dict"):
        P.apply_masks(cnn, [1, 2])
    assert _same_state(before, cnn.state_dict())


# --- fine-tuning and iterative pruning ------------------------------------------------------
def test_fine_tune_keeps_pruned_weights_at_zero(tiny_loader):
    torch.manual_seed(0)
    model = mlp(64, (32,), 10)
    pruned, masks = P.magnitude_prune(model, 0.8)
    before = _snapshot(pruned)
    tuned, hist = P.fine_tune(pruned, masks, tiny_loader, epochs=2, lr=1e-2, device="cpu")
    assert _same_state(before, pruned.state_dict())
    assert hist.epochs == 2 and not tuned.training
    for name, mask in masks.items():
        w = tuned.get_submodule(name).weight
        assert torch.all(w[~mask] == 0) and not torch.equal(w, pruned.get_submodule(name).weight)


def test_geometric_schedule():
    assert P.geometric_schedule(0.9375, 4) == pytest.approx([0.5, 0.75, 0.875, 0.9375])
    with pytest.raises(ValueError):
        P.geometric_schedule(1.0, 3)
    with pytest.raises(ValueError, match="steps"):
        P.geometric_schedule(0.9, 0)


def test_iterative_prune(tiny_loader):
    torch.manual_seed(0)
    model = mlp(64, (32,), 10)
    calls = []
    steps = P.iterative_prune(model, tiny_loader, [0.5, 0.8], epochs_per_step=1, device="cpu",
                              evaluate=lambda m: calls.append(1) or 0.5)
    assert [round(s.sparsity, 3) for s in steps] == [0.5, 0.8] and len(calls) == 2
    assert all(not (steps[1].masks[k] & ~steps[0].masks[k]).any() for k in steps[0].masks)
    assert nnbook.measure.sparsity(model) == 0.0
    with pytest.raises(ValueError, match="increasing"):
        P.iterative_prune(model, tiny_loader, [0.8, 0.5], epochs_per_step=1)


def test_sensitivity_scan(cnn):
    x = torch.rand(4, 1, 8, 8)
    ref = cnn(x)
    score = lambda m: float((m(x) - ref).detach().abs().max())  # 0 for an unchanged model
    w = P.sensitivity_scan(cnn, score, [0.0, 0.5])
    assert list(w) == ["features.0", "features.3", "features.7", "classifier"]
    assert all(v[0] == 0.0 and v[1] > 0 for v in w.values())
    c = P.sensitivity_scan(cnn, score, [0.0, 0.5], kind="channels")
    assert list(c) == ["features.0", "features.3", "features.7"]  # the output layer is skipped
    with pytest.raises(ValueError, match="kind"):
        P.sensitivity_scan(cnn, score, [0.5], kind="rows")


# --- structured: channels -------------------------------------------------------------------
def test_channel_norms():
    conv = nn.Conv2d(2, 3, 3)
    w = conv.weight.detach()
    assert torch.allclose(P.channel_norms(conv, "l1"), w.abs().sum((1, 2, 3)))
    assert torch.allclose(P.channel_norms(conv, "l2"), w.pow(2).sum((1, 2, 3)).sqrt())
    with pytest.raises(ValueError, match="norm"):
        P.channel_norms(conv, "l3")
    with pytest.raises(TypeError, match="BatchNorm2d"):
        P.channel_norms(nn.BatchNorm2d(3))


def _zero_channels_after(model, module_name, keep):
    """Forward hook that zeroes every channel not in ``keep`` at a module's output."""
    def hook(_, __, out):
        mask = torch.zeros(out.shape[1], dtype=torch.bool)
        mask[keep] = True
        shape = [1, -1] + [1] * (out.dim() - 2)
        return out * mask.view(shape)
    return model.get_submodule(module_name).register_forward_hook(hook)


def _kept(original, pruned, name):
    """Indices of the output channels of ``name`` that survived (matched by their weights)."""
    w0, w1 = original.get_submodule(name).weight, pruned.get_submodule(name).weight
    in_match = w1.shape[1] == w0.shape[1]
    assert in_match  # only used on the first pruned layer of a chain
    return [int((w0 - row).flatten(1).abs().sum(1).argmin()) for row in w1]


@pytest.mark.parametrize("layer, after", [("features.0", "features.2"), ("features.3", "features.5"),
                                          ("features.7", "features.9")])
def test_prune_one_conv_equals_zeroing_its_channels(cnn, layer, after):
    x = torch.rand(5, 1, 8, 8)
    pruned = P.prune_channels(cnn, {layer: 0.5}, norm="l2")
    assert pruned.get_submodule(layer).out_channels == cnn.get_submodule(layer).out_channels // 2
    keep = _kept(cnn, pruned, layer)
    norms = P.channel_norms(cnn.get_submodule(layer), "l2")
    assert sorted(keep) == sorted(torch.topk(norms, len(keep)).indices.tolist())
    handle = _zero_channels_after(cnn, after, keep)
    try:
        expected = cnn(x)
    finally:
        handle.remove()
    assert not pruned.training and not pruned.get_submodule("features.1").training  # eval mode kept
    assert torch.allclose(pruned(x), expected, atol=1e-5)


def test_prune_channels_digits_cnn_everywhere(cnn):
    before = _snapshot(cnn)
    x = torch.rand(2, 1, 8, 8)
    pruned = P.prune_channels(cnn, 0.5)
    assert _same_state(before, cnn.state_dict()) and type(pruned) is DigitsCNN
    assert [pruned.get_submodule(n).weight.shape[0] for n in ("features.0", "features.3", "features.7")] == [4, 6, 8]
    assert pruned.get_submodule("features.4").running_mean.shape == (6,)
    assert pruned.classifier.in_features == 8 and pruned(x).shape == (2, 10)
    assert nnbook.measure.count_params(pruned) < nnbook.measure.count_params(cnn)
    assert nnbook.measure.flops(pruned, x[:1]) < nnbook.measure.flops(cnn, x[:1]) / 2
    assert nnbook.measure.model_size_bytes(pruned) < nnbook.measure.model_size_bytes(cnn)


def test_prune_channels_through_flatten_into_linear():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 64, 10)).eval()
    x = torch.rand(3, 1, 8, 8)
    pruned = P.prune_channels(seq, 0.25)
    assert pruned[4].in_features == 6 * 64
    handle = _zero_channels_after(seq, "2", _kept(seq, pruned, "0"))
    expected = seq(x)
    handle.remove()
    assert torch.allclose(pruned(x), expected, atol=1e-5)


def test_prune_neurons_of_nested_sequential_mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 20), nn.ReLU()), nn.Linear(20, 10))
    x = torch.rand(3, 64)
    pruned = P.prune_channels(net, 0.5)
    assert pruned[1][0].out_features == 10 and pruned[2].in_features == 10
    handle = _zero_channels_after(net, "1.1", _kept(net, pruned, "1.0"))
    expected = net(x)
    handle.remove()
    assert torch.allclose(pruned(x), expected, atol=1e-6)


def test_prune_channels_bad_inputs_leave_model_unchanged(cnn):
    before = _snapshot(cnn)
    cases = [
        (dict(amount=1.0), ValueError, r"\[0\.0, 1\.0\)"),
        (dict(amount=-0.2), ValueError, r"\[0\.0, 1\.0\)"),
        (dict(amount="half"), TypeError, "real number"),
        (dict(amount={"features.0": 0.99}), ValueError, "keep 0 channels"),
        (dict(amount={"classifier": 0.5}), ValueError, "output layer"),
        (dict(amount={"features.1": 0.5}), ValueError, "not a Linear/Conv"),
        (dict(amount=0.5, norm="max"), ValueError, "norm"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            P.prune_channels(cnn, **kwargs)
        assert _same_state(before, cnn.state_dict())


def test_prune_channels_unsupported_layers():
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1))
    with pytest.raises(TypeError, match="grouped"):
        P.prune_channels(grouped, 0.5)
    ln = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    before = _snapshot(ln)
    with pytest.raises(TypeError, match="LayerNorm"):
        P.prune_channels(ln, 0.5)
    assert _same_state(before, ln.state_dict())

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

    with pytest.raises(TypeError, match="forward order"):
        P.prune_channels(Custom(), 0.5)


# --- structured: layers ---------------------------------------------------------------------
def test_remove_residual_block():
    torch.manual_seed(0)
    model = P.residual_mlp(64, 16, blocks=3)
    before = _snapshot(model)
    x = torch.rand(4, 1, 8, 8)
    shallow = P.remove_layer(model, "4")
    assert _same_state(before, model.state_dict())
    assert isinstance(shallow[4], nn.Identity) and shallow(x).shape == (4, 10)
    assert nnbook.measure.count_params(shallow) == nnbook.measure.count_params(model) - 2 * (16 * 16 + 16)
    # removing the block is the same as zeroing its residual branch
    with torch.no_grad():
        model[4].body[2].weight.zero_()
        model[4].body[2].bias.zero_()
    assert torch.allclose(shallow(x), model(x), atol=1e-6)


def test_remove_layer_without_identity_path_raises():
    model = P.residual_mlp(64, 16, blocks=2)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="no identity path"):
        P.remove_layer(model, "1")
    with pytest.raises(ValueError, match="no identity path"):
        P.remove_layer(model, "3.body.0")
    with pytest.raises(ValueError, match="no sub-module"):
        P.remove_layer(model, "9")
    assert _same_state(before, model.state_dict())
    scores = P.layer_removal_scan(model, lambda m: float(nnbook.measure.count_params(m)))
    assert list(scores) == ["3", "4"]
    with pytest.raises(ValueError, match="no Residual"):
        P.layer_removal_scan(mlp(4, (4,), 2), lambda m: 0.0)


# --- lottery tickets ------------------------------------------------------------------------
def test_rewind_and_random_reinit(net):
    init = copy.deepcopy(net.state_dict())
    trained = copy.deepcopy(net)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    masks = P.magnitude_masks(trained, 0.8)
    ticket = P.rewind(trained, init, masks)
    for name, mask in masks.items():
        w0 = init[f"{name}.weight"]
        assert torch.equal(ticket.get_submodule(name).weight, w0 * mask)
    rng = torch.get_rng_state()
    r1, r2 = P.random_reinit(trained, masks, seed=3), P.random_reinit(trained, masks, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert _same_state(r1.state_dict(), r2.state_dict())
    w = r1.get_submodule("1").weight
    assert torch.all(w[~masks["1"]] == 0) and not torch.equal(w, ticket.get_submodule("1").weight)
    with pytest.raises(ValueError, match="does not fit"):
        P.rewind(trained, {"bad": torch.zeros(1)}, masks)
    with pytest.raises(ValueError, match="seed"):
        P.random_reinit(trained, masks, seed=-1)


# --- storage --------------------------------------------------------------------------------
def test_csr_bytes_matches_torch_sparse_csr():
    torch.manual_seed(0)
    w = torch.randn(30, 50)
    w[w.abs() < 1.2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        csr = w.to_sparse_csr()
    torch_bytes = sum(t.numel() * t.element_size() for t in (csr.values(), csr.col_indices(), csr.crow_indices()))
    assert P.csr_bytes(w, index_bytes=8).total == torch_bytes
    nnz = int((w != 0).sum())
    small = P.csr_bytes(w)  # 50 columns -> uint8 indices; nnz < 65536 -> uint16 pointers
    assert (small.values, small.col_indices, small.row_pointers) == (4 * nnz, nnz, 2 * 31)
    conv = torch.zeros(4, 3, 3, 3)
    conv[0, 0, 0, 0] = 1.0
    assert P.csr_bytes(conv).total == 4 + 1 + 5 * 1
    with pytest.raises(TypeError):
        P.csr_bytes([1, 2])
    with pytest.raises(ValueError):
        P.csr_bytes(torch.tensor(1.0))


def test_kmeans_1d_finds_separated_clusters_and_matches_sklearn():
    from sklearn.cluster import KMeans

    torch.manual_seed(0)
    x = torch.cat([torch.randn(200) * 0.05 + c for c in (-2.0, 0.0, 3.0)])
    centroids, labels = P.kmeans_1d(x, 3)
    assert torch.allclose(centroids.sort().values, torch.tensor([-2.0, 0.0, 3.0]), atol=0.05)
    assert labels.shape == (600,) and set(labels.tolist()) == {0, 1, 2}
    y = torch.randn(2000)
    c, lab = P.kmeans_1d(y, 8)
    ours = float(((y - c[lab]) ** 2).sum())
    sk = KMeans(8, n_init=4, random_state=0).fit(y.numpy()[:, None]).inertia_
    assert ours <= sk * 1.05  # linear initialization, one run: close to k-means++ with restarts
    with pytest.raises(ValueError, match="k must"):
        P.kmeans_1d(y, 0)
    with pytest.raises(ValueError, match="empty"):
        P.kmeans_1d(torch.tensor([]), 2)


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8, 12])
def test_pack_unpack_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    labels = torch.randint(0, 2 ** bits, (101,), generator=g)
    packed = P.pack_indices(labels, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(101 * bits / 8)
    assert torch.equal(P.unpack_indices(packed, bits, 101), labels)
    with pytest.raises(ValueError, match="labels must be in"):
        P.pack_indices(torch.tensor([2 ** bits]), bits)


def test_encode_shared_and_storage(net):
    w = net[1].weight
    code = P.encode_shared(w, 16)
    assert code.bits == 4 and code.nbytes == 16 * 4 + math.ceil(w.numel() * 4 / 8)
    dec = code.decode()
    assert dec.shape == w.shape and torch.unique(dec).numel() <= 16
    assert (dec - w).abs().max() < (w.max() - w.min()) / 16  # every weight is near its centroid
    pruned, _ = P.magnitude_prune(net, 0.9)
    sparse_code = P.encode_shared(pruned[1].weight, 4, skip_zeros=True)
    dec = sparse_code.decode()
    assert torch.equal(dec == 0, pruned[1].weight == 0)

    before = _snapshot(net)
    shared, codes = P.share_weights(net, 16, skip_zeros=False)
    assert _same_state(before, net.state_dict())
    assert all(torch.unique(shared.get_submodule(n).weight).numel() <= 16 for n in codes)
    dense = P.storage_bytes(net)
    assert dense == sum(t.numel() * t.element_size() for t in net.state_dict().values())
    others = sum(t.numel() * 4 for k, t in net.state_dict().items() if k.endswith("bias"))
    assert P.storage_bytes(shared, "shared") == others + sum(c.nbytes for c in codes.values())
    assert P.storage_bytes(net, "csr") > dense  # CSR of a dense matrix costs more than dense
    with pytest.raises(ValueError, match="distinct values"):
        P.storage_bytes(net, "shared")
    with pytest.raises(ValueError, match="fmt"):
        P.storage_bytes(net, "zip")


def test_latency_ratio_is_consistent_and_not_reexported(net):
    r = nnbook.measure.latency_ratio(net, net, torch.rand(2, 64), rounds=3, repeats=3, warmup=1)
    ratio, a, b = r
    assert ratio > 0 and a > 0 and b > 0
    assert ratio == a / b  # the ratio and the two times are computed the same way
    assert r.ratio_p10 <= r.ratio_p90 and r.a_p10_ms <= r.a_ms <= r.a_p90_ms and r.rounds == 3
    with pytest.raises(ValueError):
        nnbook.measure.latency_ratio(net, net, torch.rand(2, 64), rounds=0)
    assert not hasattr(P, "latency_ratio")
