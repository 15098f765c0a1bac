"""Accuracy and the per-sample features the attacks read (entropy, modified entropy, loss)."""

from __future__ import annotations

import torch
from torch import Tensor

from natmu_lightning.metrics.functional._checks import _LOG_TINY, _TINY, _check_labels, _check_probs


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


def sample_losses(probs: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of each row, ``-log p_y``, in float64, with ``p_y`` clamped to at least
    ``1e-30`` (a confident wrong prediction gives a large finite loss, not ``inf``).

    Args:
        probs: ``(N, C)`` probabilities.
        labels: ``(N,)`` integer class labels.

    Returns:
        ``(N,)`` float64 tensor.

    Example:
        >>> sample_losses(torch.tensor([[0.5, 0.5], [0.0, 1.0]]), torch.tensor([0, 0])).tolist()
        [0.6931471805599453, 69.07755278982137]
    """
    _check_probs(probs, "probs")
    labels = _check_labels(labels, probs, "labels", "probs")
    return -torch.log(probs.double().gather(1, labels[:, None]).clamp_min(_TINY)).flatten()
