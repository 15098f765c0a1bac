"""Tests of natmu_lightning.metrics.functional against independent references.

References are scikit-learn (accuracy_score, LogisticRegression, SVC,
cross_val_score), numpy re-implementations written here, and values computed by
hand with math.log.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import SVC

from natmu_lightning.metrics import functional as F

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- #
# independent numpy references
# --------------------------------------------------------------------------- #
def np_entropy(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log(safe)).sum(axis=1)


def np_m_entropy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row by row, straight from the formula (clamped at 1e-30 like the package)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):
        py = p[i, y[i]]
        v = -(1.0 - py) * math.log(max(py, 1e-30))
        for c in range(p.shape[1]):
            if c != y[i]:
                v -= p[i, c] * math.log(max(1.0 - p[i, c], 1e-30))
        out[i] = v
    return out


def np_balanced_objective(w: float, b: float, x: np.ndarray, y: np.ndarray, C: float = 1.0) -> float:
    """0.5 w^2 + C sum_i s_i logloss_i with sklearn's balanced weights."""
    n, n1 = len(y), int(y.sum())
    s = np.where(y == 1, n / (2.0 * n1), n / (2.0 * (n - n1)))
    z = w * x + b
    return 0.5 * w * w + C * float((s * (np.logaddexp(0.0, z) - y * z)).sum())


def sk_balanced(x: np.ndarray, y: np.ndarray, tight: bool, C: float = 1.0) -> LogisticRegression:
    kwargs = dict(tol=1e-12, max_iter=100_000) if tight else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tight fit
        return LogisticRegression(C=C, class_weight="balanced", **kwargs).fit(x.reshape(-1, 1), y)


def softmax_probs(g: torch.Generator, n: int, c: int, temperature: float) -> torch.Tensor:
    return torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * temperature, dim=1)


def random_mia_problem(seed: int):
    """Members confident, non-members less so, targets in between; uneven sizes."""
    g = torch.Generator().manual_seed(seed)
    n_m = int(torch.randint(20, 300, (1,), generator=g))
    n_n = int(torch.randint(20, 300, (1,), generator=g))
    n_t = int(torch.randint(10, 200, (1,), generator=g))
    t_m = float(torch.empty(1).uniform_(2, 8, generator=g))
    t_n = float(torch.empty(1).uniform_(1, 5, generator=g))
    return (
        softmax_probs(g, n_m, 10, t_m),
        softmax_probs(g, n_n, 10, t_n),
        softmax_probs(g, n_t, 10, 0.5 * (t_m + t_n)),
    )


# --------------------------------------------------------------------------- #
# accuracy
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(4))
def test_accuracy_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(97, 7, generator=g).softmax(1)
    labels = torch.randint(0, 7, (97,), generator=g)
    expected = 100.0 * accuracy_score(labels.numpy(), probs.argmax(1).numpy())
    assert F.accuracy(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_accuracy_edge_cases():
    assert math.isnan(F.accuracy(torch.empty(0, 4), torch.empty(0, dtype=torch.long)))
    p = torch.eye(3)
    assert F.accuracy(p, torch.tensor([0, 1, 2])) == 100.0
    assert F.accuracy(p, torch.tensor([1, 2, 0])) == 0.0
    with pytest.raises(ValueError, match="probs"):
        F.accuracy(torch.rand(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        F.accuracy(torch.rand(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        F.accuracy(torch.rand(5, 3), torch.full((5,), 3))
    with pytest.raises(ValueError, match="labels"):
        F.accuracy(torch.rand(5, 3), torch.zeros(5))  # float labels


# --------------------------------------------------------------------------- #
# entropy and modified entropy
# --------------------------------------------------------------------------- #
def test_entropy_hand_values():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    hand = [
        -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5)),  # 1.0296530140645737
        0.0,
        math.log(3.0),
    ]
    got = F.entropy(p)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(hand, abs=1e-14)
    assert hand[0] == pytest.approx(1.0296530140645737, abs=1e-15)
    assert not math.copysign(1.0, float(got[1])) < 0  # no -0.0


def test_entropy_matches_numpy_and_keeps_dtype():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(50, 10, generator=g).softmax(1)
    p[0] = torch.tensor([1.0] + [0.0] * 9)
    got = F.entropy(p)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), np_entropy(p.numpy()), atol=1e-6)


def test_m_entropy_hand_values():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]], dtype=torch.float64)
    got = F.m_entropy(p, torch.tensor([0, 1]))
    # y = 0: -(1 - 0.5) ln 0.5 - 0.25 ln 0.75 - 0.25 ln 0.75
    hand0 = -(0.5) * math.log(0.5) - 0.25 * math.log(0.75) - 0.25 * math.log(0.75)
    # y = 1: -(1 - 0.25) ln 0.25 - 0.5 ln 0.5 - 0.25 ln 0.75
    hand1 = -(0.75) * math.log(0.25) - 0.5 * math.log(0.5) - 0.25 * math.log(0.75)
    assert hand0 == pytest.approx(0.4904146265058631, abs=1e-15)
    assert hand1 == pytest.approx(1.4582148792328358, abs=1e-15)
    assert got.tolist() == pytest.approx([hand0, hand1], abs=1e-14)


def test_m_entropy_per_row_labels_and_extremes():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(40, 5, generator=g, dtype=torch.float64).softmax(1)
    y = torch.randint(0, 5, (40,), generator=g)
    np.testing.assert_allclose(F.m_entropy(p, y).numpy(), np_m_entropy(p.numpy(), y.numpy()), atol=1e-12)
    # each row uses its own label (the "p[:, labels]" bug would mix rows)
    one_by_one = torch.cat([F.m_entropy(p[i : i + 1], y[i : i + 1]) for i in range(40)])
    assert torch.equal(F.m_entropy(p, y), one_by_one)
    # correct and certain: 0; certain and wrong: large but finite (2 * -ln 1e-30)
    extremes = F.m_entropy(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), torch.tensor([0, 0]))
    assert extremes[0].item() == 0.0
    assert extremes[1].item() == pytest.approx(-2 * math.log(1e-30))


# --------------------------------------------------------------------------- #
# the balanced logistic regression and mia_entropy
# --------------------------------------------------------------------------- #
def _one_d_problems():
    rng = np.random.default_rng(0)
    out = []
    for n1, n0, sep, scale in [
        (200, 200, 1.0, 1.0),  # balanced, overlapping
        (300, 25, 2.0, 1.0),  # very unbalanced
        (15, 250, 0.5, 0.3),  # unbalanced the other way
        (120, 80, 4.0, 0.05),  # near-separable, small feature scale (entropies)
        (60, 90, 10.0, 0.01),  # separable, tiny scale
    ]:
        x = np.concatenate([rng.normal(0.0, 1.0, n1), rng.normal(sep, 1.0, n0)]) * scale + 0.3
        y = np.concatenate([np.ones(n1), np.zeros(n0)])
        out.append((x, y))
    # exactly separable with a gap
    x = np.concatenate([rng.uniform(0, 1, 50), rng.uniform(2, 3, 70)])
    out.append((x, np.concatenate([np.ones(50), np.zeros(70)])))
    return out


@pytest.mark.parametrize("case", range(6))
def test_fit_balanced_logistic_matches_sklearn(case):
    x, y = _one_d_problems()[case]
    w, b = F.fit_balanced_logistic_1d(torch.tensor(x), torch.tensor(y, dtype=torch.long))
    tight = sk_balanced(x, y, tight=True)
    # Same minimiser as sklearn's (converged) lbfgs: coef/intercept agree far below 1e-4.
    assert w == pytest.approx(tight.coef_[0, 0], abs=1e-6)
    assert b == pytest.approx(tight.intercept_[0], abs=1e-6)
    # Ours is the exact minimiser: never worse than sklearn's, default or tight.
    ours = np_balanced_objective(w, b, x, y)
    for sk in (tight, sk_balanced(x, y, tight=False)):
        assert ours <= np_balanced_objective(sk.coef_[0, 0], sk.intercept_[0], x, y) + 1e-9 * abs(ours)


def test_fit_balanced_logistic_one_sample_per_class_and_constant_feature():
    # one member at 0.1, one non-member at 0.5: by symmetry the boundary is the midpoint
    w, b = F.fit_balanced_logistic_1d(torch.tensor([0.1, 0.5], dtype=torch.float64), torch.tensor([1, 0]))
    assert w < 0 and -b / w == pytest.approx(0.3, abs=1e-12)
    sk = sk_balanced(np.array([0.1, 0.5]), np.array([1.0, 0.0]), tight=True)
    assert (w, b) == pytest.approx((sk.coef_[0, 0], sk.intercept_[0]), abs=1e-8)
    # a constant feature carries no information: w = b = 0
    assert F.fit_balanced_logistic_1d(
        torch.full((7,), 0.1, dtype=torch.float64), torch.tensor([1, 1, 1, 0, 0, 0, 0])
    ) == (0.0, 0.0)


def test_fit_balanced_logistic_errors():
    x = torch.tensor([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        F.fit_balanced_logistic_1d(x, torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="x"):
        F.fit_balanced_logistic_1d(x[:, None], torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="y"):
        F.fit_balanced_logistic_1d(x, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="y"):
        F.fit_balanced_logistic_1d(x, torch.tensor([1, 0, 2]))
    with pytest.raises(ValueError, match="C"):
        F.fit_balanced_logistic_1d(x, torch.tensor([1, 0, 1]), C=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        F.fit_balanced_logistic_1d(torch.tensor([0.1, float("nan"), 0.3]), torch.tensor([1, 0, 1]))


@pytest.mark.parametrize("seed", range(6))
def test_mia_entropy_matches_sklearn_pipeline(seed):
    members, nonmembers, targets = random_mia_problem(seed)
    x = np.concatenate([np_entropy(members.numpy()), np_entropy(nonmembers.numpy())])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    x_t = np_entropy(targets.numpy()).reshape(-1, 1)
    got = F.mia_entropy(members, nonmembers, targets)
    for tight in (False, True):  # sklearn at C = 2 with its other defaults, and fully converged
        expected = 100.0 * sk_balanced(x, y, tight, C=2.0).predict(x_t).mean()
        assert got == pytest.approx(expected, abs=1e-9)
    w, b = F.fit_balanced_logistic_1d(torch.tensor(x), torch.tensor(y, dtype=torch.long), C=F.MIA_ENTROPY_C)
    sk = sk_balanced(x, y, tight=True, C=2.0)
    assert abs(w - sk.coef_[0, 0]) < 1e-6 and abs(b - sk.intercept_[0]) < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_mia_entropy_rates_fit_once_and_score_each_target_as_sklearn(seed):
    members, nonmembers, targets = random_mia_problem(seed)
    x = np.concatenate([np_entropy(members.numpy()), np_entropy(nonmembers.numpy())])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    attack = sk_balanced(x, y, tight=True, C=2.0)
    halves = (targets[: len(targets) // 2], targets[len(targets) // 2 :], targets[:0])
    got = F.mia_entropy_rates(members, nonmembers, *halves)
    for rate, target in zip(got[:2], halves[:2]):
        assert rate == pytest.approx(100.0 * attack.predict(np_entropy(target.numpy()).reshape(-1, 1)).mean(), abs=1e-9)
    assert math.isnan(got[2])
    assert got[0] == F.mia_entropy(members, nonmembers, halves[0])


def multinomial_two_class_fit(x: np.ndarray, y: np.ndarray, C: float = 1.0) -> tuple[float, float]:
    """The authors' ``LogisticRegression(class_weight="balanced", multi_class="multinomial")``
    re-stated (scikit-learn 1.9 no longer has ``multi_class``): one coefficient and one free
    intercept per class, penalty ``(w_0**2 + w_1**2) / (2 C)``, balanced softmax log-loss.
    Returns the binary-equivalent ``(w_1 - w_0, b_1 - b_0)``."""
    from scipy.optimize import minimize

    n, n1 = len(y), int(y.sum())
    s = np.where(y == 1, n / (2.0 * n1), n / (2.0 * (n - n1)))

    def objective(theta):
        w0, w1, b0, b1 = theta
        logits = np.stack([w0 * x + b0, w1 * x + b1], axis=1)
        log_norm = np.logaddexp(logits[:, 0], logits[:, 1])
        loss = (s * (log_norm - logits[np.arange(n), y.astype(int)])).sum()
        return loss + (w0 * w0 + w1 * w1) / (2.0 * C)

    theta = minimize(objective, np.zeros(4), method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000}).x
    return theta[1] - theta[0], theta[3] - theta[2]


@pytest.mark.parametrize("seed", range(3))
def test_mia_entropy_C_equals_the_authors_two_class_multinomial_fit(seed):
    """The authors' multinomial fit at C = 1 IS the binary fit at C = 2 (and not at C = 1)."""
    members, nonmembers, _ = random_mia_problem(seed)
    x = np.concatenate([np_entropy(members.numpy()), np_entropy(nonmembers.numpy())])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    w_multi, b_multi = multinomial_two_class_fit(x, y, C=1.0)
    w, b = F.fit_balanced_logistic_1d(torch.tensor(x), torch.tensor(y, dtype=torch.long), C=F.MIA_ENTROPY_C)
    assert F.MIA_ENTROPY_C == 2.0
    assert w == pytest.approx(w_multi, rel=1e-5, abs=1e-6) and b == pytest.approx(b_multi, rel=1e-5, abs=1e-6)
    w_c1, _ = F.fit_balanced_logistic_1d(torch.tensor(x), torch.tensor(y, dtype=torch.long), C=1.0)
    assert abs(w_c1 - w_multi) > 1e-3


def test_mia_entropy_near_separable_and_float32():
    g = torch.Generator().manual_seed(7)
    members = softmax_probs(g, 400, 10, 12.0)  # almost one-hot
    nonmembers = softmax_probs(g, 60, 10, 2.0)
    targets = torch.cat([softmax_probs(g, 30, 10, 12.0), softmax_probs(g, 30, 10, 2.0)])
    x = np.concatenate([np_entropy(members.numpy()), np_entropy(nonmembers.numpy())])
    y = np.concatenate([np.ones(400), np.zeros(60)])
    expected = 100.0 * sk_balanced(x, y, tight=True, C=2.0).predict(np_entropy(targets.numpy()).reshape(-1, 1)).mean()
    assert F.mia_entropy(members, nonmembers, targets) == pytest.approx(expected, abs=1e-9)
    # float32 inputs are promoted to float64 before the entropy
    got32 = F.mia_entropy(members.float(), nonmembers.float(), targets.float())
    x32 = np.concatenate([np_entropy(members.float().numpy()), np_entropy(nonmembers.float().numpy())])
    exp32 = (
        100.0
        * sk_balanced(x32, y, tight=True, C=2.0).predict(np_entropy(targets.float().numpy()).reshape(-1, 1)).mean()
    )
    assert got32 == pytest.approx(exp32, abs=1e-9)


def test_mia_entropy_direction_and_edges():
    confident = torch.tensor([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03]])
    unsure = torch.tensor([[0.6, 0.4], [0.55, 0.45], [0.5, 0.5]])
    assert F.mia_entropy(confident, unsure, confident) == 100.0
    assert F.mia_entropy(confident, unsure, unsure) == 0.0
    assert math.isnan(F.mia_entropy(confident, unsure, torch.empty(0, 2)))
    # identical outputs everywhere: no information, nothing predicted member
    same = torch.full((4, 2), 0.5)
    assert F.mia_entropy(same, same, same) == 0.0


def test_mia_entropy_errors_name_the_argument():
    good = torch.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="member_probs"):
        F.mia_entropy(torch.rand(3), good, good)
    with pytest.raises(ValueError, match="nonmember_probs"):
        F.mia_entropy(good, torch.rand(3, 4, 1), good)
    with pytest.raises(ValueError, match="target_probs"):
        F.mia_entropy(good, good, torch.rand(3))
    with pytest.raises(ValueError, match="nonmember_probs"):
        F.mia_entropy(good, torch.full((3, 5), 0.2), good)
    with pytest.raises(ValueError, match="target_probs"):
        F.mia_entropy(good, good, torch.full((3, 5), 0.2))
    with pytest.raises(ValueError, match="member_probs"):
        F.mia_entropy(torch.empty(0, 4), good, good)
    with pytest.raises(ValueError, match="nonmember_probs"):
        F.mia_entropy(good, torch.empty(0, 4), good)
    bad = good.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="member_probs"):
        F.mia_entropy(bad, good, good)


_prob_rows = st.lists(
    st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=3, max_size=3).filter(lambda r: sum(r) > 1e-3),
    min_size=1,
    max_size=25,
)


def _normalise(rows):
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.sum(1, keepdim=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=_prob_rows, nonmembers=_prob_rows, targets=_prob_rows, seed=st.integers(0, 2**31 - 1))
def test_mia_entropy_permutation_invariant_and_bounded(members, nonmembers, targets, seed):
    m, n, t = _normalise(members), _normalise(nonmembers), _normalise(targets)
    value = F.mia_entropy(m, n, t)
    assert 0.0 <= value <= 100.0
    g = torch.Generator().manual_seed(seed)
    perm = lambda a: a[torch.randperm(a.shape[0], generator=g)]  # noqa: E731
    assert F.mia_entropy(perm(m), perm(n), perm(t)) == value


# --------------------------------------------------------------------------- #
# KL and JS
# --------------------------------------------------------------------------- #
P_A = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]], dtype=torch.float64)
P_B = torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.5, 0.3]], dtype=torch.float64)


def test_kl_hand_computed():
    row1 = 0.2 * math.log(0.2 / 0.3) + 0.3 * math.log(0.3 / 0.3) + 0.5 * math.log(0.5 / 0.4)
    row2 = 0.1 * math.log(0.1 / 0.2) + 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.3)
    hand = (row1 + row2) / 2
    assert hand == pytest.approx(0.035278485027925126, abs=1e-15)
    assert F.kl_divergence(P_A, P_B) == pytest.approx(hand, abs=1e-14)
    assert F.kl_divergence(P_A, P_A) == pytest.approx(0.0, abs=1e-15)


def test_kl_zeros():
    # zeros in p_ref contribute 0 (0 log 0 = 0): 2 * 0.5 ln(0.5 / 0.4) = ln 1.25
    p_ref = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.2, 0.4, 0.4]], dtype=torch.float64)
    assert F.kl_divergence(p_ref, p) == pytest.approx(math.log(1.25), abs=1e-14)
    # a zero in p where p_ref > 0: clamped, large but finite
    big = F.kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert math.isfinite(big) and big == pytest.approx(-math.log(1e-30))
    assert math.isnan(F.kl_divergence(torch.empty(0, 3), torch.empty(0, 3)))
    with pytest.raises(ValueError, match="same shape"):
        F.kl_divergence(P_A, P_B[:1])
    with pytest.raises(ValueError, match="p_ref"):
        F.kl_divergence(P_A[0], P_B[0])


def test_js_hand_computed():
    # m = [[0.25, 0.3, 0.45], [0.15, 0.55, 0.3]]
    row1 = 0.5 * (0.2 * math.log(0.2 / 0.25) + 0.3 * math.log(0.3 / 0.3) + 0.5 * math.log(0.5 / 0.45)) + 0.5 * (
        0.3 * math.log(0.3 / 0.25) + 0.3 * math.log(0.3 / 0.3) + 0.4 * math.log(0.4 / 0.45)
    )
    row2 = 0.5 * (0.1 * math.log(0.1 / 0.15) + 0.6 * math.log(0.6 / 0.55) + 0.3 * math.log(0.3 / 0.3)) + 0.5 * (
        0.2 * math.log(0.2 / 0.15) + 0.5 * math.log(0.5 / 0.55) + 0.3 * math.log(0.3 / 0.3)
    )
    hand = (row1 + row2) / 2
    assert hand == pytest.approx(0.00929411007821485, abs=1e-15)
    assert F.js_divergence(P_A, P_B) == pytest.approx(hand, abs=1e-14)
    assert F.js_divergence(P_B, P_A) == pytest.approx(hand, abs=1e-14)  # symmetric
    # not one of the impostors (symmetrised KL, KL against the mixture, ...)
    sym_kl = 0.5 * (F.kl_divergence(P_A, P_B) + F.kl_divergence(P_B, P_A))
    assert abs(F.js_divergence(P_A, P_B) - sym_kl) > 1e-3


def test_js_extremes():
    one_hot_a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    one_hot_b = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert F.js_divergence(one_hot_a, one_hot_b) == pytest.approx(LN2, abs=1e-15)
    assert F.js_divergence(one_hot_a, one_hot_a) == 0.0
    # partial overlap with zeros: p = [1, 0], q = [0.5, 0.5], m = [0.75, 0.25]
    hand = 0.5 * (1.0 * math.log(1 / 0.75)) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert F.js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(hand, abs=1e-14)
    g = torch.Generator().manual_seed(3)
    p = (torch.randn(200, 6, generator=g) * 5).softmax(1)
    q = (torch.randn(200, 6, generator=g) * 5).softmax(1)
    assert 0.0 <= F.js_divergence(p, q) <= LN2
    with pytest.raises(ValueError, match="same shape"):
        F.js_divergence(p, q[:, :5])


# --------------------------------------------------------------------------- #
# summaries
# --------------------------------------------------------------------------- #
RETRAIN = {"test_acc": 93.34, "remain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88}


def test_avg_gap():
    assert F.avg_gap(RETRAIN, RETRAIN) == 0.0
    method = {"test_acc": 92.34, "remain_acc": 100.0, "forget_acc": 99.08, "mia_entropy": 80.88, "extra": 1.0}
    # |92.34-93.34| + |100-99.94| + |99.08-94.08| + |80.88-83.88| = 1 + 0.06 + 5 + 3
    assert F.avg_gap(method, RETRAIN) == pytest.approx((1.0 + 0.06 + 5.0 + 3.0) / 4, abs=1e-12)
    assert F.avg_gap(method, RETRAIN, keys=("forget_acc",)) == pytest.approx(5.0, abs=1e-12)
    with pytest.raises(ValueError, match="mia_entropy"):
        F.avg_gap({k: v for k, v in RETRAIN.items() if k != "mia_entropy"}, RETRAIN)
    with pytest.raises(ValueError, match="reference.*test_acc"):
        F.avg_gap(RETRAIN, {k: v for k, v in RETRAIN.items() if k != "test_acc"})


def test_tug_of_war():
    assert F.tug_of_war(RETRAIN, RETRAIN) == 1.0
    method = {"forget_acc": 84.08, "remain_acc": 98.94, "test_acc": 93.34}
    assert F.tug_of_war(method, RETRAIN) == pytest.approx((1 - 0.10) * (1 - 0.01) * 1.0, abs=1e-12)
    with pytest.raises(ValueError, match="forget_acc"):
        F.tug_of_war({"remain_acc": 1.0, "test_acc": 1.0}, RETRAIN)


# --------------------------------------------------------------------------- #
# the SVC protocol and the loss-based cross-validated attack
# --------------------------------------------------------------------------- #
def _svc_reference(tr_p, tr_y, te_p, te_y, t_p, t_y, feature):
    n = min(len(tr_p), len(te_p))
    feat = {
        "confidence": lambda p, y: p[np.arange(len(y)), y],
        "entropy": lambda p, y: np_entropy(p),
        "m_entropy": np_m_entropy,
    }[feature]
    x = np.concatenate([feat(tr_p[:n], tr_y[:n]), feat(te_p[:n], te_y[:n])]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return 100.0 * (1.0 - clf.predict(feat(t_p, t_y).reshape(-1, 1)).mean())


@pytest.mark.parametrize("feature", ["confidence", "entropy", "m_entropy"])
def test_svc_mia_matches_direct_sklearn(feature):
    g = torch.Generator().manual_seed(11)
    tr_p, te_p = softmax_probs(g, 150, 5, 6.0), softmax_probs(g, 90, 5, 2.0)  # uneven: truncated to 90
    t_p = torch.cat([softmax_probs(g, 20, 5, 6.0), softmax_probs(g, 20, 5, 2.0)])
    tr_y = tr_p.argmax(1)
    te_y = torch.randint(0, 5, (90,), generator=g)
    t_y = torch.randint(0, 5, (40,), generator=g)
    got = F.svc_mia(tr_p, tr_y, te_p, te_y, t_p, t_y, feature)
    expected = _svc_reference(tr_p.numpy(), tr_y.numpy(), te_p.numpy(), te_y.numpy(), t_p.numpy(), t_y.numpy(), feature)
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= got <= 100.0


def test_svc_mia_edges_and_errors():
    p = torch.full((4, 3), 1 / 3)
    y = torch.zeros(4, dtype=torch.long)
    assert math.isnan(F.svc_mia(p, y, p, y, torch.empty(0, 3), torch.empty(0, dtype=torch.long), "entropy"))
    with pytest.raises(ValueError, match="feature"):
        F.svc_mia(p, y, p, y, p, y, "correctness")
    with pytest.raises(ValueError, match="shadow_test_probs"):
        F.svc_mia(p, y, torch.empty(0, 3), torch.empty(0, dtype=torch.long), p, y, "entropy")
    with pytest.raises(ValueError, match="target_labels"):
        F.svc_mia(p, y, p, y, p, y[:3], "confidence")
    with pytest.raises(ValueError, match="target_probs"):
        F.svc_mia(p, y, p, y, torch.full((4, 2), 0.5), y, "confidence")


def test_loss_mia_cv_matches_direct_sklearn_when_balanced():
    g = torch.Generator().manual_seed(5)
    f, t = torch.rand(60, generator=g), torch.rand(60, generator=g) + 0.3
    x = np.concatenate([f.double().numpy(), t.double().numpy()]).reshape(-1, 1)
    y = np.concatenate([np.ones(60), np.zeros(60)])
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    expected = 100.0 * cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean()
    assert F.loss_mia_cv(f, t, n_splits=5, seed=3) == pytest.approx(expected, abs=1e-9)


def test_loss_mia_cv_chance_and_separable():
    g = torch.Generator().manual_seed(0)
    same_f, same_t = torch.rand(400, generator=g), torch.rand(1500, generator=g)
    assert abs(F.loss_mia_cv(same_f, same_t) - 50.0) < 7.0
    assert F.loss_mia_cv(same_f, same_t, seed=1) == F.loss_mia_cv(same_f, same_t, seed=1)  # reproducible
    far_f, far_t = torch.rand(300, generator=g) * 0.1, 5.0 + torch.rand(80, generator=g)
    assert F.loss_mia_cv(far_f, far_t) == 100.0


def test_loss_mia_cv_errors():
    with pytest.raises(ValueError, match="n_splits"):
        F.loss_mia_cv(torch.rand(3), torch.rand(100), n_splits=5)
    with pytest.raises(ValueError, match="n_splits"):
        F.loss_mia_cv(torch.rand(30), torch.rand(30), n_splits=1)
    with pytest.raises(ValueError, match="forget_losses"):
        F.loss_mia_cv(torch.rand(30, 2), torch.rand(30))
    with pytest.raises(ValueError, match="test_losses"):
        F.loss_mia_cv(torch.rand(30), torch.tensor([float("inf")] * 30))
