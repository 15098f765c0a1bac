"""The NatMU paper's entropy MIA: a balanced logistic regression on the softmax entropy, solved exactly."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from natmu_lightning.metrics.functional._checks import _check_probs, _check_same_classes
from natmu_lightning.metrics.functional.features import entropy


def _logistic_objective(w: Tensor, b: Tensor, x: Tensor, y: Tensor, cs: Tensor) -> Tensor:
    z = w * x + b
    # log(1 + e^z) - y z, stable for any z
    return 0.5 * w * w + (cs * (torch.logaddexp(torch.zeros_like(z), z) - y * z)).sum()


def fit_balanced_logistic_1d(x: Tensor, y: Tensor, C: float = 1.0, *, max_iter: int = 200) -> tuple[float, float]:
    """Fit scikit-learn's ``LogisticRegression(class_weight="balanced")`` on 1 feature.

    Minimises, in float64 and by Newton's method with a step-halving line search,
    the strictly convex objective

        ``0.5 * w**2 + C * sum_i s_i * logloss(y_i, w * x_i + b)``

    with balanced sample weights ``s_i = n / (2 * n_{y_i})``; the intercept ``b`` is
    not penalised. This is exactly the problem scikit-learn's default lbfgs solver
    solves: scikit-learn (1.9, ``_logistic.py`` / ``_linear_loss.py``) minimises
    ``1/S * sum_i s_i logloss_i + 1/(2 C S) * w**2`` with ``S = sum_i s_i`` (here
    ``S = n``), i.e. the objective above divided by the constant ``C * S``, so the
    minimiser is the same. The solution here is converged to machine precision,
    whereas lbfgs stops at its ``tol=1e-4`` on the scaled gradient; the two agree to
    about that tolerance.

    Internally the feature is centred (an exact reparametrisation, since the
    intercept is free) and the samples are put in a canonical order, so the result
    does not depend on the order of the rows.

    Args:
        x: ``(n,)`` feature values (finite).
        y: ``(n,)`` class labels, 1 for the positive class ("member") and 0 for the
            negative one; both must occur.
        C: inverse regularisation strength (scikit-learn's ``C``), ``> 0``.
        max_iter: Newton iteration guard (a ``RuntimeWarning`` is issued if hit).

    Returns:
        ``(w, b)``: scikit-learn's ``coef_[0, 0]`` and ``intercept_[0]``. A sample is
        predicted positive where ``w * x + b > 0``.

    Example:
        >>> x = torch.tensor([0.1, 0.2, 0.3, 1.0, 1.2, 1.1, 0.9], dtype=torch.float64)
        >>> y = torch.tensor([1, 1, 1, 0, 0, 0, 0])
        >>> w, b = fit_balanced_logistic_1d(x, y)
        >>> w < 0 < b
        True
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.dim() != 1:
        raise ValueError(f"x must be a 1-D (n,) tensor, got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a 1-D tensor with as many entries as x ({x.shape[0]}), got shape {tuple(y.shape)}")
    if not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a positive finite number, got {C!r}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    yv = y.detach().to("cpu")
    if not bool(((yv == 0) | (yv == 1)).all()):
        raise ValueError("y must contain only 0 (non-member) and 1 (member)")
    yv = yv.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains non-finite values")
    n = x.shape[0]
    n1 = int(yv.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        raise ValueError(
            f"y must contain both classes, got {n1} positive (member) and {n0} negative (non-member) samples"
        )

    # Canonical order (by x, ties by y) so that the sums, hence the result, do not
    # depend on the order of the rows.
    order = torch.argsort(yv, stable=True)
    x, yv = x[order], yv[order]
    order = torch.argsort(x, stable=True)
    x, yv = x[order], yv[order]

    # A constant feature: (w, b) = (0, 0) is the exact optimum (the balanced weights
    # make the intercept gradient vanish at b = 0, and the w gradient is x times it).
    if bool(x[0] == x[-1]):
        return 0.0, 0.0

    # balanced class weights, exactly as sklearn.utils.compute_class_weight
    # (float64 tensors: torch.where on two Python scalars would give float32)
    s_member = torch.tensor(n / (2.0 * n1), dtype=torch.float64)
    s_nonmember = torch.tensor(n / (2.0 * n0), dtype=torch.float64)
    cs = C * torch.where(yv == 1, s_member, s_nonmember)
    mu = x.mean()
    xc = x - mu  # fit w * xc + c, then b = c - w * mu

    w = torch.zeros((), dtype=torch.float64)
    c = torch.zeros((), dtype=torch.float64)
    f = _logistic_objective(w, c, xc, yv, cs)
    eps = torch.finfo(torch.float64).eps
    converged = False
    for _iteration in range(max_iter):
        z = w * xc + c
        sig = torch.sigmoid(z)
        r = cs * (sig - yv)
        gw = w + (r * xc).sum()
        gc = r.sum()
        h = cs * sig * (1.0 - sig)
        hww = 1.0 + (h * xc * xc).sum()
        hwc = (h * xc).sum()
        hcc = h.sum()
        det = hww * hcc - hwc * hwc
        if bool(det > 0) and bool(torch.isfinite(det)):
            dw = -(hcc * gw - hwc * gc) / det
            dc = -(hww * gc - hwc * gw) / det
        else:  # saturated sigmoids: fall back to steepest descent
            dw, dc = -gw, -gc
        slope = gw * dw + gc * dc  # < 0 for a descent direction
        if not bool(slope < 0):
            converged = True  # zero gradient (or no descent possible in float64)
            break
        # Armijo step halving; the small slack absorbs float64 rounding of f near
        # the optimum, where the decrease is below the resolution of f.
        slack = 16 * eps * max(1.0, float(f.abs()))
        t = 1.0
        accepted = False
        for _halving in range(80):
            w_new, c_new = w + t * dw, c + t * dc
            f_new = _logistic_objective(w_new, c_new, xc, yv, cs)
            if bool(torch.isfinite(f_new)) and float(f_new) <= float(f) + 1e-4 * t * float(slope) + slack:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            converged = True  # no representable improvement left
            break
        step = max(abs(float(t * dw)) / (1.0 + abs(float(w))), abs(float(t * dc)) / (1.0 + abs(float(c))))
        w, c, f = w_new, c_new, f_new
        # Newton converges quadratically: once a step is this small, the point it
        # lands on is exact to rounding (smaller steps only cycle in the last bits).
        if step <= 1e-12:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"fit_balanced_logistic_1d: Newton's method did not converge in {max_iter} iterations",
            RuntimeWarning,
            stacklevel=2,
        )
    return float(w), float(c - w * mu)


MIA_ENTROPY_C = 2.0
"""The binary ``C`` equal to the authors' two-class multinomial logistic regression.

The NatMU authors (``sample-wise/utils/mia.py`` of https://github.com/ZhengbaoHe/NatMU,
after SCRUB's notebooks) fit ``LogisticRegression(class_weight="balanced",
multi_class="multinomial")`` with the default ``C = 1``. With two classes the multinomial
model has one coefficient per class, ``w_0`` and ``w_1``, each penalised by
``(w_0**2 + w_1**2) / (2 C)``; its decision depends only on ``d = w_1 - w_0``, and for a given
``d`` the penalty is smallest at ``w_1 = -w_0 = d / 2``, where it is ``d**2 / (4 C) =
d**2 / (2 (2 C))``. The intercepts are free and the data term is the binary log-loss of
``d x + (b_1 - b_0)``. So the fit is the binary ``LogisticRegression(C=2 C,
class_weight="balanced")``: C = 2.
"""


def mia_entropy(member_probs: Tensor, nonmember_probs: Tensor, target_probs: Tensor) -> float:
    """The NatMU paper's entropy membership-inference attack ("MIA"), in percent.

    Feature: the Shannon entropy (float64) of each softmax row. A logistic
    regression with balanced class weights is fit on members (label 1) against
    non-members (label 0), exactly as the authors' two-class multinomial fit: the
    binary scikit-learn ``LogisticRegression(C=2.0, class_weight="balanced")`` (L2 on
    the coefficient, free intercept; :data:`MIA_ENTROPY_C` derives the C,
    :func:`fit_balanced_logistic_1d` solves it). The result is the percentage of target
    rows predicted member (``w * x + b > 0``). In the paper members are D_r,
    non-members D_t and the target D_f; the value to match is Retrain's.

    Args:
        member_probs: ``(N_m, C)`` probabilities of members (e.g. D_r), ``N_m >= 1``.
        nonmember_probs: ``(N_n, C)`` probabilities of non-members (e.g. D_t),
            ``N_n >= 1``.
        target_probs: ``(N_t, C)`` probabilities of the set to score (e.g. D_f).

    Returns:
        ``100 * fraction of target rows predicted member``; ``nan`` if ``N_t == 0``.

    Example:
        >>> confident = torch.tensor([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03]])
        >>> unsure = torch.tensor([[0.6, 0.4], [0.55, 0.45], [0.5, 0.5]])
        >>> mia_entropy(confident, unsure, torch.cat([confident, unsure[:1]]))
        75.0
    """
    return mia_entropy_rates(member_probs, nonmember_probs, target_probs)[0]


def mia_entropy_rates(member_probs: Tensor, nonmember_probs: Tensor, *targets: Tensor) -> tuple[float, ...]:
    """:func:`mia_entropy` of several target sets with one fit of the attack.

    Example:
        >>> confident = torch.tensor([[0.99, 0.01], [0.98, 0.02]])
        >>> unsure = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
        >>> mia_entropy_rates(confident, unsure, confident, unsure)
        (100.0, 0.0)
    """
    _check_probs(member_probs, "member_probs", allow_empty=False)
    _check_probs(nonmember_probs, "nonmember_probs", allow_empty=False)
    for target in targets:
        _check_probs(target, "target_probs")
    _check_same_classes(
        ("member_probs", member_probs),
        ("nonmember_probs", nonmember_probs),
        *(("target_probs", target) for target in targets),
    )
    x_m = entropy(member_probs.detach().to("cpu", torch.float64))
    x_n = entropy(nonmember_probs.detach().to("cpu", torch.float64))
    x_ts = [entropy(target.detach().to("cpu", torch.float64)) for target in targets]
    for name, feat in (("member_probs", x_m), ("nonmember_probs", x_n), *(("target_probs", x_t) for x_t in x_ts)):
        if not bool(torch.isfinite(feat).all()):
            raise ValueError(f"{name} gives non-finite entropies (NaN or inf in the input?)")
    return entropy_attack_rates(x_m, x_n, *x_ts)


def entropy_attack_rates(
    member_entropy: Tensor, nonmember_entropy: Tensor, *target_entropies: Tensor
) -> tuple[float, ...]:
    """The attack of :func:`mia_entropy_rates` on entropies already computed (float64, finite),
    as :class:`~natmu_lightning.metrics.EntropyMIA` keeps them: one fit, then the percentage of
    each target set predicted member (``nan`` for an empty one).

    Example:
        >>> members = torch.tensor([0.01, 0.02], dtype=torch.float64)
        >>> nonmembers = torch.tensor([0.6, 0.69], dtype=torch.float64)
        >>> entropy_attack_rates(members, nonmembers, torch.tensor([0.0, 0.5, 0.68], dtype=torch.float64))
        (33.333333333333336,)
    """
    if all(x_t.numel() == 0 for x_t in target_entropies):
        return tuple(float("nan") for _ in target_entropies)
    x = torch.cat([member_entropy, nonmember_entropy])
    y = torch.cat([torch.ones_like(member_entropy), torch.zeros_like(nonmember_entropy)])
    w, b = fit_balanced_logistic_1d(x, y, C=MIA_ENTROPY_C)
    # same arithmetic as sklearn's decision_function: x @ coef + intercept
    return tuple(
        100.0 * int(((x_t * w + b) > 0).sum()) / x_t.numel() if x_t.numel() else float("nan")
        for x_t in target_entropies
    )
