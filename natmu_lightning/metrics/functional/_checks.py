"""Input checks shared by the metric functions (clear errors before any work)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Smallest probability used inside a logarithm (as in the reference attack code).
_TINY = 1e-30
_LOG_TINY = math.log(_TINY)


def _check_probs(probs: Tensor, name: str, *, allow_empty: bool = True) -> Tensor:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (N, C) tensor of probabilities, got shape {tuple(probs.shape)}")
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
        raise ValueError(f"{name} has {labels.shape[0]} entries but {probs_name} has {probs.shape[0]} rows")
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
            raise ValueError(f"{name} has {t.shape[1]} classes but {first_name} has {first.shape[1]}")


def _check_pair(p: Tensor, q: Tensor, p_name: str, q_name: str) -> None:
    _check_probs(p, p_name)
    _check_probs(q, q_name)
    if p.shape != q.shape:
        raise ValueError(f"{p_name} and {q_name} must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
