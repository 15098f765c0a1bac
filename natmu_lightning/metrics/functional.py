"""Pure functions that judge an unlearned model (docs/design.md section 3).

Everything here works on plain tensors: no Lightning, no state. Probabilities are
``(N, C)`` float tensors of softmax outputs, labels are ``(N,)`` integer tensors.
Accuracies and attack scores are in percent (0..100).

Three membership-inference protocols live here, each under its own name, because
the literature reports different quantities under the one word "MIA":

* :func:`mia_entropy`: the NatMU paper's protocol, and the one meant by "MIA" in
  this package (balanced logistic regression on the softmax entropy, members =
  D_r, non-members = D_t, reported: % of D_f predicted *member*; the target is
  Retrain's value, not 0).
* :func:`svc_mia`: the SalUn / "Model sparsity can simplify machine unlearning"
  shadow-SVC protocol (reported: % of the target set predicted *non-member*).
* :func:`loss_mia_cv`: a loss-based attack separating D_f from D_t, scored by
  cross-validated accuracy (50 is ideal).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "accuracy",
    "entropy",
    "m_entropy",
    "fit_balanced_logistic_1d",
    "MIA_ENTROPY_C",
    "mia_entropy",
    "kl_divergence",
    "kl_divergence_rows",
    "js_divergence",
    "js_divergence_rows",
    "avg_gap",
    "tug_of_war",
    "svc_mia",
    "loss_mia_cv",
]

#: Smallest probability used inside a logarithm (as in the reference attack code).
_TINY = 1e-30
_LOG_TINY = math.log(_TINY)

#: The keys averaged by :func:`avg_gap` (TA, RA, FA, MIA).
AVG_GAP_KEYS = ("test_acc", "retain_acc", "forget_acc", "mia_entropy")
#: The accuracies multiplied by :func:`tug_of_war`.
TUG_OF_WAR_KEYS = ("forget_acc", "retain_acc", "test_acc")

_SVC_FEATURES = ("confidence", "entropy", "m_entropy")


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _check_probs(probs: Tensor, name: str, *, allow_empty: bool = True) -> Tensor:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (N, C) tensor of probabilities, got shape "
            f"{tuple(probs.shape)}"
        )
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {probs.dtype}")
    if probs.shape[1] == 0:
        raise ValueError(f"{name} must have at least one class column, got shape {tuple(probs.shape)}")
    if not allow_empty and probs.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one row, got shape {tuple(probs.shape)}")
    return probs


def _check_labels(labels: Tensor, probs: Tensor, name: str, probs_name: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be a 1-D (N,) tensor, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(
            f"{name} has {labels.shape[0]} entries but {probs_name} has {probs.shape[0]} rows"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(
            f"{name} must lie in [0, {probs.shape[1]}) (the columns of {probs_name}), got "
            f"values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.to(device=probs.device, dtype=torch.long)


def _check_same_classes(*named: tuple[str, Tensor]) -> None:
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.shape[1] != first.shape[1]:
            raise ValueError(
                f"{name} has {t.shape[1]} classes but {first_name} has {first.shape[1]}"
            )


def _check_pair(p: Tensor, q: Tensor, p_name: str, q_name: str) -> None:
    _check_probs(p, p_name)
    _check_probs(q, q_name)
    if p.shape != q.shape:
        raise ValueError(
            f"{p_name} and {q_name} must have the same shape, got {tuple(p.shape)} and "
            f"{tuple(q.shape)}"
        )


# --------------------------------------------------------------------------- #
# accuracy and per-sample features
# --------------------------------------------------------------------------- #
def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent.

    Args:
        probs: ``(N, C)`` probabilities (or any scores: only the argmax is used).
        labels: ``(N,)`` integer class labels.

    Returns:
        ``100 * mean(argmax(probs) == labels)``; ``nan`` when ``N == 0``.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        >>> accuracy(p, torch.tensor([0, 1, 1, 1]))
        75.0
        >>> accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long))
        nan
    """
    _check_probs(probs, "probs")
    labels = _check_labels(labels, probs, "labels", "probs")
    n = probs.shape[0]
    if n == 0:
        return float("nan")
    correct = int((probs.argmax(dim=1) == labels).sum())
    return 100.0 * correct / n


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy of each row, in nats, with ``0 log 0 = 0``.

    Args:
        probs: ``(N, C)`` probabilities.

    Returns:
        ``(N,)`` tensor ``-sum_c p_c log p_c``, in the dtype of ``probs``.

    Example:
        >>> entropy(torch.tensor([[1.0, 0.0], [0.5, 0.5]])).tolist()
        [0.0, 0.6931471824645996]
    """
    _check_probs(probs, "probs")
    p = probs.clamp_min(0.0)
    return 0.0 - torch.special.xlogy(p, p).sum(dim=1)  # 0.0 - x: no -0.0


def m_entropy(probs: Tensor, labels: Tensor) -> Tensor:
    """Modified entropy (Song & Mittal, 2021) of each row.

    ``-(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c)``, with the logarithms'
    arguments clamped to at least ``1e-30`` (so a confident wrong prediction gives
    a large finite value, not ``inf``). Note that several public implementations
    get this wrong (for instance using ``log p_c`` instead of ``log(1 - p_c)`` or
    indexing ``p[:, labels]``); this is the formula of docs/design.md section 3.

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` integer class labels.

    Returns:
        ``(N,)`` tensor in the dtype of ``probs``.

    Example:
        >>> p = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
        >>> round(float(m_entropy(p, torch.tensor([0]))), 6)  # 0.5 ln2 + 0.5 ln(4/3)
        0.490415
        >>> float(m_entropy(torch.tensor([[1.0, 0.0]]), torch.tensor([0])))
        0.0
    """
    _check_probs(probs, "probs")
    labels = _check_labels(labels, probs, "labels", "probs")
    p = probs.clamp(0.0, 1.0)
    log_p = torch.log(p.clamp_min(_TINY))
    log_1mp = torch.log1p(-p).clamp_min(_LOG_TINY)
    is_y = torch.nn.functional.one_hot(labels, probs.shape[1]).bool()
    other = torch.where(is_y, torch.zeros_like(p), p * log_1mp).sum(dim=1)
    p_y = p.gather(1, labels[:, None]).squeeze(1)
    log_p_y = log_p.gather(1, labels[:, None]).squeeze(1)
    return 0.0 - ((1.0 - p_y) * log_p_y + other)  # 0.0 - x: no -0.0


# --------------------------------------------------------------------------- #
# the paper's entropy MIA: balanced logistic regression, solved exactly
# --------------------------------------------------------------------------- #
def _logistic_objective(w: Tensor, b: Tensor, x: Tensor, y: Tensor, cs: Tensor) -> Tensor:
    z = w * x + b
    # log(1 + e^z) - y z, stable for any z
    return 0.5 * w * w + (cs * (torch.logaddexp(torch.zeros_like(z), z) - y * z)).sum()


def fit_balanced_logistic_1d(
    x: Tensor, y: Tensor, C: float = 1.0, *, max_iter: int = 200
) -> tuple[float, float]:
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
        raise ValueError(
            f"y must be a 1-D tensor with as many entries as x ({x.shape[0]}), got shape "
            f"{tuple(y.shape)}"
        )
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
            f"y must contain both classes, got {n1} positive (member) and {n0} negative "
            "(non-member) samples"
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
            f"fit_balanced_logistic_1d: Newton's method did not converge in {max_iter} "
            "iterations",
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
    _check_probs(member_probs, "member_probs", allow_empty=False)
    _check_probs(nonmember_probs, "nonmember_probs", allow_empty=False)
    _check_probs(target_probs, "target_probs")
    _check_same_classes(
        ("member_probs", member_probs),
        ("nonmember_probs", nonmember_probs),
        ("target_probs", target_probs),
    )
    x_m = entropy(member_probs.detach().to("cpu", torch.float64))
    x_n = entropy(nonmember_probs.detach().to("cpu", torch.float64))
    x_t = entropy(target_probs.detach().to("cpu", torch.float64))
    for name, feat in (("member_probs", x_m), ("nonmember_probs", x_n), ("target_probs", x_t)):
        if not bool(torch.isfinite(feat).all()):
            raise ValueError(f"{name} gives non-finite entropies (NaN or inf in the input?)")
    if x_t.numel() == 0:
        return float("nan")
    x = torch.cat([x_m, x_n])
    y = torch.cat([torch.ones_like(x_m), torch.zeros_like(x_n)])
    w, b = fit_balanced_logistic_1d(x, y, C=MIA_ENTROPY_C)
    # same arithmetic as sklearn's decision_function: x @ coef + intercept
    predicted_member = (x_t * w + b) > 0
    return 100.0 * int(predicted_member.sum()) / x_t.numel()


# --------------------------------------------------------------------------- #
# distances between output distributions
# --------------------------------------------------------------------------- #
def kl_divergence(p_ref: Tensor, p: Tensor) -> float:
    """Mean over rows of ``KL(p_ref || p) = sum_c p_ref log(p_ref / p)`` (nats).

    Terms with ``p_ref = 0`` are 0; ``p`` is clamped to at least ``1e-30`` so a zero
    where ``p_ref > 0`` gives a large finite value. Computed in float64. The
    paper's "naturalness" KL_avg is ``kl_divergence(p_retrain, p_unlearned)`` on D_f.

    Args:
        p_ref: ``(N, C)`` reference probabilities (e.g. Retrain's outputs).
        p: ``(N, C)`` probabilities to compare (e.g. the unlearned model's).

    Returns:
        The mean KL divergence; ``nan`` when ``N == 0``.

    Example:
        >>> kl_divergence(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]))
        0.0
        >>> round(kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])), 6)
        0.693147
    """
    per_row = kl_divergence_rows(p_ref, p)
    return float(per_row.mean()) if per_row.numel() else float("nan")


def kl_divergence_rows(p_ref: Tensor, p: Tensor) -> Tensor:
    """Per-row ``KL(p_ref || p)`` as a float64 ``(N,)`` tensor (see :func:`kl_divergence`)."""
    _check_pair(p_ref, p, "p_ref", "p")
    a = p_ref.detach().to(torch.float64).clamp_min(0.0)
    q = p.detach().to(device=a.device, dtype=torch.float64).clamp_min(_TINY)
    return (torch.special.xlogy(a, a) - a * torch.log(q)).sum(dim=1)


def js_divergence(p: Tensor, q: Tensor) -> float:
    """Mean over rows of the true Jensen-Shannon divergence (nats, at most ln 2).

    ``JS(p, q) = 0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2``, with
    ``0 log 0 = 0``. (Not the KL of one side against the mixture, nor a symmetrised
    KL, which some public "JS" implementations compute.) Computed in float64.

    Args:
        p: ``(N, C)`` probabilities.
        q: ``(N, C)`` probabilities.

    Returns:
        The mean JS divergence; ``nan`` when ``N == 0``.

    Example:
        >>> same = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
        >>> js_divergence(same, same)
        0.0
        >>> round(js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])), 4)
        0.6931
    """
    per_row = js_divergence_rows(p, q)
    return float(per_row.mean()) if per_row.numel() else float("nan")


def js_divergence_rows(p: Tensor, q: Tensor) -> Tensor:
    """Per-row Jensen-Shannon divergence as a float64 ``(N,)`` tensor (see :func:`js_divergence`)."""
    _check_pair(p, q, "p", "q")
    a = p.detach().to(torch.float64).clamp_min(0.0)
    b = q.detach().to(device=a.device, dtype=torch.float64).clamp_min(0.0)
    m = 0.5 * (a + b)
    # xlogy(a, m) is 0 where a == 0, and m > 0 wherever a > 0 or b > 0.
    kl_am = (torch.special.xlogy(a, a) - torch.special.xlogy(a, m)).sum(dim=1)
    kl_bm = (torch.special.xlogy(b, b) - torch.special.xlogy(b, m)).sum(dim=1)
    return (0.5 * kl_am + 0.5 * kl_bm).clamp_min(0.0)


# --------------------------------------------------------------------------- #
# summaries against Retrain
# --------------------------------------------------------------------------- #
def _get(d: Mapping, key: str, name: str) -> float:
    if key not in d:
        raise ValueError(f"{name} is missing the key {key!r} (has {sorted(map(str, d))})")
    return float(d[key])


def avg_gap(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = AVG_GAP_KEYS,
) -> float:
    """Avg. Gap: mean of ``|metrics[k] - reference[k]|`` over ``keys``, in points.

    With the default keys this is the paper's mean over (TA, RA, FA, MIA) of the
    distance to Retrain (``reference``).

    Args:
        metrics: the method's values (percent).
        reference: Retrain's values (percent).
        keys: which entries to average.

    Returns:
        The average absolute gap.

    Raises:
        ValueError: if a key is missing from either mapping, or ``keys`` is empty.

    Example:
        >>> rt = {"test_acc": 93.34, "retain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88}
        >>> avg_gap(rt, rt)
        0.0
        >>> m = {"test_acc": 92.34, "retain_acc": 99.94, "forget_acc": 97.08, "mia_entropy": 83.88}
        >>> round(avg_gap(m, rt), 6)
        1.0
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("keys must not be empty")
    gaps = [abs(_get(metrics, k, "metrics") - _get(reference, k, "reference")) for k in keys]
    return sum(gaps) / len(gaps)


def tug_of_war(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = TUG_OF_WAR_KEYS,
) -> float:
    """Tug-of-war score: ``prod_k (1 - |metrics[k] - reference[k]| / 100)``.

    Over forget, retain and test accuracy (percent) by default; 1.0 means identical
    to the reference (Retrain).

    Args:
        metrics: the method's accuracies (percent).
        reference: Retrain's accuracies (percent).
        keys: which entries to multiply.

    Raises:
        ValueError: if a key is missing from either mapping, or ``keys`` is empty.

    Example:
        >>> rt = {"forget_acc": 90.0, "retain_acc": 100.0, "test_acc": 90.0}
        >>> tug_of_war(rt, rt)
        1.0
        >>> round(tug_of_war({"forget_acc": 80.0, "retain_acc": 90.0, "test_acc": 90.0}, rt), 6)
        0.81
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("keys must not be empty")
    out = 1.0
    for k in keys:
        out *= 1.0 - abs(_get(metrics, k, "metrics") - _get(reference, k, "reference")) / 100.0
    return out


# --------------------------------------------------------------------------- #
# other attack protocols (each under its own name)
# --------------------------------------------------------------------------- #
def _svc_feature(probs: Tensor, labels: Tensor, feature: str) -> Tensor:
    p = probs.detach().to("cpu", torch.float64)
    y = labels.to("cpu")
    if feature == "confidence":
        return p.gather(1, y[:, None]).squeeze(1)
    if feature == "entropy":
        return entropy(p)
    return m_entropy(p, y)


def svc_mia(
    shadow_train_probs: Tensor,
    shadow_train_labels: Tensor,
    shadow_test_probs: Tensor,
    shadow_test_labels: Tensor,
    target_probs: Tensor,
    target_labels: Tensor,
    feature: str,
) -> float:
    """The SalUn-family shadow-SVC attack ("SVC protocol"), in percent non-member.

    Follows ``SVC_MIA`` / ``SVC_fit_predict`` of the "Model sparsity can simplify
    machine unlearning" and SalUn code (``evaluation/SVC_MIA.py``), as used for
    their "MIA-efficacy" (``SVC_MIA_forget_efficacy``: shadow train = the first
    ``len(D_t)`` samples of D_r, shadow test = D_t, target_train = None,
    target_test = D_f):

    * one scalar feature per sample: ``"confidence"`` (``p_y``), ``"entropy"`` or
      ``"m_entropy"`` (the correct formula of :func:`m_entropy`; the reference code's
      m-entropy is buggy), computed here in float64;
    * the two shadow sets are truncated to the smaller one's size by keeping their
      first rows (the reference takes ``Subset(retain, range(len(test)))``);
    * ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` is fit on shadow train
      (member, label 1) against shadow test (non-member, label 0);
    * the result is ``100 * (1 - mean(predict(target)))``: the percentage of target
      rows predicted NON-member. This is a different quantity from
      :func:`mia_entropy` ("% predicted member") and must not be reported as "MIA".

    Args:
        shadow_train_probs: ``(N_a, C)`` probabilities of known members.
        shadow_train_labels: ``(N_a,)`` their labels.
        shadow_test_probs: ``(N_b, C)`` probabilities of known non-members.
        shadow_test_labels: ``(N_b,)`` their labels.
        target_probs: ``(N_t, C)`` probabilities of the set to score (e.g. D_f).
        target_labels: ``(N_t,)`` their labels.
        feature: ``"confidence"``, ``"entropy"`` or ``"m_entropy"``.

    Returns:
        ``100 * fraction of target rows predicted non-member``; ``nan`` if
        ``N_t == 0``.

    Example:
        >>> members = torch.tensor([[0.99, 0.01]] * 4 + [[0.98, 0.02]] * 4)
        >>> nonmembers = torch.tensor([[0.55, 0.45]] * 4 + [[0.6, 0.4]] * 4)
        >>> zeros = torch.zeros(8, dtype=torch.long)
        >>> svc_mia(members, zeros, nonmembers, zeros, nonmembers[:2], zeros[:2], "confidence")
        100.0
    """
    if feature not in _SVC_FEATURES:
        raise ValueError(f"feature must be one of {_SVC_FEATURES}, got {feature!r}")
    _check_probs(shadow_train_probs, "shadow_train_probs", allow_empty=False)
    _check_probs(shadow_test_probs, "shadow_test_probs", allow_empty=False)
    _check_probs(target_probs, "target_probs")
    _check_same_classes(
        ("shadow_train_probs", shadow_train_probs),
        ("shadow_test_probs", shadow_test_probs),
        ("target_probs", target_probs),
    )
    shadow_train_labels = _check_labels(
        shadow_train_labels, shadow_train_probs, "shadow_train_labels", "shadow_train_probs"
    )
    shadow_test_labels = _check_labels(
        shadow_test_labels, shadow_test_probs, "shadow_test_labels", "shadow_test_probs"
    )
    target_labels = _check_labels(target_labels, target_probs, "target_labels", "target_probs")
    if target_probs.shape[0] == 0:
        return float("nan")

    from sklearn.svm import SVC  # the protocol *is* this SVC

    n = min(shadow_train_probs.shape[0], shadow_test_probs.shape[0])
    f_in = _svc_feature(shadow_train_probs[:n], shadow_train_labels[:n], feature)
    f_out = _svc_feature(shadow_test_probs[:n], shadow_test_labels[:n], feature)
    f_t = _svc_feature(target_probs, target_labels, feature)
    for name, feat in (("shadow_train_probs", f_in), ("shadow_test_probs", f_out), ("target_probs", f_t)):
        if not bool(torch.isfinite(feat).all()):
            raise ValueError(f"{name} gives non-finite {feature} features")
    import numpy as np

    x = torch.cat([f_in, f_out]).numpy().reshape(-1, 1)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(f_t.numpy().reshape(-1, 1))
    return 100.0 * (1.0 - float(pred.mean()))


def loss_mia_cv(
    forget_losses: Tensor, test_losses: Tensor, n_splits: int = 5, seed: int = 0
) -> float:
    """Loss-based attack separating D_f from D_t, scored by cross-validated accuracy.

    The larger of the two sets is subsampled without replacement (numpy
    ``default_rng(seed)``) to the size of the smaller one; then
    ``cross_val_score(LogisticRegression(), X, y, cv=StratifiedKFold(n_splits,
    shuffle=True, random_state=seed), scoring="accuracy")`` with ``X`` the per-sample
    losses and ``y`` = 1 for forget, 0 for test. 50 is ideal (the attacker cannot
    tell forgotten samples from unseen ones); this is not the paper's "MIA".

    Args:
        forget_losses: ``(N_f,)`` per-sample losses on D_f.
        test_losses: ``(N_t,)`` per-sample losses on D_t.
        n_splits: folds, at least 2 and at most ``min(N_f, N_t)``.
        seed: seed of the subsampling and of the fold shuffling.

    Returns:
        Mean cross-validated accuracy in percent.

    Example:
        >>> low = torch.linspace(0.0, 0.1, 20)
        >>> high = torch.linspace(5.0, 6.0, 30)
        >>> loss_mia_cv(low, high)
        100.0
    """
    for name, t in (("forget_losses", forget_losses), ("test_losses", test_losses)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1:
            raise ValueError(f"{name} must be a 1-D (N,) tensor, got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t.detach().to(torch.float64)).all()):
            raise ValueError(f"{name} contains non-finite values")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    n = min(forget_losses.shape[0], test_losses.shape[0])
    if n < n_splits:
        raise ValueError(
            f"n_splits={n_splits} needs at least {n_splits} samples in each set, got "
            f"{forget_losses.shape[0]} forget_losses and {test_losses.shape[0]} test_losses"
        )

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    f = forget_losses.detach().to("cpu", torch.float64).numpy()
    t = test_losses.detach().to("cpu", torch.float64).numpy()
    if f.shape[0] > n:
        f = f[rng.choice(f.shape[0], size=n, replace=False)]
    if t.shape[0] > n:
        t = t[rng.choice(t.shape[0], size=n, replace=False)]
    x = np.concatenate([f, t]).reshape(-1, 1)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return 100.0 * float(scores.mean())
