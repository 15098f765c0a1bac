"""Per-example metrics against a bank of Retrains (``UnlearningEvaluator(reference_bank=...)``).

One Retrain is one draw of a random procedure (initial weights, data order, augmentation):
its outputs on a forget sample are not THE value an unlearned model should reach, only one
value a Retrain may reach. A bank of K Retrains (``natmu-lightning-bank``, :mod:`natmu_lightning.bank`)
gives, for every sample, how far those values spread, and so tells whether the evaluated
model's output on that sample lies where a Retrain's would.

**Score** (:func:`logit_confidence`): LiRA's logit-scaled confidence on the true label,
``log(p / (1 - p))`` with ``p`` the softmax probability of the true class clipped to
``[1e-6, 1 - 1e-6]`` before the logit (:data:`PROB_CLIP`), so every score lies in
``[-13.8155, 13.8155]``. ``1 - p`` is taken as the sum of the other classes' probabilities
(what float32 softmax outputs hold accurately when ``p`` is close to 1). Computed in float64.

**Per sample**, the bank's K scores give their mean μ and sample standard deviation σ (the
``K - 1`` form). The central 95% interval is a *predictive* interval for one more draw of
the procedure, ``μ ± t_{0.975, K-1} · σ · sqrt(1 + 1/K)`` (Student t): the mean and σ are
themselves estimated from K draws, and with small K ``μ ± 1.96 σ`` holds a new draw far less
often than 95% of the time (for normal scores: 82% for K = 4, 89% for K = 8). Under the
normal model a further Retrain falls outside it with probability 5% exactly, for any K.

**Reported** (:class:`ReferenceBankMetric`), for the forget set, and as controls for a fixed
seeded slice of at most :data:`SLICE_SIZE` samples of the remaining set and of the test set:

- ``bank_<split>_outside``: % of the split's samples whose score lies outside the interval
  (a model drawn like a Retrain gives about 5; far more means the model's outputs on those
  samples are not those of a Retrain);
- ``bank_<split>_divergence``: the mean absolute standardised distance to the bank,
  ``mean |z|`` with ``z = (s - μ) / max(σ, σ_floor)``, ``σ_floor`` = :data:`STD_FLOOR`
  (1e-3 logit units: a sample on which every member gives the same score, e.g. all clipped).
  For normal scores a further Retrain's ``z`` is ``sqrt(1 + 1/K)`` times a Student t with
  ``K - 1`` degrees of freedom, so its expected ``|z|`` is 1.23 for K = 4, 0.95 for K = 8 and
  0.87 for K = 16 (infinite for K = 2: heavy-tailed with few members); compare it with the
  controls and with the reference's own value rather than with a fixed target;
- ``bank_<split>_shift``: the mean SIGNED ``z``, the direction: above 0 the model is more
  confident on the true labels than the Retrains are (it remembers), below 0 less (it
  over-forgets); about 0 for a Retrain. A model that is more confident everywhere (trained
  longer, on more data) shifts the controls too: it is the forget set's shift beyond the
  controls' that speaks of the forget set.

The outside test is ``|z| > t_{0.975, K-1} · sqrt(1 + 1/K)``, the interval with the same
floored σ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from natmu_lightning.metrics.evaluation import BankOutputs, EvaluationMetric, EvaluationOutputs

PROB_CLIP = 1e-6
"""The true class's probability is clipped to ``[PROB_CLIP, 1 - PROB_CLIP]`` before the logit."""
STD_FLOOR = 1e-3
"""σ below this (logit units) is taken as this in ``z`` and in the interval."""
SLICE_SIZE = 1000
"""Samples of the remaining and of the test set in the bank's control slices (at most)."""
BANK_SPLITS = ("forget", "remain", "test")
"""The splits the bank is compared on: the whole forget set, and slices of the other two."""
BANK_VALUES = ("outside", "divergence", "shift")
"""What is reported for each of :data:`BANK_SPLITS`: ``bank_<split>_<value>``."""
COVERAGE = 0.95
"""The central probability of the predictive interval."""


def logit_confidence(probs: Tensor, labels: Tensor) -> Tensor:
    """LiRA's per-example score: ``log(p / (1 - p))`` of the true class's probability ``p``,
    clipped to ``[PROB_CLIP, 1 - PROB_CLIP]``; ``1 - p`` is the other classes' summed probability.

    Args:
        probs: (N, C) softmax outputs.
        labels: (N,) true classes.

    Returns:
        (N,) float64 scores.

    Example:
        >>> import torch
        >>> scores = logit_confidence(torch.tensor([[0.75, 0.25], [0.5, 0.5]]), torch.tensor([0, 1]))
        >>> scores.round(decimals=6).tolist()  # log 3, log 1
        [1.098612, 0.0]
    """
    p = probs.double()
    index = labels.long().view(-1, 1)
    true = p.gather(1, index).squeeze(1).clamp(PROB_CLIP, 1 - PROB_CLIP)
    rest = p.scatter(1, index, 0.0).sum(1).clamp(PROB_CLIP, 1 - PROB_CLIP)
    return true.log() - rest.log()


# --------------------------------------------------------------------------- Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function, by its continued fraction.

    Example:
        >>> round(regularized_incomplete_beta(2.0, 3.0, 0.4), 12)  # 1 - 0.6**4 - 4 * 0.4 * 0.6**3
        0.5248
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """The Student t distribution's CDF with ``df`` degrees of freedom, through
    ``1 - I_{df/(df+t²)}(df/2, 1/2) / 2`` for ``t >= 0``.

    Example:
        >>> round(student_t_cdf(1.0, 1.0), 12)  # Cauchy: 1/2 + atan(1)/pi
        0.75
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of the Student t distribution with ``df`` degrees of freedom, by
    bisection on :func:`student_t_cdf` (to about 1e-12; no SciPy needed).

    Example:
        >>> round(student_t_quantile(0.975, 3), 6), round(student_t_quantile(0.975, 7), 6)
        (3.182446, 2.364624)
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie strictly between 0 and 1, got {q}")
    if q < 0.5:
        return -student_t_quantile(1.0 - q, df)
    if q == 0.5:
        return 0.0
    high = 1.0
    while student_t_cdf(high, df) < q:
        high *= 2.0
    low = 0.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < q:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def predictive_factor(members: int, coverage: float = COVERAGE) -> float:
    """``t_{(1+coverage)/2, K-1} · sqrt(1 + 1/K)``: the half-width of the central predictive
    interval for one more draw, in units of the members' sample standard deviation.

    Example:
        >>> round(predictive_factor(4), 4)  # 3.182446 * sqrt(1.25)
        3.5581
    """
    if members < 2:
        raise ValueError(f"a bank needs at least 2 members, got {members}")
    return student_t_quantile((1.0 + coverage) / 2.0, members - 1) * math.sqrt(1.0 + 1.0 / members)


# --------------------------------------------------------------------------- comparison
@dataclass(frozen=True)
class BankComparison:
    """Where a model's per-sample scores fall among the bank's.

    Attributes:
        score: (N,) the model's scores.
        mean: (N,) the members' mean score μ.
        std: (N,) the members' sample standard deviation σ (not floored).
        z: (N,) ``(score - μ) / max(σ, STD_FLOOR)``.
        outside: % of samples outside the predictive interval (``nan`` for no sample).
        divergence: ``mean |z|`` (``nan`` for no sample).
        shift: ``mean z`` (``nan`` for no sample).
    """

    score: Tensor
    mean: Tensor
    std: Tensor
    z: Tensor
    outside: float
    divergence: float
    shift: float


def compare_to_bank(score: Tensor, member_scores: Tensor, coverage: float = COVERAGE) -> BankComparison:
    """Compare a model's scores with the bank members' (see the module docstring).

    Args:
        score: (N,) the model's scores.
        member_scores: (K, N) the members' scores on the same samples, K >= 2.

    Example:
        >>> import torch
        >>> members = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # μ = (2, 1), σ = (2, 0)
        >>> result = compare_to_bank(torch.tensor([3.0, 1.0]), members)
        >>> result.z.tolist(), result.outside, result.divergence, result.shift
        ([0.5, 0.0], 0.0, 0.25, 0.25)
    """
    members = member_scores.double()
    if members.ndim != 2 or members.shape[0] < 2 or members.shape[1] != score.numel():
        raise ValueError(f"member scores must be (K >= 2, {score.numel()}), got {tuple(members.shape)}")
    mean = members.mean(0)
    std = members.std(0, unbiased=True)
    z = (score.double() - mean) / std.clamp_min(STD_FLOOR)
    if score.numel() == 0:
        return BankComparison(score.double(), mean, std, z, math.nan, math.nan, math.nan)
    limit = predictive_factor(members.shape[0], coverage)
    outside = 100.0 * float((z.abs() > limit).double().mean())
    return BankComparison(score.double(), mean, std, z, outside, float(z.abs().mean()), float(z.mean()))


def bank_comparisons(bank: BankOutputs) -> dict[str, BankComparison]:
    """:func:`compare_to_bank` of the model's scores on each of the bank's splits."""
    return {
        split: compare_to_bank(logit_confidence(bank.probs[split], bank.labels[split]), bank.member_scores[split])
        for split in BANK_SPLITS
        if split in bank.probs
    }


def bank_per_sample(bank: BankOutputs, split: str = "forget") -> dict[str, np.ndarray]:
    """``bank_<split>_score``, ``_mean``, ``_std`` and ``_z`` arrays (float64) for ``evaluation_outputs.npz``."""
    found = compare_to_bank(logit_confidence(bank.probs[split], bank.labels[split]), bank.member_scores[split])
    return {
        f"bank_{split}_score": found.score.numpy(),
        f"bank_{split}_mean": found.mean.numpy(),
        f"bank_{split}_std": found.std.numpy(),
        f"bank_{split}_z": found.z.numpy(),
    }


class ReferenceBankMetric(EvaluationMetric):
    """Where the model's per-example scores fall among a bank of Retrains (module docstring):
    ``bank_{forget,remain,test}_outside`` (% outside the 95% predictive interval; about 5 for
    a model drawn like a Retrain), ``bank_{forget,remain,test}_divergence`` (``mean |z|``) and
    ``bank_{forget,remain,test}_shift`` (``mean z``), logged ``bank/<split>_outside``,
    ``bank/<split>_divergence`` and ``bank/<split>_shift``. ``remain`` and ``test`` are
    fixed seeded slices of at most :data:`SLICE_SIZE` samples, the same for the members and
    the model. Reads :attr:`EvaluationOutputs.bank`; nothing without one.
    ``UnlearningEvaluator(reference_bank=...)`` adds it and fills the bank's outputs."""

    keys = {f"bank_{split}_{what}": f"bank/{split}_{what}" for split in BANK_SPLITS for what in BANK_VALUES}

    def compute(self, outputs: EvaluationOutputs, earlier: Mapping[str, float]) -> dict[str, float]:
        if outputs.bank is None:
            return {}
        values: dict[str, float] = {}
        for split, found in bank_comparisons(outputs.bank).items():
            values[f"bank_{split}_outside"] = found.outside
            values[f"bank_{split}_divergence"] = found.divergence
            values[f"bank_{split}_shift"] = found.shift
        return values
