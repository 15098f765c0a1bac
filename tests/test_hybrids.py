"""Masks, pairing plan and mixing against docs/design.md §2, written out independently."""

import math

import pytest
import torch

from natmu_lightning.natmu import hybrids
from tests.plan_checks import check_plan


def reference_masks(height: int, width: int, delta: float) -> torch.Tensor:
    """docs/design.md §2.2 spelled out with plain Python loops."""

    def t(i: int, length: int) -> float:
        b = length / 2
        return i / b if i < b else (length - 1 - i) / b

    def u(i: int, length: int) -> float:
        peak = max(t(j, length) for j in range(length))
        return peak - t(i, length)

    out = torch.empty(4, height, width)
    for r in range(height):
        for c in range(width):
            values = (t(r, height), t(c, width), u(r, height), u(c, width))
            for j, v in enumerate(values):
                out[j, r, c] = min(max(v + delta, 0.0), 1.0)
    return out


@pytest.mark.parametrize("height,width", [(32, 32), (8, 8), (7, 7), (5, 9), (1, 3), (64, 2)])
@pytest.mark.parametrize("delta", [0.0, -0.19, 0.045, 1.0, -1.0])
def test_masks_match_formula(height, width, delta):
    masks = hybrids.gradual_masks(height, width, delta)
    assert masks.shape == (4, height, width)
    assert masks.dtype == torch.float32
    torch.testing.assert_close(masks, reference_masks(height, width, delta), atol=1e-6, rtol=0)


def test_even_side_uses_design_complement():
    # For even L the complement is (b - 1) / b - t(i) exactly as docs/design.md states.
    length, b = 32, 16
    t = hybrids.triangle_profile(length)
    masks = hybrids.gradual_masks(length, length, 0.0)
    torch.testing.assert_close(masks[2, :, 0], (b - 1) / b - t)
    assert masks[0, 0, 0] == 0 and masks[0, -1, 0] == 0
    assert math.isclose(masks[0, b - 1, 0].item(), (b - 1) / b, rel_tol=1e-6)


def test_published_mean_weights():
    assert round(hybrids.gradual_masks(32, 32, 0.0).mean().item(), 3) == 0.469
    assert round(hybrids.gradual_masks(32, 32, -0.19).mean().item(), 3) == 0.303


def test_delta_extremes_give_relabeling_and_pure_remaining():
    assert torch.all(hybrids.gradual_masks(6, 5, 1.0) == 1)
    assert torch.all(hybrids.gradual_masks(6, 5, -1.0) == 0)


@pytest.mark.parametrize("delta", [1.01, -1.5, float("nan")])
def test_delta_out_of_range_rejected(delta):
    with pytest.raises(ValueError, match="delta"):
        hybrids.gradual_masks(4, 4, delta)


def test_odd_profile_is_symmetric_with_centre_peak():
    t = hybrids.triangle_profile(9)
    torch.testing.assert_close(t, t.flip(0))
    assert t.argmax() == 4


def test_mix_in_uint8_pixel_space_any_channels():
    generator = torch.Generator().manual_seed(0)
    xf = torch.randint(0, 256, (3, 5, 7, 6), dtype=torch.uint8, generator=generator)
    xr = torch.randint(0, 256, (3, 5, 7, 6), dtype=torch.uint8, generator=generator)
    weights = hybrids.gradual_masks(7, 6, -0.1)[torch.tensor([0, 2, 3])].unsqueeze(1)
    mixed = hybrids.mix(xf, xr, weights)
    expected = torch.floor(torch.clamp(xr.double() * (1 - weights.double()) + xf.double() * weights.double(), 0, 255))
    assert mixed.dtype == torch.uint8
    # float32 arithmetic may differ from float64 only where the exact value sits on an integer.
    assert (mixed.double() - expected).abs().max() <= 1
    assert (mixed.double() == expected).float().mean() > 0.99


def test_mix_weight_one_and_zero_are_exact():
    xf = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    xr = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(hybrids.mix(xf, xr, torch.ones(2, 1, 4, 4)), xf)
    assert torch.equal(hybrids.mix(xf, xr, torch.zeros(2, 1, 4, 4)), xr)


def make_problem(num_classes=5, per_class=20, num_forget=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    perm = torch.randperm(labels.numel(), generator=generator)
    forget = perm[:num_forget].sort().values
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[forget] = False
    remain = torch.nonzero(keep).flatten()
    probs = torch.rand(num_forget, num_classes, generator=generator).softmax(1)
    return forget, labels, probs, remain


def test_plan_invariants_and_rank_order():
    forget, labels, probs, remain = make_problem()
    k = 4
    plan = hybrids.build_hybrid_plan(
        forget, labels[forget], probs, remain, labels[remain], k=k, generator=torch.Generator().manual_seed(1)
    )
    check_plan(plan, forget, labels, probs, remain, k)
    # Plenty of images: mask j gets exactly the j-th ranked other class.
    for row, f in enumerate(forget.tolist()):
        p = probs[row].clone()
        p[labels[f]] = -1
        expected = torch.sort(-p, stable=True).indices[:k]
        assert torch.equal(plan["label"].reshape(-1, k)[row], expected)


def test_plan_is_seeded():
    forget, labels, probs, remain = make_problem()
    args = (forget, labels[forget], probs, remain, labels[remain])
    a = hybrids.build_hybrid_plan(*args, k=3, generator=torch.Generator().manual_seed(5))
    b = hybrids.build_hybrid_plan(*args, k=3, generator=torch.Generator().manual_seed(5))
    c = hybrids.build_hybrid_plan(*args, k=3, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["remain_index"], c["remain_index"])


def test_plan_falls_back_when_a_class_runs_out():
    # Every forgetting sample ranks class 1 first, but class 1 has only 2 remaining images.
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 10 + [3] * 10 + [4] * 10)
    forget = torch.tensor([0, 1, 2, 3, 4, 5])
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[forget] = False
    remain = torch.nonzero(keep).flatten()
    probs = torch.tensor([[0.0, 0.6, 0.2, 0.15, 0.05]]).repeat(6, 1)
    plan = hybrids.build_hybrid_plan(
        forget, labels[forget], probs, remain, labels[remain], k=3, generator=torch.Generator().manual_seed(0)
    )
    check_plan(plan, forget, labels, probs, remain, 3)
    assert (plan["label"] == 1).sum() == 2


def test_plan_fails_clearly_instead_of_hanging():
    labels = torch.tensor([0] * 5 + [1] * 1 + [2] * 1)
    forget = torch.tensor([0, 1, 2, 3])
    remain = torch.tensor([4, 5, 6])
    probs = torch.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="cannot build 2 hybrids"):
        hybrids.build_hybrid_plan(forget, labels[forget], probs, remain, labels[remain], k=2)


@pytest.mark.parametrize("k,num_classes", [(0, 10), (5, 10), (3, 3)])
def test_k_out_of_range(k, num_classes):
    probs = torch.full((1, num_classes), 1 / num_classes)
    with pytest.raises(ValueError, match="k="):
        hybrids.build_hybrid_plan(
            torch.tensor([0]), torch.tensor([0]), probs, torch.arange(1, 40), torch.arange(1, 40) % num_classes, k=k
        )
