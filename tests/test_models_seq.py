"""Tests of the MNIST-1D sequence models of chapter 2 (nnbook.models)."""
import copy

import pytest
import torch
from torch import nn

from nnbook import measure, models

SEQ_MODELS = {
    "softmax": lambda: models.softmax_regression(),
    "mlp": lambda: models.mlp(40, (100, 100), 10),
    "cnn": lambda: models.ConvNet1d(),
    "cnn_plain": lambda: models.ConvNet1d(batch_norm=False),
    "rnn": lambda: models.RecurrentClassifier("rnn"),
    "gru": lambda: models.RecurrentClassifier("gru"),
    "lstm": lambda: models.RecurrentClassifier("lstm"),
    "gnn": lambda: models.MessagePassingGNN(),
    "transformer": lambda: models.TransformerClassifier(),
}


@pytest.mark.parametrize("name", sorted(SEQ_MODELS))
def test_shapes_dtype_and_backward(name):
    torch.manual_seed(0)
    model = SEQ_MODELS[name]()
    x = torch.randn(5, 40)
    out = model(x)
    assert out.shape == (5, 10) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(SEQ_MODELS))
def test_batch_independence(name):
    """In eval mode a sample's logits do not depend on the other samples of the batch."""
    torch.manual_seed(0)
    model = SEQ_MODELS[name]().eval()
    x = torch.randn(6, 40)
    with torch.no_grad():
        full, single = model(x), model(x[2:3])
    torch.testing.assert_close(full[2:3], single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["cnn", "rnn", "gru", "gnn", "transformer"])
def test_rejects_wrong_input_length(name):
    model = SEQ_MODELS[name]()
    with pytest.raises(ValueError, match=r"\(N, 40\)"):
        model(torch.randn(2, 39))
    with pytest.raises(ValueError, match=r"\(N, 40\)"):
        model(torch.randn(2, 1, 40))


def test_parameter_counts_match_closed_forms():
    assert measure.count_params(models.softmax_regression()) == 41 * 10
    conv = (1 * 25 * 5 + 25) + 2 * (25 * 25 * 5 + 25)
    assert measure.count_params(models.ConvNet1d(batch_norm=False)) == conv + 25 * 5 * 10 + 10
    assert measure.count_params(models.ConvNet1d()) == conv + 3 * 2 * 25 + 25 * 5 * 10 + 10
    h = 32
    for gates, cell in [(1, "rnn"), (3, "gru"), (4, "lstm")]:
        n = measure.count_params(models.RecurrentClassifier(cell, hidden=h))
        assert n == gates * (h + h * h + 2 * h) + h * 10 + 10, cell


def test_convnet_lengths_halve():
    model = models.ConvNet1d(channels=8, n_layers=4, length=40)
    assert model.classifier.in_features == 8 * 3  # 40 -> 20 -> 10 -> 5 -> 3
    assert model(torch.randn(2, 40)).shape == (2, 10)
    short = models.ConvNet1d(n_layers=6, length=5)  # shrinks to length 1 and stays there
    assert short.classifier.in_features == 25
    assert short(torch.randn(3, 5)).shape == (3, 10)


def test_convnet_is_shift_equivariant_before_the_head():
    """Three stride-2 convolutions map a signal shifted by 8 = 2**3 samples to features shifted by 1.

    Checked on the outputs whose receptive field (29 samples) stays clear of the zero padding.
    """
    torch.manual_seed(0)
    model = models.ConvNet1d(batch_norm=False, length=80).eval()
    x = torch.randn(1, 1, 80)
    shifted = torch.roll(x, 8, dims=2)
    with torch.no_grad():
        a, b = model.features(x), model.features(shifted)
    assert a.shape == (1, 25, 10)
    torch.testing.assert_close(a[..., 2:8], b[..., 3:9])


def test_gnn_adjacency_is_a_row_normalized_band():
    gnn = models.MessagePassingGNN(k=2, length=40)
    a = gnn.adjacency
    assert a.shape == (40, 40)
    torch.testing.assert_close(a.sum(1), torch.ones(40))
    assert torch.all(a.diagonal() == 0)
    assert torch.equal(a > 0, (a > 0).T)  # an undirected graph: same neighbours both ways
    assert int((a[5] > 0).sum()) == 4 and int((a[0] > 0).sum()) == 2
    assert torch.all(a[5, 8:] == 0)  # no edge beyond k


def _node_states(gnn, x, hidden):
    """Node states after the last message-passing round, read with a forward hook: (N, 40, hidden)."""
    seen = {}

    def hook(module, inputs, output):  # the update's input is [h, m]; the new state is h + output
        seen["h"] = inputs[0][..., :hidden] + output

    handle = gnn.updates[-1].register_forward_hook(hook)
    with torch.no_grad():
        gnn(x)
    handle.remove()
    return seen["h"]


@pytest.mark.parametrize("rounds, k", [(1, 1), (2, 1), (1, 3)])
def test_gnn_message_passing_is_local(rounds, k):
    """After r rounds with k neighbours per side, a node sees only inputs within r*k steps."""
    torch.manual_seed(0)
    gnn = models.MessagePassingGNN(hidden=8, rounds=rounds, k=k).eval()
    x = torch.randn(1, 40)
    x2 = x.clone()
    x2[0, 20] += 5.0
    changed = (_node_states(gnn, x, 8) - _node_states(gnn, x2, 8)).abs().amax(-1)[0] > 1e-6
    reach = rounds * k
    assert changed.nonzero().flatten().tolist() == list(range(20 - reach, 20 + reach + 1))


def test_encoder_block_matches_pytorch():
    torch.manual_seed(0)
    ours = models.EncoderBlock(d_model=16, n_heads=4, ff=32).eval()
    ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(ours.out.state_dict())
        ref.linear1.load_state_dict(ours.ff[0].state_dict())
        ref.linear2.load_state_dict(ours.ff[2].state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
        x = torch.randn(3, 7, 16)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)


def test_transformer_flops_are_counted():
    """The written-out attention is visible to torch.utils.flop_counter (a fused kernel would not be)."""
    model = models.TransformerClassifier(d_model=32, n_heads=4, n_layers=1, patch=4, ff=64)
    t, d, ff = 10, 32, 64
    macs = (t * 4 * d                 # patch embedding
            + t * d * 3 * d           # Q, K, V
            + 2 * t * t * d           # Q K^T and weights @ V
            + t * d * d               # output projection
            + 2 * t * d * ff          # feed-forward
            + d * 10)                 # head
    assert measure.flops(model, torch.randn(1, 40)) == 2 * macs


def test_recurrent_flops_scale_with_length():
    model = models.RecurrentClassifier("gru", hidden=16)
    assert measure.flops(model, torch.randn(1, 40)) == 2 * (40 * 3 * (16 * 1 + 16 * 16) + 16 * 10)


def test_models_are_deterministic_given_the_seed():
    for make in SEQ_MODELS.values():
        torch.manual_seed(3)
        a = make()
        torch.manual_seed(3)
        b = make()
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb and torch.equal(pa, pb)


def test_deepcopy_round_trip_of_state():
    torch.manual_seed(0)
    model = models.MessagePassingGNN()
    clone = copy.deepcopy(model)
    x = torch.randn(4, 40)
    torch.testing.assert_close(model(x), clone(x))
    fresh = models.MessagePassingGNN()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), fresh(x))


@pytest.mark.parametrize("make, message", [
    (lambda: models.ConvNet1d(channels=0), "channels must be a positive int, got 0"),
    (lambda: models.ConvNet1d(kernel_size=4), "kernel_size must be odd, got 4"),
    (lambda: models.ConvNet1d(batch_norm=1), "batch_norm must be True or False, got 1"),
    (lambda: models.ConvNet1d(n_layers=2.0), "n_layers must be a positive int, got 2.0"),
    (lambda: models.RecurrentClassifier("tanh"), "cell must be one of"),
    (lambda: models.RecurrentClassifier("gru", hidden=-1), "hidden must be a positive int, got -1"),
    (lambda: models.RecurrentClassifier("gru", n_layers=True), "n_layers must be a positive int, got True"),
    (lambda: models.MessagePassingGNN(k=40), "need k < length, got k=40, length=40"),
    (lambda: models.MessagePassingGNN(rounds=0), "rounds must be a positive int, got 0"),
    (lambda: models.EncoderBlock(d_model=30, n_heads=4), "d_model must be divisible by n_heads, got d_model=30, n_heads=4"),
    (lambda: models.TransformerClassifier(d_model=30, n_heads=4), "got d_model=30, n_heads=4"),
    (lambda: models.TransformerClassifier(patch=3), "patch must divide length, got patch=3, length=40"),
    (lambda: models.softmax_regression(in_features=0), "sizes must be positive ints"),
])
def test_constructor_validation(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()
