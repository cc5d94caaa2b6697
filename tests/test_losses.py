"""Losses against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from training.losses import ContrastiveLoss, KLDistillationLoss, MarginMSELoss, group_targets


def test_contrastive_by_hand():
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    target = torch.tensor([0])
    # -log(e^2 / (e^2 + e^0 + e^1)) = log(1 + e^-2 + e^-1)
    assert ContrastiveLoss(1.0)(scores, target).item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-1)))
    # temperature 0.5 doubles the logits: log(1 + e^-4 + e^-2)
    assert ContrastiveLoss(0.5)(scores, target).item() == pytest.approx(math.log(1 + math.exp(-4) + math.exp(-2)))


def test_learnable_temperature_starts_at_the_fixed_one_and_its_gradient_is_the_numeric_one():
    scores = torch.tensor([[2.0, 0.0, 1.0], [0.5, 3.0, -1.0]])
    target = torch.tensor([0, 2])
    learned = ContrastiveLoss(0.5, learnable=True)
    assert learned.temperature == pytest.approx(0.5)
    loss = learned(scores, target)
    assert loss.item() == pytest.approx(ContrastiveLoss(0.5)(scores, target).item())
    loss.backward()
    # d loss / d log_scale by central differences on the fixed-temperature loss: T = exp(-log_scale)
    eps, s0 = 1e-3, math.log(2.0)

    def at(log_scale):
        return ContrastiveLoss(math.exp(-log_scale))(scores.double(), target).item()

    numeric = (at(s0 + eps) - at(s0 - eps)) / (2 * eps)
    assert learned.log_scale.grad.item() == pytest.approx(numeric, rel=1e-4)
    assert numeric > 0  # query 1 ranks its target last: a sharper softmax costs more, so descent raises the temperature
    assert not ContrastiveLoss(0.5).state_dict()  # a fixed temperature has nothing to train or save


def test_decoupled_softmax_drops_other_positives_from_the_denominator():
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    exclude = torch.tensor([[False, False, True]])  # column 2 is another positive of this query
    loss = ContrastiveLoss(1.0)(scores, torch.tensor([0]), exclude)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)))  # only column 1 competes
    # the target itself is never excluded, even if the mask says so
    same = ContrastiveLoss(1.0)(scores, torch.tensor([0]), torch.tensor([[True, False, True]]))
    assert same.item() == pytest.approx(loss.item())


def test_in_batch_groups():
    assert group_targets(3, 4).tolist() == [0, 4, 8]
    # two queries, groups of two passages; each query's positive scores 1, everything else 0
    scores = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    loss = ContrastiveLoss(1.0)(scores, group_targets(2, 2))
    assert loss.item() == pytest.approx(math.log(1 + 3 / math.e))


def test_margin_mse_by_hand():
    # student margins 3-1=2, 3-2=1; teacher 4-1=3, 4-3=1; squared errors 1 and 0 -> mean 0.5
    loss = MarginMSELoss()(torch.tensor([3.0]), torch.tensor([[1.0, 2.0]]), torch.tensor([4.0]),
                           torch.tensor([[1.0, 3.0]]))
    assert loss.item() == pytest.approx(0.5)


def test_margin_mse_rescaled_by_hand():
    """Rescaled: the student's margins are brought to the teacher's spread before the MSE, so the
    loss does not change when the student's scores are scaled, and a student that orders like the
    teacher at ten times its scale costs nothing."""
    s_pos, s_neg = torch.tensor([30.0, 12.0]), torch.tensor([[10.0, 20.0], [2.0, 8.0]])
    t_pos, t_neg = torch.tensor([1.0, 0.9]), torch.tensor([[0.2, 0.5], [0.1, 0.3]])
    loss = MarginMSELoss(rescale=True)
    s_m, t_m = s_pos.unsqueeze(-1) - s_neg, t_pos.unsqueeze(-1) - t_neg
    want = ((s_m * (t_m.std() / s_m.std()) - t_m) ** 2).mean()
    assert float(loss(s_pos, s_neg, t_pos, t_neg)) == pytest.approx(float(want), rel=1e-6)
    assert float(loss(7 * s_pos, 7 * s_neg, t_pos, t_neg)) == pytest.approx(float(want), rel=1e-5)
    assert float(loss(10 * t_pos, 10 * t_neg, t_pos, t_neg)) == pytest.approx(0.0, abs=1e-10)
    assert float(MarginMSELoss()(10 * t_pos, 10 * t_neg, t_pos, t_neg)) > 1.0  # plain: the scale costs
    # the factor is a constant for the gradient: d loss / d student = 2 c (c m_s - m_t) / n
    s = s_pos.clone().requires_grad_(True)
    loss(s, s_neg, t_pos, t_neg).backward()
    c = t_m.std() / s_m.std()
    want_grad = (2 * c * (c * s_m - t_m) / s_m.numel()).sum(dim=1)
    assert torch.allclose(s.grad, want_grad, rtol=1e-5)
    # all student margins equal (no spread): left as they are
    flat = MarginMSELoss(rescale=True)(torch.tensor([2.0]), torch.tensor([[1.0, 1.0]]), t_pos[:1], t_neg[:1])
    assert float(flat) == pytest.approx(float(((torch.tensor([1.0, 1.0]) - t_m[0]) ** 2).mean()))


def test_kl_distillation_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # teacher distribution 0.75 / 0.25
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert KLDistillationLoss(1.0)(student, teacher).item() == pytest.approx(expected)
    # T = 2: teacher softmax of (ln3/2, 0) = (sqrt3, 1) / (sqrt3 + 1); result scaled by T^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert KLDistillationLoss(2.0)(student, teacher).item() == pytest.approx(expected_t2)
    assert KLDistillationLoss()(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_losses_have_gradients_and_validate():
    scores = torch.tensor([[2.0, 0.0, 1.0]], requires_grad=True)
    ContrastiveLoss(0.1)(scores, torch.tensor([0])).backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 2]  # push the positive up, negatives down
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss(0.0)
    with pytest.raises(ValueError, match="temperature"):
        KLDistillationLoss(-1.0)


def test_best_temperature_is_the_minimum_of_the_contrastive_loss_on_a_grid():
    from training.trainer import best_temperature, contrastive_at

    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 12, generator=gen, dtype=torch.float64) * 8  # over-confident, often wrong
    targets = torch.arange(6) * 2
    exclude = torch.zeros(6, 12, dtype=torch.bool)
    exclude[0, 5] = True
    batches = [(scores, targets, exclude)]
    t = best_temperature(batches)
    grid = [10 ** (k / 200) for k in range(-800, 801)]
    assert contrastive_at(batches, t) <= min(contrastive_at(batches, g) for g in grid) + 1e-9
    assert contrastive_at(batches, t) < contrastive_at(batches, 1.0)
    assert 1.0 < t < 1e4  # the scores are mostly wrong: the softmax wants softening
    # scores that are all right want a sharp softmax: a temperature far below 1, loss ~0
    right = torch.full((2, 4), -1.0, dtype=torch.float64)
    right[0, 0] = right[1, 2] = 1.0
    batch = [(right, torch.tensor([0, 2]), torch.zeros(2, 4, dtype=torch.bool))]
    assert best_temperature(batch, lo=1e-2) < 0.1 and contrastive_at(batch, best_temperature(batch)) < 1e-6
