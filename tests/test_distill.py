"""Tests of nnbook.distill: the loss against a direct computation, its gradient, the fit step, errors."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nnbook.distill import distill_step, distillation_loss, gap_closed, hint_loss, soft_targets
from nnbook.train import evaluate, fit

torch.set_num_threads(1)  # the machine is shared; these tests are tiny


def _direct(s, t, y, T, alpha):
    """The loss written out by hand with sums over classes and a mean over samples."""
    p_t = torch.exp(t / T) / torch.exp(t / T).sum(1, keepdim=True)
    log_p_s = s / T - torch.logsumexp(s / T, 1, keepdim=True)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    log_p1 = s - torch.logsumexp(s, 1, keepdim=True)
    ce = -log_p1[torch.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (0.5, 0.0), (2.5, 0.3)])
def test_matches_direct_computation(T, alpha):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(16, 7, generator=g, dtype=torch.float64), 3 * torch.randn(16, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (16,), generator=g)
    ours = distillation_loss(s, t, y, temperature=T, alpha=alpha)
    assert torch.allclose(ours, _direct(s, t, y, T, alpha), atol=1e-10), (ours, _direct(s, t, y, T, alpha))


@pytest.mark.parametrize("T", [1.0, 3.0, 10.0, 50.0])
def test_gradient_is_the_analytic_one(T):
    g = torch.Generator().manual_seed(2)
    n, c, alpha = 8, 5, 0.7
    s = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    distillation_loss(s, t, y, temperature=T, alpha=alpha).backward()
    p_s, p_t = F.softmax(s.detach() / T, 1), F.softmax(t / T, 1)
    onehot = F.one_hot(y, c).double()
    analytic = alpha * T * T * (p_s - p_t) / T / n + (1 - alpha) * (F.softmax(s.detach(), 1) - onehot) / n
    assert torch.allclose(s.grad, analytic, atol=1e-12), (s.grad - analytic).abs().max()


def test_t_squared_keeps_the_soft_gradient_size_for_large_t():
    """Without T^2 the soft gradient shrinks like 1/T^2; with it, it tends to (s - t)/(C N) (centred logits)."""
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(32, 10, generator=g, dtype=torch.float64)
    t = torch.randn(32, 10, generator=g, dtype=torch.float64)
    sizes = {}
    for T in (10.0, 100.0, 1000.0):
        s = s0.clone().requires_grad_(True)
        distillation_loss(s, t, None, temperature=T, alpha=1.0).backward()
        sizes[T] = s.grad.norm().item()
    # the gradient size changes by less than 2 % between T = 10 and T = 1000 (it would change 10,000-fold without T^2)
    assert abs(sizes[1000.0] / sizes[10.0] - 1) < 0.02, sizes
    sc, tc = s0 - s0.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = ((sc - tc) / 10 / 32).norm().item()
    assert abs(sizes[1000.0] / limit - 1) < 1e-3, (sizes, limit)


def test_special_cases():
    s = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    assert distillation_loss(s, s.clone(), y, alpha=1.0).abs().item() < 1e-6
    assert torch.isclose(distillation_loss(s, torch.randn(4, 3), y, alpha=0.0), F.cross_entropy(s, y))
    assert distillation_loss(s, torch.randn(4, 3), None, alpha=1.0).item() >= 0
    p = soft_targets(torch.tensor([[0.0, math.log(3.0)]]), 1.0)
    assert torch.allclose(p, torch.tensor([[0.25, 0.75]]))


def test_no_gradient_reaches_the_teacher():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    distillation_loss(s, t, torch.tensor([0, 1, 2, 0])).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature="4"), TypeError, "temperature"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=None), TypeError, "alpha"),
])
def test_bad_hyper_parameters(kwargs, exc, match):
    s = torch.randn(2, 3)
    with pytest.raises(exc, match=f"^distillation_loss: .*{match}"):
        distillation_loss(s, s, torch.tensor([0, 1]), **kwargs)


def test_bad_tensors():
    s, y = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="student outputs 3 classes but the teacher 4"):
        distillation_loss(s, torch.randn(2, 4), y)
    with pytest.raises(ValueError, match="rows"):
        distillation_loss(s, torch.randn(3, 3), y)
    with pytest.raises(TypeError, match="student_logits must be a torch.Tensor"):
        distillation_loss([[1.0, 2.0]], s, y)
    with pytest.raises(TypeError, match="floating-point"):
        distillation_loss(torch.ones(2, 3, dtype=torch.long), s, y)
    with pytest.raises(ValueError, match="2-D"):
        distillation_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), y)
    with pytest.raises(TypeError, match="integer tensor"):
        distillation_loss(s, s, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        distillation_loss(s, s, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="alpha=1.0"):
        distillation_loss(s, s, None, alpha=0.5)


def test_distill_step_trains_with_fit_and_leaves_the_teacher_alone():
    torch.manual_seed(0)
    x, y = torch.randn(128, 6), torch.randint(0, 4, (128,))
    teacher = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 4)).train()
    before = [p.detach().clone() for p in teacher.parameters()]
    student = nn.Linear(6, 4)
    step = distill_step(teacher, temperature=3.0, alpha=1.0)
    with torch.no_grad():
        start = step(student, (x, y))[0].item()
    h = fit(student, [(x, y)], epochs=60, lr=0.05, step=step, progress=False, device="cpu")
    assert h.train_loss[-1] < 0.5 * start, (start, h.train_loss)
    assert teacher.training, "the teacher's mode must be restored"
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    loss, acc = evaluate(student, [(x, y)], step=step)
    assert 0.0 <= acc <= 1.0 and loss >= 0


def test_distill_step_batch_layouts():
    torch.manual_seed(1)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    teacher, student = nn.Linear(5, 3), nn.Linear(5, 3)
    step = distill_step(teacher, 2.0, 0.6)
    with torch.no_grad():
        t = teacher(x)
        a = step(student, (x, y))[0]
        b = step(student, (x, y, t))[0]
    assert torch.allclose(a, b)
    assert torch.allclose(a, distillation_loss(student(x), t, y, 2.0, 0.6))
    soft = distill_step(teacher, 2.0, 1.0)
    loss, logits, targets = soft(student, x)
    assert torch.equal(targets, t.argmax(1)) and logits.shape == (8, 3)
    assert torch.allclose(soft(student, (x,))[0], loss)
    assert torch.allclose(soft(student, (x, t))[0], loss)   # unlabelled, teacher logits precomputed
    with pytest.raises(ValueError, match="^distill_step: an unlabelled batch needs alpha=1.0"):
        step(student, (x, t))
    with pytest.raises(ValueError, match="^distill_step: an unlabelled batch needs alpha=1.0"):
        step(student, x)
    with pytest.raises(TypeError, match="^distill_step: a batch"):
        step(student, {"x": x})
    with pytest.raises(ValueError, match=r"^distill_step: targets must lie in \[0, 3\)"):
        step(student, (x, torch.full((8,), 7)))


def test_distill_step_sequences_are_flattened():
    torch.manual_seed(2)
    x, y = torch.randn(4, 6, 5), torch.randint(0, 3, (4, 6))
    teacher, student = nn.Linear(5, 3), nn.Linear(5, 3)
    loss, logits, targets = distill_step(teacher, 2.0, 0.5)(student, (x, y))
    assert logits.shape == (24, 3) and targets.shape == (24,)
    direct = distillation_loss(student(x).reshape(-1, 3), teacher(x).reshape(-1, 3).detach(), y.reshape(-1), 2.0, 0.5)
    assert torch.allclose(loss, direct)


def test_distill_step_refuses_a_student_with_other_classes():
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match="^distill_step: the student outputs 4 classes but the teacher 3"):
        fit(nn.Linear(5, 4), [(x, y)], epochs=1, step=distill_step(nn.Linear(5, 3)), progress=False, device="cpu")
    with pytest.raises(TypeError, match="^distill_step: teacher must be a torch.nn.Module"):
        distill_step("teacher")
    with pytest.raises(ValueError, match="^distill_step: temperature"):
        distill_step(nn.Linear(5, 3), temperature=0)


def test_hint_loss():
    u, v = torch.randn(3, 4, requires_grad=True), torch.randn(3, 6)
    r = nn.Linear(4, 6)
    loss = hint_loss(u, v, r)
    assert torch.allclose(loss, ((r(u) - v) ** 2).mean())
    loss.backward()
    assert r.weight.grad is not None
    with pytest.raises(ValueError, match="^hint_loss: .*shape"):
        hint_loss(u, v)
    with pytest.raises(TypeError, match="^hint_loss: regressor"):
        hint_loss(u, v, "r")


def test_gap_closed():
    assert math.isclose(gap_closed(146, 74, 67), 72 / 79)
    assert math.isclose(gap_closed(0.8, 0.9, 1.0), 0.5)
    assert math.isclose(gap_closed(3.0, 2.5, 2.0), 0.5)  # lower is better (bits per character)
    with pytest.raises(ValueError, match="^gap_closed: .*no gap"):
        gap_closed(0.9, 0.95, 0.9)
    with pytest.raises(TypeError, match="^gap_closed: student"):
        gap_closed("a", 1, 2)
