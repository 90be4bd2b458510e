"""Unit tests of nnbook.streaming (chapter 9c): stream building, streaming == offline, metrics, bad input."""
import numpy as np
import pytest
import torch
from torch import nn

from nnbook import streaming as st

torch.set_num_threads(1)


@pytest.fixture()
def small_stream():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    y = torch.arange(30) % 3
    return st.make_stream(x, y, keywords=[1], frame=4, gap=(1, 3), seed=0)


def test_make_stream_layout(small_stream):
    s = small_stream
    assert s.frames.shape[1] == 4 and s.frames.dtype == torch.float32
    assert len(s.spans) == 10  # every class-1 pattern is a keyword
    assert bool(((s.spans[:, 1] - s.spans[:, 0]) == 2).all())
    assert s.target.shape == (s.n_frames,)
    # the patterns appear verbatim in the stream
    x = torch.randn(3, 8)
    s2 = st.make_stream(x, torch.tensor([1, 1, 1]), keywords=[1], gap=(0, 0), seed=1)
    found = [bool((s2.frames[a:b].reshape(-1)[None] == x).all(1).any()) for a, b in s2.spans.tolist()]
    assert all(found)


def test_make_stream_is_seeded(small_stream):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    again = st.make_stream(x, torch.arange(30) % 3, keywords=[1], frame=4, gap=(1, 3), seed=0)
    assert torch.equal(again.frames, small_stream.frames)


def test_gru_cell_is_torch_gru():
    torch.manual_seed(0)
    m = st.KwsGRU(frame=4, hidden=8)
    ref = nn.GRU(4, 8, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(m.ih.weight)
        ref.bias_ih_l0.copy_(m.ih.bias)
        ref.weight_hh_l0.copy_(m.hh.weight)
        ref.bias_hh_l0.copy_(m.hh.bias)
        x = torch.randn(2, 12, 4)
        out, _ = ref(x)
        assert torch.allclose(m.head(out).squeeze(-1), m(x), atol=1e-5)


@pytest.mark.parametrize("make", [lambda: st.KwsGRU(4, 16), lambda: st.KwsCNN(4, 8, 3, (1, 2, 4))])
def test_streaming_equals_offline(make):
    torch.manual_seed(1)
    m = make().eval()
    x = torch.randn(1, 200, 4)
    with torch.no_grad():
        offline = m(x)[0]
    s = st.streamer(m)
    online = s.run(x[0])
    assert float((online - offline).abs().max()) < 1e-5
    s.reset()  # after a reset the stream starts again from zero state
    assert torch.allclose(s.run(x[0, :50]), offline[:50], atol=1e-5)


def test_cnn_is_causal():
    torch.manual_seed(2)
    m = st.KwsCNN(4, 8, 3, (1, 2)).eval()
    x = torch.randn(1, 30, 4)
    y = x.clone()
    y[0, 20:] += 5.0  # change the future
    with torch.no_grad():
        assert torch.equal(m(x)[0, :20], m(y)[0, :20])


def test_int8_model_streams_and_is_small():
    torch.manual_seed(3)
    for m in (st.KwsGRU(4, 16), st.KwsCNN(4, 16, 3, (1, 2))):
        q, nbytes = st.int8_model(m.eval(), torch.randn(8, 32, 4))
        x = torch.randn(1, 60, 4)
        with torch.no_grad():
            assert torch.allclose(st.streamer(q).run(x[0]), q(x)[0], atol=1e-5)
            assert float((q(x) - m(x)).abs().max()) < 0.1  # close to the float model
        assert nbytes * 2 < 4 * sum(p.numel() for p in m.parameters())  # biases and scales stay float32
        assert isinstance(q.head, st.Int8Layer) and q.head.codes.dtype == torch.int8


def test_detect_and_score():
    s = st.Stream(torch.zeros(10, 4), torch.zeros(10), torch.tensor([[0, 2], [2, 4], [6, 8]]), 10.0)
    r = st.score_detections(torch.tensor([1, 3, 4, 5, 7]), s)
    # 1 hits kw0; 3 hits kw1; 4, 5 fall after kw1 (already hit) -> false alarms; 7 hits kw2
    assert (r["hits"], r["false_alarms"]) == (3, 2)
    assert r["delays_ms"].tolist() == [0.0, 0.0, 0.0]
    assert r["hits"] + r["false_alarms"] <= 5
    assert r["fa_per_hour"] == pytest.approx(2 / s.hours)
    scores = torch.tensor([0.0, 0.9, 0.95, 0.1, 0.9, 0.0, 0.0, 0.8])
    assert st.detect(scores, 0.5, refractory=1).tolist() == [1, 4, 7]
    assert st.detect(scores, 0.5, refractory=4).tolist() == [1, 7]


def test_choose_threshold_reaches_the_hit_rate():
    s = st.Stream(torch.zeros(40, 4), torch.zeros(40), torch.tensor([[2, 4], [12, 14], [25, 27]]), 10.0)
    scores = torch.zeros(40)
    scores[[3, 13, 26]] = torch.tensor([0.7, 0.9, 0.7])
    scores[20] = 0.5  # a distractor below the keywords' scores
    th = st.choose_threshold(scores, s, min_hit_rate=1.0)
    assert th == pytest.approx(0.7)
    r = st.score_detections(st.detect(scores, th), s)
    assert r["hit_rate"] == 1.0 and r["false_alarms"] == 0
    assert st.choose_threshold(scores, s, min_hit_rate=0.3) == pytest.approx(0.9)


def test_macs_per_frame():
    assert st.macs_per_frame(st.KwsGRU(4, 8)) == 3 * 8 * 12 + 8
    assert st.macs_per_frame(st.KwsCNN(4, 8, 3, (1, 2))) == 4 * 8 * 3 + 8 * 8 * 3 + 8


def test_frame_latency_shape():
    ms = st.frame_latency(st.streamer(st.KwsGRU(4, 8)), torch.randn(30, 4), warmup=10)
    assert ms.shape == (20,) and bool((ms > 0).all())


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("make", [lambda: st.KwsGRU(4, 8), lambda: st.KwsCNN(4, 8, 3, (1, 2))])
def test_wrong_frame_width_raises(make):
    s = st.streamer(make())
    with pytest.raises(ValueError, match=r"expected a frame of shape \(4,\).*got shape \(5,\)"):
        s.step(torch.zeros(5))
    with pytest.raises(ValueError, match=r"got shape \(1, 4\)"):
        s.step(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        s.step([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="floating point"):
        s.step(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(batch, time, 4\)"):
        make()(torch.zeros(1, 10, 3))


def test_bad_arguments_raise():
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="multiple of frame"):
        st.make_stream(x, y, keywords=[1], frame=3)
    with pytest.raises(TypeError, match="keywords"):
        st.make_stream(x, y, keywords=1)
    with pytest.raises(ValueError, match="min <= max"):
        st.make_stream(x, y, keywords=[1], gap=(3, 1))
    with pytest.raises(TypeError, match="StreamingGRU: model must be a KwsGRU"):
        st.StreamingGRU(st.KwsCNN(4, 8))
    with pytest.raises(TypeError, match="streamer"):
        st.streamer(nn.Linear(4, 1))
    with pytest.raises(ValueError, match="min_hit_rate"):
        s = st.make_stream(x, y, keywords=[1])
        st.choose_threshold(s.target, s, min_hit_rate=0.0)
    with pytest.raises(TypeError, match="integer frame indices"):
        st.score_detections(torch.tensor([1.0]), st.make_stream(x, y, keywords=[1]))
    with pytest.raises(ValueError, match="dilation"):
        st.KwsCNN(4, 8, 3, (1, 0))
    with pytest.raises(TypeError, match="int8_model"):
        st.int8_model(nn.Linear(4, 1), torch.randn(2, 5, 4))
