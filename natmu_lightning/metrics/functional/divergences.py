"""Distances between output distributions: KL to a reference and Jensen-Shannon."""

from __future__ import annotations

import torch
from torch import Tensor

from natmu_lightning.metrics.functional._checks import _TINY, _check_pair


def kl_divergence_rows(p_ref: Tensor, p: Tensor) -> Tensor:
    """Per-row ``KL(p_ref || p)`` as a float64 ``(N,)`` tensor (see :func:`kl_divergence`)."""
    _check_pair(p_ref, p, "p_ref", "p")
    a = p_ref.detach().to(torch.float64).clamp_min(0.0)
    q = p.detach().to(device=a.device, dtype=torch.float64).clamp_min(_TINY)
    return (torch.special.xlogy(a, a) - a * torch.log(q)).sum(dim=1)


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
    return _mean_of_rows(kl_divergence_rows(p_ref, p))


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
    return _mean_of_rows(js_divergence_rows(p, q))


def _mean_of_rows(per_row: Tensor) -> float:
    """The mean of a per-row divergence; ``nan`` for no rows."""
    return float(per_row.mean()) if per_row.numel() else float("nan")
