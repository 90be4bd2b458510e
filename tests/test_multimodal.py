"""Unit tests of nnbook.multimodal: data set, encoders, fusion modules, alignment, invariance."""
import copy
import os

import numpy as np
import pytest
import torch

from nnbook import multimodal as mm


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """A small multimodal digits set, built once for the module in a private cache folder."""
    old = os.environ.get("NNBOOK_CACHE")
    os.environ["NNBOOK_CACHE"] = str(tmp_path_factory.mktemp("mm-cache"))
    try:
        yield mm.load_multimodal_digits(n_train=200, n_val=50, n_test=100, seed=0)
    finally:
        if old is None:
            os.environ.pop("NNBOOK_CACHE", None)
        else:
            os.environ["NNBOOK_CACHE"] = old


def batch(part, n=6):
    return {k: v[:n] for k, v in part.inputs().items()}


# --- data ------------------------------------------------------------------
def test_shapes_dtypes_and_balance(ds):
    for part, n in ((ds.train, 200), (ds.val, 50), (ds.test, 100)):
        assert part.image.shape == (n, 1, 8, 8) and part.image.dtype == torch.float32
        assert part.signal.shape == (n, 40) and part.signal.dtype == torch.float32
        assert part.tokens.shape == (n, mm.MAX_LEN) and part.tokens.dtype == torch.int64
        assert part.y.shape == (n,) and part.y.dtype == torch.int64
        assert 0.0 <= float(part.image.min()) and float(part.image.max()) <= 1.0
        assert torch.bincount(part.y, minlength=10).tolist() == [n // 10] * 10
        assert int(part.tokens.max()) < len(mm.VOCAB) and bool((part.tokens[:, 0] != mm.PAD).all())


def test_no_underlying_sample_shared_between_splits(ds):
    parts = (ds.train, ds.val, ds.test)
    for attr in ("image_source", "signal_source"):
        sets = [set(getattr(p, attr).tolist()) for p in parts]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), attr
    assert int(ds.test.image_source.min()) >= 1347 and int(ds.test.signal_source.min()) >= 4000
    assert int(ds.train.image_source.max()) < 1347 and int(ds.val.signal_source.max()) < 4000


def test_pairs_share_the_class_with_their_sources(ds):
    from nnbook.data import load_digits, load_mnist1d

    dig, sig = load_digits(), load_mnist1d()
    img_y = torch.cat([dig.y_train, dig.y_test])
    sig_y = torch.cat([sig.y_train, sig.y_test])
    for part in (ds.train, ds.test):
        assert torch.equal(img_y[part.image_source], part.y)
        assert torch.equal(sig_y[part.signal_source], part.y)


def test_build_is_deterministic_and_clean_spelling():
    clean = mm.Corruption(0, 0, 0, 0, 0, 0)
    a = mm.build_multimodal_digits(20, 10, 10, corruption=clean, seed=3)
    b = mm.build_multimodal_digits(20, 10, 10, corruption=clean, seed=3)
    assert torch.equal(a.train.signal, b.train.signal) and torch.equal(a.test.tokens, b.test.tokens)
    words = mm.decode_tokens(a.train.tokens)
    assert words == [mm.CLASS_WORDS[int(c)] for c in a.train.y]
    assert int(a.train.token_errors.sum()) == 0


def test_noisy_spelling_and_vocab():
    rng = np.random.default_rng(0)
    for label in range(10):
        ids, errors = mm.noisy_spelling(label, 0.5, 0.5, rng)
        assert 1 <= len(ids) <= len(mm.CLASS_WORDS[label]) and 0 <= errors <= len(mm.CLASS_WORDS[label])
    assert mm.decode_tokens(torch.tensor(mm.encode_word("seven") + [0]))[0] == "seven"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        mm.encode_word("ten!")
    with pytest.raises(TypeError):
        mm.encode_word(7)


def test_data_bad_arguments():
    with pytest.raises(ValueError, match="n_train"):
        mm.build_multimodal_digits(n_train=5)
    with pytest.raises(ValueError, match="val_fraction"):
        mm.build_multimodal_digits(val_fraction=1.5)
    with pytest.raises(TypeError, match="Corruption"):
        mm.build_multimodal_digits(corruption={"image_noise": 0.1})
    with pytest.raises(ValueError, match="image_noise"):
        mm.Corruption(image_noise=-1)
    with pytest.raises(ValueError, match="probabilities"):
        mm.Corruption(token_drop=1.5)


# --- encoders and fusion ------------------------------------------------------
def test_encoders_common_feature_size(ds):
    x = batch(ds.train, 5)
    for m in mm.MODALITIES:
        enc = mm.make_encoder(m, d=16)
        seq, valid = enc.sequence(x[m])
        assert seq.shape[0] == 5 and seq.shape[2] == 16 and valid.shape == seq.shape[:2]
        assert enc(x[m]).shape == (5, 16)
    with pytest.raises(ValueError, match="unknown modality"):
        mm.make_encoder("audio")


def test_token_encoder_ignores_padding_after_the_word():
    enc = mm.TokenEncoder(d=8).eval()
    t = torch.tensor([mm.encode_word("two") + [0, 0]])
    out_a = enc(t)
    t2 = t.clone()
    t2[0, 3:] = 0  # unchanged padding; now compare against a shorter max length
    out_b = enc(t2[:, :3])
    assert torch.allclose(out_a, out_b, atol=1e-6)


@pytest.mark.parametrize("fusion", mm.FUSIONS)
def test_every_fusion_gives_logits_and_handles_masks(ds, fusion):
    torch.manual_seed(0)
    model = mm.make_model(fusion).eval()
    x = batch(ds.train, 6)
    assert model(x).shape == (6, 10)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    out = model(x, mask=mask)
    assert out.shape == (6, 10) and torch.isfinite(out).all()
    # a masked-out modality must not influence the output: change its input, same logits
    x2 = dict(x, image=torch.rand_like(x["image"]))
    rows = ~mask[:, 0]
    assert torch.allclose(model(x2, mask=mask)[rows], out[rows], atol=1e-5)
    # leaving an absent modality out of the inputs is the same as masking it
    no_img = {k: v for k, v in x.items() if k != "image"}
    m0 = torch.tensor([False, True, True]).expand(6, -1)
    assert torch.allclose(model(no_img, mask=m0), model(x, mask=m0), atol=1e-5)


@pytest.mark.parametrize("fusion", [f for f in mm.FUSIONS if f != "early"])
def test_fusion_is_per_sample(ds, fusion):
    """A sample's output must not depend on the other samples in the batch (eval mode)."""
    torch.manual_seed(0)
    model = mm.make_model(fusion).eval()
    x = batch(ds.test, 8)
    y = {k: torch.cat([v[:1], ds.test.inputs()[k][50:57]]) for k, v in x.items()}
    assert torch.allclose(model(x)[0], model(y)[0], atol=1e-5)


def test_attention_and_weighted_fusion_weights(ds):
    torch.manual_seed(0)
    x = batch(ds.train, 5)
    for name in ("attention", "weighted"):
        model = mm.make_model(name).eval()
        w = model.fusion_weights(x)
        assert w.shape == (5, 3) and torch.allclose(w.sum(1), torch.ones(5), atol=1e-6)
        mask = torch.tensor([True, False, True]).expand(5, -1)
        w = model.fusion_weights(x, mask=mask)
        assert torch.all(w[:, 1] == 0) and torch.allclose(w.sum(1), torch.ones(5), atol=1e-6)
    with pytest.raises(TypeError, match="no modality weights"):
        mm.make_model("concat").fusion_weights(x)


def test_masked_softmax_and_mean():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    m = torch.tensor([[True, False, True], [False, False, False]])
    w = mm.masked_softmax(s, m, dim=1)
    two = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    assert torch.allclose(w[0], torch.tensor([two[0], 0.0, two[1]]), atol=1e-6)
    assert torch.all(w[1] == 0)  # nothing present: zeros, not NaN
    x = torch.arange(6.0).reshape(1, 3, 2)
    assert torch.allclose(mm.masked_mean(x, torch.tensor([[True, False, True]])), torch.tensor([[2.0, 3.0]]))


def test_tensor_fusion_outer_product_and_lowrank_equivalence():
    torch.manual_seed(0)
    tf = mm.TensorFusion(2, 4, p=3)
    f = torch.randn(2, 2, 4)
    mask = torch.ones(2, 2, dtype=torch.bool)
    z = [torch.cat([torch.ones(2, 1), tf.proj[m](f[:, m])], 1) for m in range(2)]
    expected = torch.einsum("bi,bj->bij", z[0], z[1]).flatten(1)
    assert tf.out_features == 16 and torch.allclose(tf(f, mask), expected, atol=1e-6)
    # LMF equals a linear layer on the (1-augmented) outer product whose weight has rank r
    lmf = mm.LowRankFusion(2, 4, rank=2, out=3)
    za = [torch.cat([torch.ones(2, 1), f[:, m]], 1) for m in range(2)]
    W = torch.einsum("rio,rjo->ijo", lmf.factors[0], lmf.factors[1])  # (5, 5, 3), rank 2 per output
    full = torch.einsum("bi,bj,ijo->bo", za[0], za[1], W) + lmf.bias
    assert torch.allclose(lmf(f, mask), full, atol=1e-5)


def test_make_model_errors_and_unimodal():
    with pytest.raises(ValueError, match="unknown fusion 'gated'"):
        mm.make_model("gated")
    with pytest.raises(TypeError, match="fusion must be a string"):
        mm.make_model(3)
    with pytest.raises(ValueError, match="modalities"):
        mm.make_model("concat", modalities=("image", "audio"))
    with pytest.raises(ValueError, match="modalities"):
        mm.make_model("concat", modalities=("image", "image"))
    uni = mm.make_model("concat", modalities=("signal",))
    assert uni.modalities == ("signal",) and uni({"signal": torch.randn(3, 40)}).shape == (3, 10)


def test_bad_inputs_raise_clear_errors(ds):
    model = mm.make_model("concat").eval()
    x = batch(ds.train, 4)
    with pytest.raises(ValueError, match="same batch size"):
        model(dict(x, signal=ds.train.signal[:5]))
    with pytest.raises(ValueError, match=r"missing from the inputs; pass mask"):
        model({k: v for k, v in x.items() if k != "tokens"})
    with pytest.raises(ValueError, match="mask must have shape"):
        model(x, mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="says modality 'tokens' is present"):
        model({k: v for k, v in x.items() if k != "tokens"}, mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one present modality"):
        model(x, mask=torch.zeros(4, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="dict"):
        model(ds.train.image[:4])
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(dict(x, image=x["image"].numpy()))


# --- training, late fusion, dropout ------------------------------------------------
def test_train_learns_and_predict_shapes(ds):
    torch.manual_seed(0)
    model = mm.make_model("concat")
    hist = mm.train(model, ds.train, epochs=3, lr=1e-2, batch_size=50, seed=0)
    assert len(hist.train_loss) == 3 and len(hist.epoch_time_s) == 3
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert mm.predict(model, ds.test).shape == (100, 10)
    assert 0.0 <= mm.accuracy(model, ds.test, drop=("image",)) <= 1.0
    with pytest.raises(TypeError, match="MultimodalPart"):
        mm.train(model, ds.train.inputs())
    with pytest.raises(ValueError, match="cannot drop"):
        mm.present(3, ("image",), drop=("tokens",))


def test_modality_dropout_mask_keeps_one_modality():
    g = torch.Generator().manual_seed(0)
    m = mm.modality_dropout_mask(1000, 3, 0.9, g)
    assert m.shape == (1000, 3) and bool(m.any(1).all())
    assert 0.05 < float(m.float().mean()) < 0.5
    assert bool(mm.modality_dropout_mask(10, 3, 0.0).all())
    with pytest.raises(ValueError):
        mm.modality_dropout_mask(4, 3, 1.5)


def test_late_fusion_rules_and_members_unchanged(ds):
    torch.manual_seed(0)
    members = [mm.make_model("concat", modalities=(m,)) for m in mm.MODALITIES]
    for m in members:
        mm.train(m, ds.train, epochs=1, batch_size=100)
    before = [copy.deepcopy(m.state_dict()) for m in members]
    x = batch(ds.test, 7)
    logits = torch.stack([m({k: x[k]}) for m, k in zip(members, mm.MODALITIES)], 1)
    mean = mm.LateFusion(members, "mean")
    assert torch.allclose(mean(x), logits.mean(1), atol=1e-5)
    vote = mm.LateFusion(members, "vote")(x)
    assert torch.equal(vote.floor().sum(1), torch.full((7,), 3.0))  # three votes per sample
    stack = mm.LateFusion(members, "stack")
    mm.fit_stacking(stack, ds.val, epochs=5)
    assert stack(x).shape == (7, 10)
    for m, sd in zip(members, before):
        assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())  # weights and BN stats
        assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError, match="LateFusion: rule must be one of"):
        mm.LateFusion(members, "max")
    with pytest.raises(ValueError, match="unimodal models with distinct"):
        mm.LateFusion([members[0], members[0]], "mean")
    with pytest.raises(ValueError, match="rule='stack'"):
        mm.fit_stacking(mean, ds.val)


# --- contrastive alignment ------------------------------------------------------
def test_info_nce_values():
    z = torch.eye(4)
    perfect = mm.info_nce(z, z, scale=50.0)
    assert float(perfect) < 1e-6
    # identical embeddings for everyone: every candidate is equally likely -> log(B)
    same = mm.info_nce(torch.ones(4, 3), torch.ones(4, 3), scale=10.0)
    assert abs(float(same) - np.log(4)) < 1e-5
    with pytest.raises(ValueError, match="same shape"):
        mm.info_nce(torch.ones(4, 3), torch.ones(5, 3))


def test_recall_at_k_instance_and_class():
    q = torch.eye(4)
    c = torch.eye(4)[[1, 0, 2, 3]]  # queries 0 and 1 swapped
    r = mm.recall_at_k(q, c, ks=(1, 4))
    assert r == {1: 0.5, 4: 1.0}
    labels = torch.tensor([0, 0, 1, 1])
    assert mm.recall_at_k(q, c, ks=(1,), query_labels=labels, candidate_labels=labels)[1] == 1.0
    with pytest.raises(ValueError, match="both"):
        mm.recall_at_k(q, c, query_labels=labels)
    with pytest.raises(ValueError, match="every k"):
        mm.recall_at_k(q, c, ks=(5,))


def test_contrastive_aligner_copies_encoders_and_trains(ds):
    torch.manual_seed(0)
    enc = {"image": mm.make_encoder("image"), "signal": mm.make_encoder("signal")}
    ref = copy.deepcopy(enc["image"].state_dict())
    al = mm.ContrastiveAligner("image", "signal", encoders=enc)
    hist = mm.train(al, ds.train, epochs=2, lr=3e-3, batch_size=50, loss_fn=mm.contrastive_loss)
    assert np.isnan(hist.train_acc[0]) and len(hist.train_loss) == 2
    assert all(torch.equal(ref[k], v) for k, v in enc["image"].state_dict().items())  # originals unchanged
    za, zb = al(batch(ds.test, 5))
    assert za.shape == (5, 32) and torch.allclose(za.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="distinct"):
        mm.ContrastiveAligner("image", "image")
    with pytest.raises(ValueError, match="encoders must be given"):
        mm.ContrastiveAligner("image", "signal", encoders={"image": enc["image"]})


# --- gradient reversal and invariance ------------------------------------------------
def test_grad_reverse():
    x = torch.ones(3, requires_grad=True)
    y = mm.grad_reverse(x, 2.0)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-2.0, -4.0, -6.0]))
    with pytest.raises(ValueError):
        mm.grad_reverse(x, -1.0)
    assert mm.dann_lambda(0.0) == 0.0 and 0.99 < mm.dann_lambda(1.0) < 1.0


def test_invariant_adapter_reduces_linear_separability():
    """Two Gaussian clouds: gradient reversal must make them much less linearly separable."""
    g = torch.Generator().manual_seed(0)
    n, d = 400, 8
    feats = torch.stack([torch.randn(n, d, generator=g) + 2.0, 2.0 * torch.randn(n, d, generator=g) - 2.0], 1)
    y = torch.randint(0, 3, (n,), generator=g)
    feats[:, :, 0] += y.unsqueeze(1).float() * 3  # a class signal in both modalities
    probes = {}
    for lambd in (0.0, 1.0):
        torch.manual_seed(0)
        ad = mm.InvariantAdapter(2, d=d, n_classes=3, lambd=lambd)
        log = mm.train_invariant(ad, feats[:300], y[:300], steps=400, batch_size=128)
        assert len(log["disc_acc"]) == 400
        with torch.no_grad():
            z_tr, z_te = ad.embed(feats[:300]), ad.embed(feats[300:])
        probes[lambd] = mm.modality_probe_accuracy(z_tr, z_te, hidden=0)
    assert probes[0.0] > 0.95 and probes[1.0] < probes[0.0] - 0.2, probes
    with pytest.raises(ValueError, match="feats must have shape"):
        mm.InvariantAdapter(2, d=8).embed(torch.zeros(3, 3, 8))


def test_encode_features_and_probe_shapes(ds):
    enc = {"image": mm.make_encoder("image"), "signal": mm.make_encoder("signal")}
    f = mm.encode_features(enc, ds.val)
    assert f.shape == (50, 2, 32)
    # identical feature distributions: the probe is at chance
    g = torch.Generator().manual_seed(1)
    same = torch.randn(400, 2, 4, generator=g)
    assert 0.35 < mm.modality_probe_accuracy(same[:200], same[200:]) < 0.65
    with pytest.raises(ValueError):
        mm.modality_probe_accuracy(torch.zeros(5, 2, 4), torch.zeros(5, 3, 4))


# --- parallel co-attention (Lu et al., 2016) ---------------------------------
def test_coattention_is_lu_parallel_coattention():
    torch.manual_seed(0)
    fuse = mm.CoAttentionFusion(2, d=4, k=3)
    sa, sb = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    va = torch.tensor([[True] * 5, [True, True, True, False, False]])
    vb = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        a_hat, b_hat, alpha_a, alpha_b, C = fuse.co_attend(0, 1, sa, va, sb, vb)
        # reference written from the paper's equations (row-vector form)
        W = fuse.affinity[0]
        C_ref = torch.tanh(sa @ W @ sb.transpose(1, 2)) * (va.unsqueeze(2) & vb.unsqueeze(1))
        pa, pb = sa @ fuse.U[0].weight.T, sb @ fuse.U[1].weight.T
        ha, hb = torch.tanh(pa + C_ref @ pb), torch.tanh(pb + C_ref.transpose(1, 2) @ pa)
        sa_scores = (ha @ fuse.w[0].weight.T).squeeze(-1).masked_fill(~va, float("-inf"))
        alpha_a_ref = sa_scores.softmax(1)
        alpha_b_ref = (hb @ fuse.w[1].weight.T).squeeze(-1).softmax(1)
    assert torch.allclose(C, C_ref) and torch.allclose(alpha_a, alpha_a_ref) and torch.allclose(alpha_b, alpha_b_ref)
    assert torch.allclose(a_hat, (alpha_a_ref.unsqueeze(1) @ sa).squeeze(1))
    assert float(alpha_a[1, 3:].abs().sum()) == 0.0  # padding gets no attention
    assert torch.allclose(alpha_a.sum(1), torch.ones(2)) and torch.allclose(alpha_b.sum(1), torch.ones(2))


def test_coattention_and_crossattention_models(ds):
    x = batch(ds.test, 4)
    for fusion in ("coattention", "crossattention"):
        model = mm.make_model(fusion).eval()
        with torch.no_grad():
            out = model(x)
            absent = model({k: v for k, v in x.items() if k != "signal"},
                           mask=torch.tensor([True, False, True]).expand(4, -1))
        assert out.shape == (4, 10) and bool(torch.isfinite(absent).all())


# --- the interaction task ------------------------------------------------------
def test_interaction_task_label_needs_both_modalities(ds):
    from nnbook.data import load_digits

    dig = load_digits()
    img_y = torch.cat([dig.y_train, dig.y_test])
    tokens_class = {w: c for c, w in enumerate(mm.CLASS_WORDS)}
    clean = mm.build_multimodal_digits(200, 50, 100, corruption=mm.Corruption(0.3, 3, 0.25, 6, 0, 0), seed=1)
    same = mm.interaction_task(clean, "same", seed=0)
    assert same.n_classes == 2
    for part, orig in ((same.train, clean.train), (same.test, clean.test)):
        assert torch.equal(part.image, orig.image) and torch.equal(part.signal, orig.signal)
        word_class = torch.tensor([tokens_class[w] for w in mm.decode_tokens(part.tokens)])
        assert torch.equal(part.y, (word_class == img_y[part.image_source]).long())
        assert abs(float(part.y.float().mean()) - 0.5) <= 0.01
        # the label is independent of the image's class: about half 'same' within every class
        for c in range(10):
            share = float(part.y[orig.y == c].float().mean())
            assert 0.1 <= share <= 0.9, (c, share)
    s = mm.interaction_task(clean, "sum", seed=0, partner="signal")
    assert s.n_classes == 10 and torch.equal(s.train.tokens, clean.train.tokens)
    with pytest.raises(ValueError, match="interaction_part: task"):
        mm.interaction_part(ds.train, "product")
    with pytest.raises(TypeError, match="interaction_part: part"):
        mm.interaction_part(None)


def test_make_model_with_frozen_encoders(ds):
    trained = mm.make_model("concat", modalities=("image",)).encoders["image"]
    before = copy.deepcopy(trained.state_dict())
    model = mm.make_model("tensor", modalities=("image",), n_classes=2, encoders={"image": trained},
                          freeze_encoders=True)
    enc_before = copy.deepcopy(model.encoders.state_dict())
    part = mm.interaction_part(ds.train, "same", seed=0)
    mm.train(model, part, epochs=1, progress=False)
    assert all(torch.equal(v, model.encoders.state_dict()[k]) for k, v in enc_before.items())  # BN stats too
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert not model.encoders.training
    with pytest.raises(ValueError, match="make_model: encoders must map"):
        mm.make_model("concat", modalities=("image", "signal"), encoders={"image": trained})
    with pytest.raises(ValueError, match="freeze_encoders=True needs"):
        mm.make_model("concat", freeze_encoders=True)


# --- issue 16: no silent nonsense, clear errors ----------------------------------
def test_no_silent_nonsense(ds):
    with pytest.raises(ValueError, match="masked_softmax: scores must be finite"):
        mm.masked_softmax(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[True, True]]))
    # a NaN where the mask is False is ignored (it is masked out), not an error
    w = mm.masked_softmax(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[False, True]]))
    assert torch.equal(w, torch.tensor([[0.0, 1.0]]))
    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match="recall_at_k: queries must hold only finite"):
        mm.recall_at_k(q.masked_fill(q > 0, float("nan")), torch.randn(4, 3))
    with pytest.raises(ValueError, match="info_nce: scale"):
        mm.info_nce(torch.randn(4, 3), torch.randn(4, 3), scale=-1.0)
    with pytest.raises(ValueError, match="info_nce: scale"):
        mm.info_nce(torch.randn(4, 3), torch.randn(4, 3), scale=torch.tensor(-2.0))
    with pytest.raises(ValueError, match="LateFusion: members must hold at least one"):
        mm.LateFusion([])
    with pytest.raises(ValueError, match="train: modality_dropout"):
        mm.train(mm.make_model("concat", modalities=("image",)), ds.train, modality_dropout=-0.5, progress=False)
    with pytest.raises(ValueError, match="Batches: modality_dropout"):
        mm.Batches(ds.train, 4, 3, modality_dropout=-0.5)
    with pytest.raises(ValueError, match="modality_dropout_mask: p"):
        mm.modality_dropout_mask(4, 3, float("nan"))
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="Corruption: image_noise"):
            mm.Corruption(image_noise=bad)
    with pytest.raises(ValueError, match="decode_tokens: indices"):
        mm.decode_tokens(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=r"inputs\['tokens'\] must hold indices"):
        mm.make_model("concat", modalities=("tokens",))({"tokens": torch.tensor([[-3, 1, 0, 0, 0]])})
    with pytest.raises(ValueError, match="ContrastiveAligner: temperature"):
        mm.ContrastiveAligner(temperature=0)
    with pytest.raises(ValueError, match=r"inputs\['image'\] must hold only finite"):
        mm.make_model("concat", modalities=("image",))({"image": torch.full((2, 1, 8, 8), float("nan"))})


@pytest.mark.parametrize("call, error, where", [
    (lambda: mm.info_nce(None, torch.randn(2, 3)), TypeError, "info_nce"),
    (lambda: mm.info_nce([[1.0]], [[1.0]]), TypeError, "info_nce"),
    (lambda: mm.info_nce(torch.randn(2, 3), torch.randn(3, 3)), ValueError, "info_nce"),
    (lambda: mm.recall_at_k(np.zeros((3, 2)), torch.randn(3, 2)), TypeError, "recall_at_k"),
    (lambda: mm.recall_at_k(torch.randn(3, 2), torch.randn(3, 4)), ValueError, "recall_at_k"),
    (lambda: mm.recall_at_k(torch.randn(3, 2), torch.randn(3, 2), ks=(0,)), ValueError, "recall_at_k"),
    (lambda: mm.recall_at_k(torch.randn(3, 2), torch.randn(3, 2), query_labels=torch.zeros(3, dtype=torch.long),
                            candidate_labels=torch.zeros(2, dtype=torch.long)), ValueError, "recall_at_k"),
    (lambda: mm.grad_reverse(None), TypeError, "grad_reverse"),
    (lambda: mm.grad_reverse(torch.ones(2), -1.0), ValueError, "grad_reverse"),
    (lambda: mm.masked_softmax([1.0, 2.0], torch.ones(2, dtype=torch.bool)), TypeError, "masked_softmax"),
    (lambda: mm.masked_softmax(torch.ones(2, 3), torch.ones(2, 3)), TypeError, "masked_softmax"),
    (lambda: mm.masked_softmax(torch.ones(2, 3), torch.ones(4, dtype=torch.bool)), ValueError, "masked_softmax"),
    (lambda: mm.masked_mean(np.ones((2, 3, 4)), torch.ones(2, 3, dtype=torch.bool)), TypeError, "masked_mean"),
    (lambda: mm.masked_mean(torch.ones(2, 3, 4), torch.ones(2, 4, dtype=torch.bool)), ValueError, "masked_mean"),
    (lambda: mm.LateFusion(None), TypeError, "LateFusion"),
    (lambda: mm.LateFusion(["image"]), TypeError, "LateFusion"),
    (lambda: mm.make_model("concat", d=0), ValueError, "make_model"),
    (lambda: mm.make_model("tensor", p=0), ValueError, "TensorFusion"),
    (lambda: mm.make_model("lowrank", rank=0), ValueError, "LowRankFusion"),
    (lambda: mm.make_model("concat", n_classes=1), ValueError, "make_model"),
    (lambda: mm.make_model("concat")(None), TypeError, "FusionClassifier"),
    (lambda: mm.make_model("concat")({"image": [[0.0]], "signal": None, "tokens": None}), TypeError, "FusionClassifier"),
    (lambda: mm.make_model("concat", modalities=("image",))({"image": torch.zeros(2, 64)}), ValueError, "FusionClassifier"),
    (lambda: mm.make_model("concat", modalities=("signal",))({"signal": torch.zeros(2, 41)}), ValueError, "FusionClassifier"),
    (lambda: mm.make_model("concat", modalities=("tokens",))({"tokens": torch.zeros(2, 5)}), TypeError, "FusionClassifier"),
    (lambda: mm.make_model("early", modalities=("tokens",))({"tokens": torch.zeros(2, 7, dtype=torch.long)}),
     ValueError, "EarlyFusionClassifier"),
    (lambda: mm.TensorFusion(3, 4)(torch.zeros(2, 2, 4), torch.ones(2, 2, dtype=torch.bool)), ValueError, "TensorFusion"),
    (lambda: mm.ConcatFusion(3, 4)(torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.bool)), ValueError, "ConcatFusion"),
    (lambda: mm.ImageEncoder()(np.zeros((2, 1, 8, 8), dtype=np.float32)), TypeError, "ImageEncoder"),
    (lambda: mm.make_encoder("image", d=2.5), TypeError, "make_encoder"),
    (lambda: mm.dann_lambda(float("nan")), ValueError, "dann_lambda"),
    (lambda: mm.InvariantAdapter(n_modalities=1), ValueError, "InvariantAdapter"),
    (lambda: mm.InvariantAdapter().embed(torch.zeros(2, 3, 32)), ValueError, "InvariantAdapter.embed"),
    (lambda: mm.train_invariant(mm.InvariantAdapter(), torch.zeros(4, 2, 32), torch.zeros(3, dtype=torch.long)),
     ValueError, "train_invariant"),
    (lambda: mm.train_invariant(mm.InvariantAdapter(), [[0.0]], torch.zeros(3, dtype=torch.long)), TypeError, "train_invariant"),
    (lambda: mm.modality_probe_accuracy(torch.zeros(4, 2, 3), torch.full((4, 2, 3), float("nan"))), ValueError,
     "modality_probe_accuracy"),
    (lambda: mm.encode_features(None, None), TypeError, "encode_features"),
    (lambda: mm.present(3, ("image", "signal"), drop="image"), TypeError, "present"),
    (lambda: mm.noisy_spelling(12, 0.1, 0.1, np.random.default_rng(0)), ValueError, "noisy_spelling"),
    (lambda: mm.fit_stacking(None, None), TypeError, "fit_stacking"),
    (lambda: mm.ContrastiveAligner(d=0), ValueError, "ContrastiveAligner"),
    (lambda: mm.ContrastiveAligner().embed("image", torch.zeros(2, 40)), ValueError, "ContrastiveAligner.embed"),
])
def test_bad_input_gives_a_clear_error(call, error, where):
    with pytest.raises(error) as info:
        call()
    assert str(info.value).startswith(where), str(info.value)
