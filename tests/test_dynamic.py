"""Unit tests of nnbook.dynamic: early exit, mixture of experts, stochastic depth, plasticity, VAE."""
import math

import pytest
import torch
from torch import nn

from nnbook import dynamic as dyn
from nnbook.measure import flops
from nnbook.train import fit

torch.set_num_threads(1)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return dyn.multi_exit_mlp(64, ((8,), (16, 16), (16,)), 10).eval()


# --- early exit -----------------------------------------------------------------------------
def test_multi_exit_forward_and_final(net):
    x = torch.rand(5, 1, 8, 8)
    outs = net(x)
    assert len(outs) == net.n_exits == 3 and all(o.shape == (5, 10) for o in outs)
    with torch.no_grad():
        assert torch.allclose(net.final(x), outs[-1].detach())


def test_multi_exit_checks():
    with pytest.raises(ValueError, match="^MultiExitNet:"):
        dyn.MultiExitNet([nn.Linear(2, 2)], [])
    with pytest.raises(TypeError, match="^MultiExitNet:"):
        dyn.MultiExitNet([nn.Linear(2, 2)], ["head"])
    with pytest.raises(ValueError, match="^multi_exit_mlp:"):
        dyn.multi_exit_mlp(64, ((8,), ()), 10)


def test_exit_flops_counts_blocks_and_passed_heads(net):
    costs = dyn.exit_flops(net, torch.zeros(1, 1, 8, 8))
    e0 = 2 * (64 * 8 + 8 * 10)
    e1 = e0 + 2 * (8 * 16 + 16 * 16 + 16 * 10)
    e2 = e1 + 2 * (16 * 16 + 16 * 10)
    assert costs == [e0, e1, e2]
    with pytest.raises(ValueError, match="batch size 1"):
        dyn.exit_flops(net, torch.zeros(2, 1, 8, 8))
    with pytest.raises(TypeError, match="^exit_flops:"):
        dyn.exit_flops(nn.Linear(2, 2), torch.zeros(1, 2))


def test_confidence_range_and_values():
    z = torch.randn(20, 10) * 3
    for crit in ("maxprob", "entropy"):
        c = dyn.confidence(z, crit)
        assert c.shape == (20,) and bool(((c >= -1e-6) & (c <= 1 + 1e-6)).all())
    assert float(dyn.confidence(torch.zeros(1, 10), "entropy")) == pytest.approx(0.0, abs=1e-6)
    assert float(dyn.confidence(torch.zeros(1, 4), "maxprob")) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="^confidence:"):
        dyn.confidence(z, "margin")


@pytest.mark.parametrize("criterion", ["maxprob", "entropy"])
def test_per_sample_and_batched_agree(net, criterion):
    torch.manual_seed(1)
    x = torch.rand(40, 1, 8, 8)
    for t in (0.0, 0.15, 0.3, 0.6, 1.0):
        a = dyn.early_exit_predict(net, x, t, criterion)
        b = dyn.route_batch(net, x, t, criterion)
        assert torch.equal(a.exit, b.exit) and torch.equal(a.pred, b.pred) and torch.equal(a.flops, b.flops)


def test_threshold_extremes(net):
    x = torch.rand(6, 1, 8, 8)
    costs = dyn.exit_flops(net, x[:1])
    early = dyn.route_batch(net, x, 0.0, "maxprob", costs)  # every sample is "confident enough"
    assert early.exit.tolist() == [0] * 6 and early.flops.tolist() == [costs[0]] * 6
    late = dyn.route_batch(net, x, 0.0, "entropy", costs)  # normalized entropy <= 0: nobody
    assert late.exit.tolist() == [2] * 6
    with torch.no_grad():
        assert torch.equal(late.pred, net.final(x).argmax(1))
    assert late.exit_fractions(3) == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_threshold_out_of_range_raises(net, bad):
    x = torch.rand(2, 1, 8, 8)
    for fn in (dyn.early_exit_predict, dyn.route_batch):
        with pytest.raises(ValueError, match=f"^{fn.__name__}: threshold"):
            fn(net, x, bad)
    with pytest.raises(TypeError, match="^route_batch: threshold"):
        dyn.route_batch(net, x, "0.5")
    with pytest.raises(TypeError, match="^route_batch: model"):
        dyn.route_batch(nn.Linear(64, 10), x, 0.5)


def test_choose_threshold_picks_cheapest_within_tolerance(net):
    torch.manual_seed(2)
    x, y = torch.rand(30, 1, 8, 8), torch.randint(0, 10, (30,))
    # any accuracy is acceptable: the cheapest candidate (the lowest max-probability) wins
    assert dyn.choose_threshold(net, x, y, [0.9, 0.0, 0.5], max_drop=0.99) == 0.0
    with pytest.raises(ValueError, match="^choose_threshold:"):
        dyn.choose_threshold(net, x, y, [])
    with pytest.raises(ValueError, match="^choose_threshold: each threshold"):
        dyn.choose_threshold(net, x, y, [1.2])


def test_joint_loss_and_step(net):
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    outs = net(x)
    loss = dyn.joint_exit_loss(outs, y, [1.0, 0.0, 0.0])
    assert torch.isclose(loss, nn.functional.cross_entropy(outs[0], y))
    with pytest.raises(ValueError, match="^joint_exit_loss:"):
        dyn.joint_exit_loss(outs, y, [1.0])
    with torch.no_grad():
        step_loss, logits, targets = dyn.multi_exit_step()(net, (x, y))
        assert torch.allclose(logits, outs[-1]) and targets is y
        assert float(step_loss) == pytest.approx(float(dyn.joint_exit_loss(outs, y)), rel=1e-5)


# --- mixture of experts ---------------------------------------------------------------------
def test_moe_matches_manual_mixture():
    torch.manual_seed(0)
    layer = dyn.MoE(6, 3, n_experts=4, k=2, hidden=5)
    x = torch.randn(9, 6)
    out = layer(x)
    probs = layer.gate(x).softmax(1)
    for i in range(9):
        top = probs[i].topk(2)
        w = top.values / top.values.sum()
        expect = sum(w[j] * layer.experts[int(top.indices[j])](x[i:i + 1])[0] for j in range(2))
        assert torch.allclose(out[i], expect, atol=1e-6)


def test_moe_runs_only_k_experts_and_counts_active():
    torch.manual_seed(0)
    layer = dyn.MoE(6, 3, n_experts=4, k=1, hidden=5)
    ran = []
    for e, ex in enumerate(layer.experts):
        ex.register_forward_hook(lambda m, i, o, e=e: ran.append(e))
    layer(torch.randn(1, 6))
    assert len(ran) == 1
    per_expert = 6 * 5 + 5 + 5 * 3 + 3
    assert layer.active_params() == 6 * 4 + 4 + per_expert
    assert flops(layer, torch.randn(1, 6)) == 2 * (6 * 4 + 6 * 5 + 5 * 3)


@pytest.mark.parametrize("kwargs, kind", [({"k": 5}, ValueError), ({"k": 0}, ValueError), ({"n_experts": 2.0}, TypeError)])
def test_moe_bad_sizes(kwargs, kind):
    with pytest.raises(kind, match="^MoE:"):
        dyn.MoE(6, 3, **{"n_experts": 4, "k": 2, **kwargs})


def test_moe_wrong_input_width():
    with pytest.raises(ValueError, match=r"^MoE: expected input of shape \(batch, 6\)"):
        dyn.MoE(6, 3, 4, 2)(torch.randn(2, 5))


def test_balance_loss_uniform_and_collapsed():
    e = 4
    uniform = dyn.balance_loss(torch.full((8, e), 1 / e), torch.arange(8).remainder(e).unsqueeze(1))
    assert float(uniform) == pytest.approx(1.0)
    collapsed = torch.zeros(8, e)
    collapsed[:, 0] = 1.0
    assert float(dyn.balance_loss(collapsed, torch.zeros(8, 1, dtype=torch.long))) == pytest.approx(e)


def test_moe_step_and_expert_load():
    torch.manual_seed(0)
    model = dyn.MoEClassifier(64, width=8, n_classes=10, n_experts=4, k=2, hidden=4)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    plain, _, _ = dyn.moe_step(0.0)(model, (x, y))
    balanced, logits, _ = dyn.moe_step(1.0)(model, (x, y))
    extra = dyn.balance_loss(model.moe.last_probs, model.moe.last_topk)
    assert float(balanced.detach()) == pytest.approx(float((plain + extra).detach()), rel=1e-5)
    assert logits.shape == (16, 10)
    balanced.backward()
    assert model.moe.gate.weight.grad is not None
    load = dyn.expert_load(model, x)
    assert load.shape == (4,) and float(load.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="^expert_load:"):
        dyn.expert_load(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="^moe_step:"):
        dyn.moe_step(-1.0)


# --- stochastic depth -----------------------------------------------------------------------
def test_stochastic_depth_schedule_and_modes():
    torch.manual_seed(0)
    m = dyn.StochasticDepthMLP(64, 8, n_blocks=5, p_last=0.2)
    assert [round(p, 6) for p in m.survival] == [1.0, 0.8, 0.6, 0.4, 0.2]
    x = torch.rand(32, 1, 8, 8)
    m.eval()
    assert torch.equal(m(x), m(x))  # inference is deterministic: every block runs
    m.train()
    assert not torch.equal(m(x), m(x))  # training skips blocks at random
    plain = dyn.StochasticDepthMLP(64, 8, n_blocks=5, p_last=1.0).train()
    assert torch.equal(plain(x), plain(x))


def test_dropping_blocks_changes_flops_and_validates():
    m = dyn.StochasticDepthMLP(64, 8, n_blocks=4, p_last=0.5).eval()
    x = torch.rand(1, 1, 8, 8)
    full = flops(m, x)
    m.drop([2, 3])
    assert full - flops(m, x) == 2 * 2 * (2 * 8 * 8)
    with pytest.raises(ValueError, match="^StochasticDepthMLP.drop:"):
        m.drop([4])
    with pytest.raises(ValueError, match="^StochasticDepthMLP: p_last"):
        dyn.StochasticDepthMLP(p_last=0.0)


# --- differentiable plasticity --------------------------------------------------------------
def test_pattern_episodes_layout():
    g = torch.Generator().manual_seed(0)
    x, target, erased = dyn.pattern_episodes(5, n_bits=12, n_patterns=2, present=2, gap=1, cycles=2,
                                             test_steps=3, generator=g)
    assert x.shape == (5, 2 * 2 * 3 + 3, 12) and target.shape == (5, 12)
    assert bool((target.abs() == 1).all()) and erased.sum(1).tolist() == [6] * 5
    assert torch.equal(x[:, -1], target.masked_fill(erased, 0.0))
    assert torch.equal(x[:, 2], torch.zeros(5, 12))  # the gap after the first pattern
    again = dyn.pattern_episodes(5, n_bits=12, n_patterns=2, present=2, gap=1, cycles=2, test_steps=3,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x)


def test_plastic_rnn_params_width_check_and_episode_independence():
    torch.manual_seed(0)
    net = dyn.PlasticRNN(10)
    assert sum(p.numel() for p in net.parameters()) == 2 * 10 ** 2 + 1
    with pytest.raises(ValueError, match=r"^PlasticRNN: inputs must have shape \(batch, time, 10\)"):
        net(torch.zeros(2, 4, 9))
    with pytest.raises(ValueError, match="^PlasticRNN:"):
        net(torch.zeros(4, 10))
    x = torch.randn(3, 6, 10)
    with torch.no_grad():
        together = net(x)
        alone = net(x[1:2])
    assert torch.allclose(together[1:2], alone, atol=1e-6)  # each episode has its own Hebbian trace


def test_plastic_rnn_without_plasticity_is_a_plain_rnn():
    torch.manual_seed(0)
    net = dyn.PlasticRNN(6)
    with torch.no_grad():
        net.alpha.zero_()
    x = torch.randn(2, 4, 6)
    h = torch.zeros(2, 6)
    for t in range(4):
        h = torch.tanh(x[:, t] + h @ net.w)
    assert torch.allclose(net(x)[:, -1], h, atol=1e-6)


def test_gru_twin_budget_and_width_check():
    twin = dyn.GRUTwin(32)
    n = sum(p.numel() for p in twin.parameters())
    assert n <= 2 * 32 ** 2 + 1 and twin.hidden == 11
    with pytest.raises(ValueError, match="^GRUTwin:"):
        twin(torch.zeros(1, 3, 31))


def test_recall_error_and_episode_training():
    class Oracle(nn.Module):  # answers the true pattern: error 0
        def __init__(self, target):
            super().__init__()
            self.target = target

        def forward(self, x):
            return self.target.unsqueeze(1).expand(-1, x.shape[1], -1)

    batch = dyn.pattern_episodes(8, n_bits=10, generator=torch.Generator().manual_seed(0))
    assert dyn.recall_error(Oracle(batch[1]), batch) == 0.0
    assert dyn.recall_error(Oracle(-batch[1]), batch) == 1.0
    stream = dyn.EpisodeStream(3, 4, seed=0, n_bits=10)
    assert len(list(stream)) == 3 == len(stream)
    torch.manual_seed(0)
    h = fit(dyn.PlasticRNN(10), stream, epochs=2, lr=1e-2, step=dyn.episode_step, device="cpu", progress=False)
    assert h.epochs == 2 and math.isnan(h.train_acc[0])


# --- VAE ------------------------------------------------------------------------------------
def test_vae_shapes_elbo_and_training():
    torch.manual_seed(0)
    vae = dyn.VAE(64, 16, 2)
    x = (torch.rand(12, 1, 8, 8) > 0.5).float()
    logits, mu, logvar = vae(x)
    assert logits.shape == (12, 64) and mu.shape == logvar.shape == (12, 2)
    recon, kl = dyn.elbo_terms(vae, x)
    assert recon.shape == kl.shape == (12,) and bool((recon <= 0).all()) and bool((kl >= 0).all())
    with torch.no_grad():  # KL is exactly 0 when the encoder outputs the prior
        for lin in (vae.to_mu, vae.to_logvar):
            lin.weight.zero_()
            lin.bias.zero_()
    with torch.no_grad():
        assert float(dyn.elbo_terms(vae, x)[1].abs().max()) == 0.0
    loss, logits, targets = dyn.vae_step(vae, (x, torch.zeros(12, dtype=torch.long)))
    assert logits is None and targets is None and loss.dim() == 0
    assert vae.decode(torch.zeros(3, 2)).shape == (3, 64)
    h = fit(vae, [(x, torch.zeros(12, dtype=torch.long))], epochs=3, lr=1e-2, step=dyn.vae_step,
            device="cpu", progress=False)
    assert h.train_loss[-1] < h.train_loss[0]
    with pytest.raises(ValueError, match="^VAE:"):
        dyn.VAE(latent=0)
