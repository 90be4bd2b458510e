"""Tests of nnbook.charlm (chapter 9b's character-level language models)."""
import math
import os

import pytest
import torch
from torch import nn

from nnbook import charlm as C

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus():
    return C.build_corpus()


def test_corpus_is_deterministic_and_in_range(corpus):
    assert corpus == C.build_corpus()
    info = C.corpus_info(corpus)
    assert 150_000 <= info["chars"] <= 500_000, info["chars"]
    assert len(info["sha256"]) == 64 and info["modules"] == list(C.STDLIB_MODULES)
    assert set(corpus) <= set(C.ALPHABET)
    assert "\t" not in corpus


def test_alphabet_and_round_trip():
    assert C.VOCAB_SIZE == 96 and C.ALPHABET[0] == "\n"
    text = "def f(x):\n    return x ~ 1"
    assert C.decode(C.encode(text)) == text
    assert C.decode(C.encode("é")) == "?"


def test_split_is_contiguous():
    ids = torch.arange(1000)
    tr, va, te = C.split_corpus(ids, 0.1, 0.2)
    assert (len(tr), len(va), len(te)) == (700, 100, 200)
    assert torch.equal(torch.cat([tr, va, te]), ids)


@pytest.mark.parametrize("v, t", [(0.0, 0.1), (0.6, 0.5), (-0.1, 0.1)])
def test_split_rejects_bad_fractions(v, t):
    with pytest.raises(ValueError, match="^split_corpus"):
        C.split_corpus(torch.arange(100), v, t)


def test_bad_inputs():
    with pytest.raises(TypeError, match="^build_corpus"):
        C.build_corpus("json")
    with pytest.raises(ValueError, match="^build_corpus"):
        C.build_corpus([])
    with pytest.raises(TypeError, match="^encode"):
        C.encode(3)
    with pytest.raises(ValueError, match="^decode"):
        C.decode([200])
    with pytest.raises(ValueError, match="^CharLM"):
        C.CharLM(8, 4)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="^generate"):
        C.generate(C.CharLM(8, 4), "a", 3, temperature=0.0)
    with pytest.raises(ValueError, match="^generate"):
        C.generate(C.CharLM(8, 4), "", 3)
    with pytest.raises(ValueError, match="^bits_per_char"):
        C.bits_per_char(C.CharLM(8, 4), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="^RandomWindows"):
        C.RandomWindows(torch.arange(5), seq_len=8, batch_size=2, steps=1)
    with pytest.raises(TypeError, match="^export_charlm_onnx"):
        C.export_charlm_onnx(nn.Linear(2, 2), "x.onnx")


def test_random_windows_are_seeded_and_shifted():
    ids = torch.arange(500)
    a = [x for x, _ in C.RandomWindows(ids, 16, 4, 3, seed=5)]
    b = [x for x, _ in C.RandomWindows(ids, 16, 4, 3, seed=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x, y = next(iter(C.RandomWindows(ids, 16, 4, 1, seed=1)))
    assert torch.equal(y, x + 1)


def test_bits_per_char_matches_direct_cross_entropy():
    torch.manual_seed(0)
    m = C.CharLM(hidden=12, embed=6)
    ids = torch.randint(0, C.VOCAB_SIZE, (101,))
    # one row: the whole text from a zero state
    with torch.no_grad():
        logits, _ = m(ids[None, :-1])
    direct = nn.functional.cross_entropy(logits[0], ids[1:]).item() / math.log(2)
    assert abs(C.bits_per_char(m, ids, rows=1) - direct) < 1e-5
    assert m.training  # mode restored


def test_carried_state_equals_whole_sequence():
    torch.manual_seed(1)
    m = C.CharLM(hidden=10, embed=5).eval()
    x = torch.randint(0, C.VOCAB_SIZE, (2, 12))
    with torch.no_grad():
        whole, _ = m(x)
        a, s = m(x[:, :5])
        b, _ = m(x[:, 5:], s)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-6)


def test_lm_step_flattens_and_trains_through_fit():
    from nnbook.train import fit

    torch.manual_seed(0)
    ids = C.encode("abcabcabcabc" * 50)
    m = C.CharLM(hidden=16, embed=8)
    before = C.bits_per_char(m, ids, rows=2)
    loss, logits, y = C.lm_step(m, next(iter(C.RandomWindows(ids, 8, 4, 1))))
    assert logits.shape == (32, C.VOCAB_SIZE) and y.shape == (32,)
    fit(m, C.RandomWindows(ids, 16, 8, 40, seed=0), epochs=2, lr=1e-2, step=C.lm_step, progress=False, device="cpu")
    assert C.bits_per_char(m, ids, rows=2) < before - 3


def test_logits_only_shares_parameters():
    m = C.CharLM(hidden=8, embed=4)
    v = C.LogitsOnly(m)
    assert all(p is q for p, q in zip(v.parameters(), m.parameters()))


def test_generate_is_seeded_and_in_alphabet():
    torch.manual_seed(0)
    m = C.CharLM(hidden=8, embed=4)
    a = C.generate(m, "The ", 30, temperature=1.0, seed=3)
    assert a == C.generate(m, "The ", 30, temperature=1.0, seed=3)
    assert len(a) == 30 and set(a) <= set(C.ALPHABET)


def test_onnx_float_matches_torch_and_int8_is_smaller(tmp_path):
    torch.manual_seed(0)
    m = C.CharLM(hidden=64, embed=16).eval()
    f32, i8 = tmp_path / "f.onnx", tmp_path / "q.onnx"
    n32 = C.export_charlm_onnx(m, f32)
    n8 = C.quantize_charlm_dynamic(f32, i8)
    assert n32 / n8 >= 3.0, (n32, n8)
    x = torch.randint(0, C.VOCAB_SIZE, (3, 9))
    with torch.no_grad():
        ref, (h, c) = m(x)
    got, (h2, c2) = C.OnnxCharLM(f32)(x)
    assert torch.allclose(got, ref, atol=1e-4) and torch.allclose(h2, h, atol=1e-5)
    q, _ = C.OnnxCharLM(i8)(x)
    assert q.shape == ref.shape and (q - ref).abs().max() < 0.5
    # the same sampled text from the float ONNX file and from PyTorch
    assert C.generate(C.OnnxCharLM(f32), "Re", 15, seed=2) == C.generate(m, "Re", 15, seed=2)
    with pytest.raises(FileNotFoundError, match="^quantize_charlm_dynamic"):
        C.quantize_charlm_dynamic(tmp_path / "none.onnx", tmp_path / "o.onnx")


def test_shipped_teacher_loads_and_matches_sidecar():
    import json
    from pathlib import Path

    path = Path(C.__file__).parent / "resources" / "ch9_charlm_teacher.pt"
    if not path.exists():
        pytest.skip("teacher weights not built yet")
    assert path.stat().st_size <= 2 * 2 ** 20
    meta = json.loads(path.with_suffix(".json").read_text())
    teacher = C.load_teacher()
    assert sum(p.numel() for p in teacher.parameters()) == meta["params"]
    assert {"command", "python", "torch", "corpus", "val_bpc"} <= set(meta)


def test_chunk_windows_teacher_logits_and_sampler():
    ids = torch.arange(50) % C.VOCAB_SIZE
    x, y = C.chunk_windows(ids, 8)
    assert x.shape == (6, 8) and torch.equal(y[:, :-1], x[:, 1:])
    torch.manual_seed(0)
    m = C.CharLM(hidden=8, embed=4)
    t = C.teacher_logits(m, x, batch_size=4)
    assert t.dtype == torch.float16 and t.shape == (6, 8, C.VOCAB_SIZE)
    with torch.no_grad():
        ref = m(x)[0]
    assert torch.allclose(t.float(), ref, atol=2e-2)
    a = [b for b in C.WindowSampler(x, y, t, batch_size=3, steps=2, seed=4)]
    b = [b for b in C.WindowSampler(x, y, t, batch_size=3, steps=2, seed=4)]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b)) and a[0][2].dtype == torch.float32
    with pytest.raises(ValueError, match="^WindowSampler"):
        C.WindowSampler(x, y[:3], batch_size=2, steps=1)
    with pytest.raises(ValueError, match="^chunk_windows"):
        C.chunk_windows(torch.arange(4), 8)


def test_distill_step_trains_a_charlm_student():
    from nnbook import distill
    from nnbook.train import fit

    torch.manual_seed(0)
    ids = C.encode("abcdabcdabcd" * 40)
    x, y = C.chunk_windows(ids, 16)
    teacher, student = C.CharLM(hidden=16, embed=8), C.CharLM(hidden=8, embed=4)
    t = C.teacher_logits(teacher, x)
    step = distill.distill_step(C.LogitsOnly(teacher), temperature=2.0, alpha=0.5)
    h = fit(C.LogitsOnly(student), C.WindowSampler(x, y, t, batch_size=4, steps=5), epochs=1, step=step,
            progress=False, device="cpu")
    assert h.epochs == 1 and math.isfinite(h.train_loss[0])
